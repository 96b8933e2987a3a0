// Applies one OCI layer blob to a root filesystem: decompress, meter and hash
// the tar stream, and hand each entry to the LayerWriter in order.
import { createHash } from 'node:crypto';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { extract, type Header } from 'tar-stream';
import { VesselError, errnoCode, errorMessage, toVesselError } from '../../core/errors.js';
import { openLayerStream } from './decompress.js';
import { LayerWriter } from './layer-writer.js';
import { LoopBudget } from './loop-budget.js';
import { unsafeEntry } from './scoped-path.js';
import { TarEnd, dataOffset } from './tar-end.js';

export interface ApplyLayerOptions {
  /** Existing directory: the image's root filesystem being built. */
  readonly rootfs: string;
  /** Remaining budget of uncompressed tar bytes for this image. */
  readonly maxBytes: number;
  /** True when running as root: lchown entries to their uid/gid. */
  readonly canChown: boolean;
}

export interface ApplyLayerResult {
  /** Uncompressed tar stream bytes consumed. */
  readonly tarBytes: number;
  /** `sha256:<hex>` of the uncompressed tar stream (the OCI diff_id). */
  readonly diffId: string;
  /** Entries skipped on purpose, e.g. device nodes. */
  readonly warnings: string[];
}

/** Errors of these kinds mean the layer's content is bad, not that the host failed. */
const LAYER_FAULT_ERRNOS = new Set([
  'ENOENT',
  'ENOTDIR',
  'EISDIR',
  'EEXIST',
  'ENOTEMPTY',
  'ENAMETOOLONG',
  'ELOOP',
  'EMLINK',
  'EINVAL',
]);

/**
 * Counts and hashes the uncompressed tar bytes, failing once they exceed the
 * budget. At the end it appends the zero bytes {@link TarEnd} asks for (not
 * hashed, not counted), so the parser sees whole blocks.
 */
class TarMeter extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');

  constructor(
    private readonly limit: number,
    private readonly framing: TarEnd,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.limit) {
      callback(
        new VesselError(
          'layer_too_large',
          `layer unpacks to more than ${this.limit} bytes, the remaining budget for this image`,
          { details: { limit: this.limit } },
        ),
      );
      return;
    }
    this.hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    let filler: Buffer;
    try {
      filler = this.framing.inputEnded(this.bytes);
    } catch (err) {
      callback(err as Error);
      return;
    }
    callback(null, filler.length > 0 ? filler : undefined);
  }

  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/**
 * Apply a layer blob (gzip, zstd or plain tar) to `options.rootfs`, never
 * writing outside it. Rejects exactly once, after every stream was destroyed
 * and the entry being written has stopped, with `unsafe_layer`,
 * `layer_too_large`, `disk_full` or (for host failures) `internal`.
 */
export async function applyLayer(
  layer: Readable,
  options: ApplyLayerOptions,
): Promise<ApplyLayerResult> {
  if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes < 0) {
    layer.destroy();
    throw new VesselError(
      'invalid_argument',
      `layer budget must be a non-negative integer, got ${options.maxBytes}`,
    );
  }
  const writer = new LayerWriter({ rootfs: options.rootfs, canChown: options.canChown });
  const end = new TarEnd();
  const meter = new TarMeter(options.maxBytes, end);
  const tar = extract();
  // Entries are applied with synchronous fs calls; a chunk full of small files
  // would otherwise run back to back without letting the event loop turn.
  const budget = new LoopBudget();

  return new Promise<ApplyLayerResult>((resolve, reject) => {
    let settled = false;
    let tarStream: Readable | undefined;
    /** The entry being applied; a failure waits for it so nothing writes after the rejection. */
    let inFlight: Promise<void> = Promise.resolve();

    const fail = (err: VesselError): void => {
      if (settled) return;
      settled = true;
      layer.destroy();
      tarStream?.destroy();
      meter.destroy();
      tar.destroy();
      const done = (): void => reject(err);
      inFlight.then(done, done);
    };

    // Listeners stay attached after settling so late errors from destroyed streams are absorbed.
    layer.on('error', (err) => fail(toVesselError(err, 'reading layer blob')));
    layer.on('close', () => {
      // Destroyed by its owner without an error: the tar stream would never end.
      if (!layer.readableEnded)
        fail(new VesselError('internal', 'layer blob stream closed before its end'));
    });
    meter.on('error', (err) => fail(toVesselError(err, 'metering layer')));
    tar.on('error', (err: unknown) => fail(end.parserFailed(err) ?? malformed(err, 'tar')));

    tar.on('entry', (header, data, next) => {
      try {
        end.entry(header);
      } catch (err) {
        fail(err as VesselError);
        return;
      }
      inFlight = budget
        .pace()
        // A failure during the yield settles the layer: write nothing more.
        .then(() => (settled ? undefined : applyEntry(writer, header, data, options.maxBytes)))
        .then(
          () => {
            if (!settled) next();
          },
          (err: unknown) => fail(entryError(err, header.name)),
        );
    });

    tar.on('finish', () => {
      inFlight
        .then(async () => {
          if (settled) return;
          end.parserFinished();
          await writer.finish();
          if (settled) return;
          settled = true;
          resolve({ tarBytes: meter.bytes, diffId: meter.digest(), warnings: writer.warnings });
        })
        .catch((err: unknown) => fail(toVesselError(err, 'finishing layer directories')));
    });

    openLayerStream(layer).then(
      (stream) => {
        tarStream = stream;
        if (settled) {
          stream.destroy();
          return;
        }
        if (stream !== layer) stream.on('error', (err) => fail(malformed(err, 'compressed')));
        // tar-stream's extract is a streamx Writable; Node's pipe() drives it, as its README shows.
        stream.pipe(meter).pipe(tar);
      },
      (err: unknown) => fail(toVesselError(err, 'reading layer blob')),
    );
  });
}

async function applyEntry(
  writer: LayerWriter,
  header: Header,
  data: AsyncIterable<unknown>,
  maxBytes: number,
): Promise<void> {
  const size = header.size ?? 0;
  const offset = dataOffset(header);
  if (header.type !== 'directory' && offset + size > maxBytes) {
    throw new VesselError(
      'layer_too_large',
      `layer entry ${JSON.stringify(header.name)}: declares ${size} bytes, more than the ` +
        `${Math.max(0, maxBytes - offset)} bytes left in the budget for this image`,
      { details: { entry: header.name, size, limit: maxBytes } },
    );
  }
  await writer.apply(header, tarData(data));
}

/** An entry's data; a read error means the tar stream is corrupt or truncated. */
async function* tarData(data: AsyncIterable<unknown>): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of data) yield chunk as Buffer;
  } catch (err) {
    throw malformed(err, 'tar');
  }
}

/** A parse or decompression error: the layer itself is corrupt. */
function malformed(err: unknown, format: string): VesselError {
  if (err instanceof VesselError) return err;
  return new VesselError(
    'unsafe_layer',
    `layer is not a valid ${format} stream: ${errorMessage(err)}`,
    {
      cause: err,
    },
  );
}

function entryError(err: unknown, name: string): VesselError {
  if (err instanceof VesselError) return err;
  const code = errnoCode(err);
  if (code === 'EDQUOT') {
    return new VesselError(
      'disk_full',
      `layer entry ${JSON.stringify(name)}: disk quota exceeded`,
      { cause: err },
    );
  }
  if (code !== undefined && LAYER_FAULT_ERRNOS.has(code))
    return unsafeEntry(name, errorMessage(err), err);
  return toVesselError(err, `layer entry ${JSON.stringify(name)}`);
}
