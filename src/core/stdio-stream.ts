/**
 * The byte-exact stdio stream (`application/vnd.vessel.stream`): what the API
 * sends for a one-shot exec and for logs when a client asks for it, and the
 * format of an instance's app log on disk.
 *
 * Each frame: `u8 kind | 3 zero bytes | u32 payload length (big endian) | payload`,
 * the header layout of Docker's multiplexed attach stream, so kinds 1 and 2
 * read the same in both. Vessel adds kinds for the console text and for the
 * JSON that ends a stream (exit status, error, instance state).
 */
import { VesselError } from './errors.js';

export const STDIO_MEDIA_TYPE = 'application/vnd.vessel.stream';

export const StdioKind = {
  stdout: 1,
  stderr: 2,
  /** Serial console text (kernel and vessel-init messages): `logs?source=console`. */
  console: 3,
  /** JSON `{exit_code, signal}`: the command ended. */
  exit: 0x10,
  /** JSON `{code, message, details?}`: the stream failed (e.g. the command did not start). */
  error: 0x11,
  /** JSON Instance: the instance's state when a log stream ends. */
  state: 0x12,
} as const;

export type StdioKindName = keyof typeof StdioKind;

export interface StdioFrame {
  readonly kind: number;
  readonly payload: Buffer;
}

export const STDIO_HEADER = 8;
/** Largest payload a decoder accepts: a writer splits bigger output. */
export const STDIO_MAX_PAYLOAD = 1024 * 1024;

export function encodeStdioHeader(kind: number, length: number): Buffer {
  const h = Buffer.alloc(STDIO_HEADER);
  h.writeUInt8(kind, 0);
  h.writeUInt32BE(length, 4);
  return h;
}

export function encodeStdioFrame(kind: number, payload: Buffer | string): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  return Buffer.concat([encodeStdioHeader(kind, body.length), body]);
}

/** Incremental decoder; a malformed header is an error (the stream cannot be resynchronised). */
export class StdioDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): StdioFrame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: StdioFrame[] = [];
    let off = 0;
    while (this.buf.length - off >= STDIO_HEADER) {
      const kind = this.buf.readUInt8(off);
      const len = this.buf.readUInt32BE(off + 4);
      if (this.buf.readUIntBE(off + 1, 3) !== 0 || len > STDIO_MAX_PAYLOAD) {
        throw new VesselError(
          'internal',
          `malformed stdio stream: bad frame header at byte ${off} (kind ${kind}, length ${len})`,
        );
      }
      if (this.buf.length - off < STDIO_HEADER + len) break;
      out.push({ kind, payload: this.buf.subarray(off + STDIO_HEADER, off + STDIO_HEADER + len) });
      off += STDIO_HEADER + len;
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : Buffer.from(this.buf.subarray(off));
    return out;
  }

  /** Bytes of an incomplete frame still held (non-zero at the end means truncation). */
  get pending(): number {
    return this.buf.length;
  }
}
