// A cheap guess of how many bytes a layer blob unpacks to, read from its
// framing without decompressing it: used to decide where to unpack, never to
// enforce anything (the byte budget in apply-layer does that).
import fs from 'node:fs/promises';
import { sniffCompression } from './decompress.js';

/** Assumed expansion of a compressed layer whose framing does not say its size. */
export const UNKNOWN_RATIO = 8;

/**
 * The content size a zstd frame header declares (RFC 8878 §3.1.1.1), or null
 * when the frame does not record it. `head` starts at the frame's magic number.
 */
export function zstdContentSize(head: Uint8Array): number | null {
  const fhd = head[4];
  if (fhd === undefined) return null;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const dictIdBytes = [0, 1, 2, 4][fhd & 3]!;
  const fcsBytes = fcsFlag === 0 ? singleSegment : [0, 2, 4, 8][fcsFlag]!;
  if (fcsBytes === 0) return null;
  const at = 5 + (singleSegment ? 0 : 1) + dictIdBytes;
  if (head.length < at + fcsBytes) return null;
  const buf = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  switch (fcsBytes) {
    case 1:
      return buf.readUInt8(at);
    case 2:
      return buf.readUInt16LE(at) + 256;
    case 4:
      return buf.readUInt32LE(at);
    default:
      return Number(buf.readBigUInt64LE(at));
  }
}

/**
 * Estimated uncompressed size of the layer blob at `file`: plain tar → its
 * size; gzip → the trailer's ISIZE (the size mod 2^32; for a multi-member gzip
 * only the last member's, so it can be low); zstd → the first frame's declared
 * content size. Otherwise (or when ISIZE is implausibly below the compressed
 * size) the compressed size times {@link UNKNOWN_RATIO}.
 */
export async function unpackedSizeHint(file: string): Promise<number> {
  const fh = await fs.open(file, 'r');
  try {
    const { size } = await fh.stat();
    const head = Buffer.alloc(Math.min(18, size));
    await fh.read(head, 0, head.length, 0);
    switch (sniffCompression(head)) {
      case 'none':
        return size;
      case 'zstd':
        return zstdContentSize(head) ?? size * UNKNOWN_RATIO;
      case 'gzip': {
        if (size < 18) return size * UNKNOWN_RATIO;
        const tail = Buffer.alloc(4);
        await fh.read(tail, 0, 4, size - 4);
        const isize = tail.readUInt32LE(0);
        // Deflate grows incompressible data by well under 0.1 %: an ISIZE further
        // below the compressed size is not the layer's size (it wrapped past
        // 4 GiB, or it belongs to the last member of a multi-member gzip).
        return isize >= size - size / 1000 - 64 ? isize : size * UNKNOWN_RATIO;
      }
    }
  } finally {
    await fh.close();
  }
}
