/**
 * Pure parsers for the output of host tools. Kept apart from the code that
 * runs the tools so they can be tested with fixture strings.
 */

/** A dotted version split into numbers, e.g. `7.2.22` → `{ text: '7.2.22', major: 7, minor: 2 }`. */
export interface ToolVersion {
  readonly text: string;
  readonly major: number;
  readonly minor: number;
}

/**
 * Parse the first line of `qemu-system-x86_64 --version`, e.g.
 * `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`.
 * Returns null when the output does not look like QEMU's.
 */
export function parseQemuVersion(output: string): ToolVersion | null {
  const m = /QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?/.exec(output);
  if (!m?.[1] || !m[2]) return null;
  const text = m[3] === undefined ? `${m[1]}.${m[2]}` : `${m[1]}.${m[2]}.${m[3]}`;
  return { text, major: Number(m[1]), minor: Number(m[2]) };
}

/**
 * Parse a generic `--version` output such as `Firecracker v1.7.0` or
 * `cloud-hypervisor v38.0.0`: the first `v?X.Y[.Z]` token.
 */
export function parseToolVersion(output: string): ToolVersion | null {
  const m = /\bv?(\d+)\.(\d+)(?:\.(\d+))?\b/.exec(output);
  if (!m?.[1] || !m[2]) return null;
  const text = m[3] === undefined ? `${m[1]}.${m[2]}` : `${m[1]}.${m[2]}.${m[3]}`;
  return { text, major: Number(m[1]), minor: Number(m[2]) };
}

/**
 * Parse `qemu-system-x86_64 -machine help` into the machine type names
 * (first column of every line after the `Supported machines are:` header).
 */
export function parseMachineHelp(output: string): string[] {
  const names: string[] = [];
  for (const line of output.split('\n')) {
    if (line.trim() === '' || /^Supported machines/i.test(line)) continue;
    const name = /^(\S+)\s/.exec(line)?.[1] ?? /^(\S+)$/.exec(line)?.[1];
    if (name) names.push(name);
  }
  return names;
}

/**
 * Parse the compressor list of `mkfs.erofs --help` (erofs-utils 1.5:
 * `Available compressors are: lz4hc, lz4`) or of `mkfs.erofs --version`
 * (newer: `available compressors: lz4, lz4hc, lzma`). A list printed one
 * compressor per indented line under the header is handled too. Returns []
 * when there is no list.
 */
export function parseErofsCompressors(output: string): string[] {
  const lines = output.split('\n');
  const at = lines.findIndex((l) => /available compressors(?: are)?:/i.test(l));
  if (at < 0) return [];
  const header = lines[at] ?? '';
  const rest = header.slice(header.indexOf(':') + 1).trim();
  const names: string[] = [];
  if (rest !== '') {
    for (const part of rest.split(',')) {
      const name = /^[a-z0-9_-]+/i.exec(part.trim())?.[0];
      if (name) names.push(name.toLowerCase());
    }
    return names;
  }
  // Multi-line form: indented names until the first non-indented or blank line.
  for (const line of lines.slice(at + 1)) {
    if (!/^\s+\S/.test(line)) break;
    const name = /^\s+([a-z0-9_-]+)/i.exec(line)?.[1];
    if (name) names.push(name.toLowerCase());
  }
  return names;
}

/** `MemAvailable:   24051720 kB` from /proc/meminfo, in bytes; null if absent. */
export function parseMemAvailable(meminfo: string): number | null {
  const m = /^MemAvailable:\s+(\d+)\s*kB/m.exec(meminfo);
  return m?.[1] ? Number(m[1]) * 1024 : null;
}
