// ADD archives: telling a tar (plain, gzip, zstd) from a file to copy, and
// reading one in a single pass that checks each entry (ArchiveChecker), meters
// the decompressed bytes against the layer's budget and hashes the archive's
// bytes, so a change since planning is caught.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-stream';
import { VesselError, errorMessage } from '../core/errors.js';
import { openLayerStream, sniffCompression } from '../images/unpack/index.js';
import { ArchiveChecker, type ArchiveItem } from './archive-checker.js';
import { invalid } from './copy-model.js';

const BZIP2 = [0x42, 0x5a, 0x68];
const XZ = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

const startsWith = (head: Buffer, magic: number[]): boolean =>
  head.length >= magic.length && magic.every((b, i) => head[i] === b);

/** A valid ustar/GNU/v7 header block: its checksum adds up. */
function isTarHeader(block: Buffer): boolean {
  if (block.length < 512 || block[0] === 0) return false;
  const field = block
    .subarray(148, 156)
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i += 1) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum === parseInt(field, 8);
}

/**
 * The first `n` bytes of `stream`, then destroys it. Unlike the unpacker's
 * head reader (which puts the bytes back for the decompressor), this one
 * only looks, and a read error gives what was read so far.
 */
async function readHead(stream: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length >= n) break;
    }
  } catch {
    // A corrupt compressed file is not an archive: ADD copies it as a file.
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks).subarray(0, n);
}

/**
 * True when ADD should extract the file: a tar, plain or gzip/zstd-compressed
 * (checked by decompressing its first block only). bzip2 and xz files are
 * refused: Node cannot tell whether they hold a tar without a decompressor.
 */
export async function sniffArchive(host: string, named: string): Promise<boolean> {
  const head = await readHead(createReadStream(host, { end: 511 }), 512);
  if (startsWith(head, BZIP2) || startsWith(head, XZ)) {
    const kind = startsWith(head, XZ) ? 'xz' : 'bzip2';
    throw invalid(
      `ADD of ${JSON.stringify(named)}: ${kind}-compressed files are not supported (only plain, gzip and zstd tar archives are extracted); use COPY and RUN tar, or recompress it`,
      { source: named },
    );
  }
  if (sniffCompression(head) === 'none') return isTarHeader(head);
  return isTarHeader(await readHead(await openLayerStream(createReadStream(host)), 512));
}

/** Decompressed bytes the layer's archives may still produce. */
export interface ByteBudget {
  left: number;
  readonly max: number;
}

/** Counts the bytes passing through against `budget`; fails with `layer_too_large` past it. */
function meter(budget: ByteBudget, label: string): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done): void {
      budget.left -= chunk.length;
      if (budget.left >= 0) return done(null, chunk);
      done(
        new VesselError(
          'layer_too_large',
          `ADD archive ${label} unpacks to more than ${budget.max} bytes, the most a layer may hold`,
          { details: { archive: label, maxBytes: budget.max } },
        ),
      );
    },
  });
}

/** A read of an archive entry's data failed: the archive's fault (truncated, corrupt, too big). */
class EntryReadError extends Error {
  constructor(cause: unknown) {
    super(errorMessage(cause), { cause });
  }
}

/** `onEntry` failed other than reading the entry: the layer's output, not the archive. */
class EntryWriteError extends Error {
  constructor(cause: unknown) {
    super(errorMessage(cause), { cause });
  }
}

/** `data`, its read errors marked as EntryReadError. */
async function* marked(data: AsyncIterable<unknown>): AsyncGenerator<unknown> {
  try {
    for await (const chunk of data) yield chunk;
  } catch (err) {
    throw new EntryReadError(err);
  }
}

/**
 * Read an ADD archive once: each checked entry with its data stream (drained
 * when `onEntry` leaves it), the decompressed bytes metered against `budget`.
 * Returns the `sha256:<hex>` of the archive's bytes as they were read. An
 * error of `onEntry` that is not a read of the data is passed on as it is.
 */
export async function forEachEntry(
  file: string,
  label: string,
  budget: ByteBudget,
  onEntry: (item: ArchiveItem, data: AsyncIterable<unknown>) => Promise<void>,
): Promise<string> {
  const checker = new ArchiveChecker(label);
  const hash = createHash('sha256');
  const hashed = new Transform({
    transform(chunk: Buffer, _encoding, done): void {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const hashing = pipeline(createReadStream(file), hashed);
  hashing.catch(() => undefined);
  const x = extract();
  let reading: Promise<void> | undefined;
  try {
    reading = pipeline(await openLayerStream(hashed), meter(budget, label), x);
    reading.catch(() => undefined);
    for await (const entry of x) {
      const item = checker.check(entry.header);
      try {
        await onEntry(item, marked(entry));
      } catch (err) {
        throw err instanceof EntryReadError ? err : new EntryWriteError(err);
      }
      entry.resume();
    }
    await reading;
    await hashing;
  } catch (err) {
    x.destroy();
    hashed.destroy();
    const settled = await Promise.allSettled([reading, hashing]);
    if (err instanceof EntryWriteError) throw err.cause;
    // The reading side's own error (layer_too_large) wins over what it caused downstream.
    const reasons = settled.map((r): unknown => (r.status === 'rejected' ? r.reason : undefined));
    const read: unknown = err instanceof EntryReadError ? err.cause : err;
    const known = [read, ...reasons].find((e): e is VesselError => e instanceof VesselError);
    if (known !== undefined) throw known;
    throw new VesselError(
      'invalid_argument',
      `ADD archive ${label} is not a readable tar archive: ${errorMessage(read)}`,
      { cause: err, details: { archive: label } },
    );
  }
  return `sha256:${hash.digest('hex')}`;
}
