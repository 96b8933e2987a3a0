/**
 * The framed, multiplexed control-channel codec (guest-agent/PROTOCOL.md §4):
 * `u32 length (BE, of the rest) | u8 type | u32 stream id (BE) | payload`.
 */
import { VesselError } from '../core/errors.js';

export const FrameType = {
  hello: 0x01,
  exec: 0x02,
  stdin: 0x03,
  stdout: 0x04,
  stderr: 0x05,
  resize: 0x06,
  signal: 0x07,
  exit: 0x08,
  error: 0x09,
  copyIn: 0x0a,
  copyOut: 0x0b,
  data: 0x0c,
  stat: 0x0d,
  statResult: 0x0e,
  ping: 0x0f,
  pong: 0x10,
  window: 0x11,
  list: 0x12,
  remove: 0x13,
  reconfigure: 0x14,
  diff: 0x15,
  sessionStart: 0x16,
  sessionAttach: 0x17,
  sessionCtl: 0x18,
  detach: 0x19,
} as const;

/** The main command's stream (exec mode): even, so it never collides with host-chosen ids. */
export const MAIN_STREAM = 2;

export type FrameTypeName = keyof typeof FrameType;
export type FrameTypeCode = (typeof FrameType)[FrameTypeName];

export interface Frame {
  readonly type: number;
  readonly stream: number;
  readonly payload: Buffer;
}

export const MAX_PAYLOAD = 1024 * 1024;
const HEADER = 9;

export function encodeFrame(
  type: number,
  stream: number,
  payload: Buffer | string = Buffer.alloc(0),
): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  if (body.length > MAX_PAYLOAD) {
    throw new VesselError(
      'invalid_argument',
      `frame payload of ${body.length} bytes exceeds ${MAX_PAYLOAD}`,
    );
  }
  const out = Buffer.allocUnsafe(HEADER + body.length);
  out.writeUInt32BE(5 + body.length, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32BE(stream >>> 0, 5);
  body.copy(out, HEADER);
  return out;
}

/**
 * Incremental decoder: push arbitrary chunks, get whole frames. A length
 * below the header size or above the limit is a protocol error (the channel
 * must then be closed: resynchronising on a byte stream is not possible).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): Frame[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    for (;;) {
      if (this.buffered < 4) break;
      const head = this.peek(4);
      const length = head.readUInt32BE(0);
      if (length < 5 || length > 5 + MAX_PAYLOAD) {
        throw new VesselError(
          'internal',
          `guest protocol error: frame length ${length} is out of range`,
        );
      }
      if (this.buffered < 4 + length) break;
      const whole = this.take(4 + length);
      frames.push({
        type: whole.readUInt8(4),
        stream: whole.readUInt32BE(5),
        payload: whole.subarray(HEADER),
      });
    }
    return frames;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const all = Buffer.concat(this.chunks);
    this.chunks = [all];
    return all;
  }

  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = Buffer.from(all.subarray(0, n));
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }
}
