// Opens a layer blob as an uncompressed tar stream, sniffing the compression
// from its first bytes instead of trusting the declared media type.
import { Readable, Transform, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { ZstdDecompressStream } from './zstd-stream.js';

export type LayerCompression = 'gzip' | 'zstd' | 'none';

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** The compression a blob starting with `head` uses. */
export function sniffCompression(head: Uint8Array): LayerCompression {
  const starts = (magic: number[]): boolean =>
    head.length >= magic.length && magic.every((byte, i) => head[i] === byte);
  if (starts(GZIP_MAGIC)) return 'gzip';
  if (starts(ZSTD_MAGIC)) return 'zstd';
  return 'none';
}

/**
 * Turn a raw layer blob into a stream of uncompressed tar bytes: gzip and zstd
 * are decompressed on the fly, anything else passes through as plain tar. Only
 * the first few bytes are held back to sniff the format; nothing else is
 * buffered. An error of `input` or of the decompressor destroys the returned
 * stream with that error; destroying the returned stream destroys `input`.
 * zstd errors are `unsafe_layer` / `layer_too_large` VesselErrors; gzip errors
 * are zlib's own (`Z_DATA_ERROR`, ...).
 */
export async function openLayerStream(input: Readable): Promise<Readable> {
  const head = await readHead(input, ZSTD_MAGIC.length);
  let source: Readable = input;
  if (input.readableEnded) {
    source = Readable.from(head.length > 0 ? [head] : []);
    input.destroy();
  } else if (head.length > 0) {
    input.unshift(head);
  }
  const compression = sniffCompression(head);
  if (compression === 'none') return source;
  const decompressor: Transform =
    compression === 'gzip' ? createGunzip({ chunkSize: 64 * 1024 }) : new ZstdDecompressStream();
  pipeline(source, decompressor, (err) => {
    // pipeline already destroyed both streams; make sure the consumer sees the
    // first error on the stream it holds.
    if (err && !decompressor.destroyed) decompressor.destroy(err);
  });
  return decompressor;
}

/** Read at least `n` bytes (fewer only at end of stream) without switching to flowing mode. */
function readHead(input: Readable, n: number): Promise<Buffer> {
  if (input.readableEnded) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const cleanup = (): void => {
      input.off('readable', onReadable);
      input.off('end', onEnd);
      input.off('error', onError);
      input.off('close', onClose);
    };
    const onReadable = (): void => {
      let chunk: unknown;
      while (length < n && (chunk = input.read()) !== null) {
        const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array | string);
        chunks.push(buf);
        length += buf.length;
      }
      if (length >= n) {
        cleanup();
        resolve(Buffer.concat(chunks));
      }
    };
    const onEnd = (): void => {
      cleanup();
      resolve(Buffer.concat(chunks));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error('layer stream closed before any data was read'));
    };
    input.on('readable', onReadable);
    input.on('end', onEnd);
    input.on('error', onError);
    input.on('close', onClose);
  });
}
