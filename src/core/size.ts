/**
 * Human-readable sizes on the wire (`"1GB"`, `"512MB"`, `"2G"`), as the
 * hypeman API writes memory and disk sizes. Units are binary, as in the Go
 * `datasize` package hypeman uses: `1KB` = 1024 bytes, `1GB` = 1024³.
 */
import { VesselError } from './errors.js';

const POWERS: Record<string, number> = { '': 0, k: 1, m: 2, g: 3, t: 4, p: 5 };

const SIZE = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i;

/** Parse `"1GB"`, `"512 MB"`, `"2G"`, `"1.5GiB"`, `"4096"` (bytes) into bytes. */
export function parseSize(input: string, field: string): number {
  const m = SIZE.exec(input.trim());
  const unit = m?.[2]?.toLowerCase() ?? '';
  if (!m || (m[3] === undefined && unit === '' && /\./.test(m[1]!))) {
    throw new VesselError(
      'invalid_argument',
      `${field} must be a size such as "512MB", "1GB" or "10G" (got "${input}")`,
      { details: { field, value: input } },
    );
  }
  return Math.round(Number(m[1]) * 1024 ** POWERS[unit]!);
}

/** Bytes as the largest whole unit: `1073741824` → `"1GB"`, `536870912` → `"512MB"`. */
export function formatSize(bytes: number): string {
  for (const [unit, power] of [
    ['TB', 4],
    ['GB', 3],
    ['MB', 2],
    ['KB', 1],
  ] as const) {
    const n = bytes / 1024 ** power;
    if (bytes > 0 && Number.isInteger(n)) return `${n}${unit}`;
  }
  return `${bytes}B`;
}
