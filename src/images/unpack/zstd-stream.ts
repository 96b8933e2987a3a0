// Streaming zstd decompression: fzstd's Decompress wrapped in a Transform that
// honours back-pressure and refuses frames whose window would exhaust memory.
import { Transform, type TransformCallback } from 'node:stream';
import { Decompress } from 'fzstd';
import { VesselError, errorMessage } from '../../core/errors.js';

/** Largest zstd window accepted: zstd's own default decoder limit (windowLog 27). */
export const MAX_ZSTD_WINDOW = 128 * 1024 * 1024;

/**
 * Compressed bytes handed to fzstd per call. A 4-byte RLE block expands to
 * 128 KiB, so one call yields at most ~8 MiB; between calls the transform
 * waits whenever its output buffer is full.
 */
const SLICE = 256;
/** Largest block a zstd frame may hold (Block_Maximum_Size). */
const MAX_BLOCK = 128 * 1024;
const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MAGIC = 0x184d2a50;

type ScanState = 'magic' | 'skippable-size' | 'descriptor' | 'header' | 'block-header' | 'skip';
type AfterSkip = 'magic' | 'block-header' | 'checksum';

function corrupt(reason: string): VesselError {
  return new VesselError('unsafe_layer', `layer is not a valid zstd stream: ${reason}`);
}

function readLE(bytes: readonly number[], offset: number, length: number): number {
  let value = 0;
  for (let i = length - 1; i >= 0; i--) value = value * 256 + (bytes[offset + i] ?? 0);
  return value;
}

/**
 * Walks the frame and block headers of the compressed stream (not the
 * compressed data) so a frame declaring a huge window is refused before fzstd
 * allocates it.
 */
class FrameScanner {
  private state: ScanState = 'magic';
  private header: number[] = [];
  private need = 4;
  private remaining = 0;
  private afterSkip: AfterSkip = 'magic';
  private descriptor = 0;

  scan(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'skip') {
        const n = Math.min(this.remaining, chunk.length - i);
        this.remaining -= n;
        i += n;
        if (this.remaining === 0) this.continueAfterSkip();
        continue;
      }
      this.header.push(chunk[i]!);
      i += 1;
      if (this.header.length === this.need) this.headerComplete();
    }
  }

  /** Throws unless the stream ended on a frame boundary. */
  finish(): void {
    if (this.state !== 'magic' || this.header.length !== 0) throw corrupt('truncated frame');
  }

  private expect(state: ScanState, bytes: number): void {
    this.state = state;
    this.need = bytes;
    this.header = [];
  }

  private skip(bytes: number, then: AfterSkip): void {
    this.afterSkip = then;
    this.remaining = bytes;
    this.header = [];
    if (bytes === 0) this.continueAfterSkip();
    else this.state = 'skip';
  }

  private continueAfterSkip(): void {
    if (this.afterSkip === 'checksum') this.skip(4, 'magic');
    else if (this.afterSkip === 'magic') this.expect('magic', 4);
    else this.expect('block-header', 3);
  }

  private headerComplete(): void {
    const h = this.header;
    switch (this.state) {
      case 'magic': {
        const magic = readLE(h, 0, 4);
        if (magic === ZSTD_MAGIC) this.expect('descriptor', 1);
        else if ((magic & 0xfffffff0) >>> 0 === SKIPPABLE_MAGIC) this.expect('skippable-size', 4);
        else throw corrupt('bad frame magic');
        return;
      }
      case 'skippable-size':
        this.skip(readLE(h, 0, 4), 'magic');
        return;
      case 'descriptor': {
        const d = h[0] ?? 0;
        if (d & 0x08) throw corrupt('reserved frame header bit set');
        this.descriptor = d;
        const singleSegment = (d >> 5) & 1;
        const fcsFlag = d >> 6;
        const dictBytes = [0, 1, 2, 4][d & 3] ?? 0;
        const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
        this.expect('header', (singleSegment ? 0 : 1) + dictBytes + fcsBytes);
        return;
      }
      case 'header': {
        const d = this.descriptor;
        const singleSegment = (d >> 5) & 1;
        let window: number;
        if (singleSegment) {
          const dictBytes = [0, 1, 2, 4][d & 3] ?? 0;
          const fcsFlag = d >> 6;
          window = readLE(h, dictBytes, h.length - dictBytes) + (fcsFlag === 1 ? 256 : 0);
        } else {
          const wd = h[0] ?? 0;
          const base = 2 ** (10 + (wd >> 3));
          window = base + (base / 8) * (wd & 7);
        }
        if (window > MAX_ZSTD_WINDOW) {
          throw new VesselError(
            'layer_too_large',
            `zstd frame window of ${window} bytes exceeds the ${MAX_ZSTD_WINDOW}-byte limit`,
          );
        }
        this.expect('block-header', 3);
        return;
      }
      case 'block-header': {
        const v = readLE(h, 0, 3);
        const last = (v & 1) === 1;
        const type = (v >> 1) & 3;
        const size = v >>> 3;
        if (type === 3) throw corrupt('reserved block type');
        if (size > MAX_BLOCK) throw corrupt('block larger than 128 KiB');
        const then: AfterSkip = !last
          ? 'block-header'
          : hasChecksum(this.descriptor)
            ? 'checksum'
            : 'magic';
        this.skip(type === 1 ? 1 : size, then);
        return;
      }
      case 'skip':
        return;
    }
  }
}

/** Content_Checksum_flag of a frame header descriptor. */
function hasChecksum(descriptor: number): boolean {
  return ((descriptor >> 2) & 1) === 1;
}

/** A Transform decompressing a zstd stream (one or more frames) with fzstd. */
export class ZstdDecompressStream extends Transform {
  private readonly scanner = new FrameScanner();
  private readonly decoder: Decompress;
  private readWaiter: (() => void) | null = null;

  constructor() {
    super({ readableHighWaterMark: 256 * 1024 });
    this.decoder = new Decompress((data) => {
      if (data.length > 0) this.push(Buffer.from(data));
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.feed(chunk).then(
      () => callback(),
      (err: unknown) => callback(asZstdError(err)),
    );
  }

  override _flush(callback: TransformCallback): void {
    try {
      this.scanner.finish();
      this.decoder.push(new Uint8Array(0), true);
      callback();
    } catch (err) {
      callback(asZstdError(err));
    }
  }

  override _read(size: number): void {
    this.wake();
    super._read(size);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.wake();
    super._destroy(err, callback);
  }

  private wake(): void {
    const waiter = this.readWaiter;
    this.readWaiter = null;
    waiter?.();
  }

  private async feed(chunk: Buffer): Promise<void> {
    for (let offset = 0; offset < chunk.length; offset += SLICE) {
      if (this.destroyed) return;
      const slice = chunk.subarray(offset, offset + SLICE);
      this.scanner.scan(slice);
      this.decoder.push(slice);
      if (this.readableLength >= this.readableHighWaterMark) {
        await new Promise<void>((resolve) => {
          this.readWaiter = resolve;
        });
      }
    }
  }
}

function asZstdError(err: unknown): VesselError {
  if (err instanceof VesselError) return err;
  return new VesselError('unsafe_layer', `layer is not a valid zstd stream: ${errorMessage(err)}`, {
    cause: err,
  });
}
