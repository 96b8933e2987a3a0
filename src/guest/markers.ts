/**
 * Boot markers on the serial console (guest-agent/PROTOCOL.md §1). The
 * parser sees the console as arbitrary chunks: it splits lines itself, hands
 * markers to the caller, and passes every other byte through to the app log
 * unchanged, so markers never reach the user.
 */
export type BootMarker =
  | { readonly kind: 'program-start' }
  | { readonly kind: 'agent-ready' }
  | { readonly kind: 'failed'; readonly reason: string }
  | { readonly kind: 'exit'; readonly code: number };

const PREFIX = 'VESSEL-MARKER ';

export function parseMarkerLine(line: string): BootMarker | undefined {
  const text = line.replace(/\r$/, '');
  if (!text.startsWith(PREFIX)) return undefined;
  const rest = text.slice(PREFIX.length);
  if (rest === 'program-start') return { kind: 'program-start' };
  if (rest === 'agent-ready') return { kind: 'agent-ready' };
  if (rest.startsWith('failed '))
    return { kind: 'failed', reason: rest.slice(7).trim() || 'unknown failure' };
  if (rest === 'failed') return { kind: 'failed', reason: 'unknown failure' };
  const m = /^exit (-?\d+)$/.exec(rest);
  if (m?.[1]) return { kind: 'exit', code: Number(m[1]) };
  return undefined;
}

export class MarkerParser {
  /** Bytes of the current line that could still turn out to be a marker. */
  private pending = Buffer.alloc(0);
  private atLineStart = true;
  private readonly prefix = Buffer.from(PREFIX);

  /** Feed console bytes; returns the app-log bytes and the markers found. */
  push(chunk: Buffer): { log: Buffer; markers: BootMarker[] } {
    const out: Buffer[] = [];
    const markers: BootMarker[] = [];
    let data = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    while (data.length > 0) {
      if (!this.atLineStart) {
        const nl = data.indexOf(0x0a);
        if (nl < 0) {
          out.push(data);
          break;
        }
        out.push(data.subarray(0, nl + 1));
        data = data.subarray(nl + 1);
        this.atLineStart = true;
        continue;
      }
      // At a line start: could this line be a marker?
      const n = Math.min(data.length, this.prefix.length);
      if (!data.subarray(0, n).equals(this.prefix.subarray(0, n))) {
        this.atLineStart = false;
        continue;
      }
      const nl = data.indexOf(0x0a);
      if (nl < 0) {
        this.pending = Buffer.from(data);
        break;
      }
      const line = data.subarray(0, nl).toString('utf8');
      const marker = parseMarkerLine(line);
      if (marker) markers.push(marker);
      else out.push(data.subarray(0, nl + 1));
      data = data.subarray(nl + 1);
    }
    return { log: Buffer.concat(out), markers };
  }

  /** Bytes held back at the end of the stream (an unfinished line). */
  flush(): Buffer {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest;
  }
}
