/**
 * Durations on the wire. The hypeman API writes them the Go way (`"120s"`,
 * `"5m"`, `"1h30m"`, `"500ms"`); Vessel's own clients sent plain numbers of
 * seconds. Both parse here, once, with errors that name the field.
 */
import { VesselError } from './errors.js';

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3, // U+00B5 micro sign
  μs: 1e-3, // U+03BC Greek mu
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** One `<number><unit>` term: `1.5h`, `.5s`, `30s`. */
const TERM = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;

function invalid(field: string, input: string, why: string): VesselError {
  return new VesselError(
    'invalid_argument',
    `${field} must be a duration such as "30s", "5m", "1h30m" or "500ms" (got "${input}": ${why})`,
    { details: { field, value: input } },
  );
}

/**
 * Parse a Go duration string (`time.ParseDuration` grammar: an optional sign,
 * then one or more decimal numbers each with a unit `ns`, `us`/`µs`, `ms`,
 * `s`, `m`, `h`; a bare `0` is zero) into milliseconds. Throws
 * `invalid_argument` naming `field`.
 */
export function parseGoDuration(input: string, field: string): number {
  let s = input.trim();
  if (s === '') throw invalid(field, input, 'empty');
  let sign = 1;
  if (s[0] === '-' || s[0] === '+') {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') throw invalid(field, input, 'no number');
  let total = 0;
  while (s.length > 0) {
    const m = TERM.exec(s);
    if (!m) {
      const why = /^[\d.]+$/.test(s) ? 'missing unit' : `unknown unit or text at "${s}"`;
      throw invalid(field, input, why);
    }
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    s = s.slice(m[0].length);
  }
  if (!Number.isFinite(total)) throw invalid(field, input, 'too large');
  return sign * total;
}

/**
 * A duration field that accepts both shapes: a number (or a string of digits)
 * is seconds, as Vessel's clients always sent; anything else is a Go duration
 * string. Returns milliseconds; negative values are refused.
 */
export function parseDurationOrSeconds(input: string | number, field: string): number {
  let ms: number;
  if (typeof input === 'number') {
    if (!Number.isFinite(input)) throw invalid(field, String(input), 'not a finite number');
    ms = input * 1000;
  } else if (/^\s*\d+(?:\.\d+)?\s*$/.test(input)) {
    ms = Number(input) * 1000;
  } else {
    ms = parseGoDuration(input, field);
  }
  if (ms < 0) throw invalid(field, String(input), 'negative');
  return ms;
}

/** Milliseconds as a Go duration string (`90000` → `"1m30s"`, `0` → `"0s"`). */
export function formatGoDuration(ms: number): string {
  if (ms === 0) return '0s';
  const sign = ms < 0 ? '-' : '';
  let rest = Math.abs(ms);
  if (rest < 1000) return `${sign}${rest}ms`;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const s = Number((rest / 1000).toFixed(3));
  return `${sign}${h > 0 ? `${h}h` : ''}${h > 0 || m > 0 ? `${m}m` : ''}${s}s`;
}
