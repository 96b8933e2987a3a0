import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { VesselError, errnoCode, toVesselError } from '../core/errors.js';
import { ensureDir, randomSuffix } from '../core/fs.js';
import type { Paths } from '../core/paths.js';
import { digestHex, isDigest } from './reference.js';

export type ProgressFn = (bytes: number, total: number | undefined) => void;

interface Inflight {
  readonly promise: Promise<void>;
  readonly listeners: Set<ProgressFn>;
}

/**
 * Content-addressed blob store shared by every image. A blob is written to
 * `blobs/incoming/`, hashed while it streams, and renamed to
 * `blobs/sha256/<hex>` only when its digest (and size, when known) match — so
 * a blob at its final path is always valid. Concurrent ingests of one digest
 * share a single download.
 */
export class BlobStore {
  private readonly paths: Paths;
  private readonly inflight = new Map<string, Inflight>();

  constructor(options: { paths: Paths }) {
    this.paths = options.paths;
  }

  async init(): Promise<void> {
    await ensureDir(this.paths.blobAlgoDir('sha256'), 0o700);
    // Partial downloads of a previous run are worthless: start clean.
    await fs.rm(this.paths.blobIncomingDir, { recursive: true, force: true });
    await ensureDir(this.paths.blobIncomingDir, 0o700);
  }

  pathOf(digest: string): string {
    return this.paths.blob('sha256', digestHex(digest));
  }

  async has(digest: string): Promise<boolean> {
    try {
      await fs.access(this.pathOf(digest));
      return true;
    } catch {
      return false;
    }
  }

  /** Digests whose download is under way (never garbage collected). */
  inflightDigests(): Set<string> {
    return new Set(this.inflight.keys());
  }

  /**
   * Make `digest` present, fetching it with `open` when it is not. Progress
   * reports cumulative bytes of this blob's download.
   */
  async ensure(
    digest: string,
    expectedSize: number | undefined,
    open: () => Promise<Readable>,
    onProgress?: ProgressFn,
  ): Promise<void> {
    if (!isDigest(digest))
      throw new VesselError('invalid_argument', `"${digest}" is not a sha256 digest`);
    const running = this.inflight.get(digest);
    if (running) {
      if (onProgress) running.listeners.add(onProgress);
      try {
        return await running.promise;
      } finally {
        if (onProgress) running.listeners.delete(onProgress);
      }
    }
    if (await this.has(digest)) {
      onProgress?.(expectedSize ?? 0, expectedSize);
      return;
    }
    const listeners = new Set<ProgressFn>(onProgress ? [onProgress] : []);
    const promise = this.download(digest, expectedSize, open, listeners).finally(() => {
      this.inflight.delete(digest);
    });
    this.inflight.set(digest, { promise, listeners });
    return promise;
  }

  private async download(
    digest: string,
    expectedSize: number | undefined,
    open: () => Promise<Readable>,
    listeners: Set<ProgressFn>,
  ): Promise<void> {
    const tmp = path.join(this.paths.blobIncomingDir, `${digestHex(digest)}.${randomSuffix()}`);
    const hash = createHash('sha256');
    let bytes = 0;
    let lastReport = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        if (expectedSize !== undefined && bytes > expectedSize) {
          cb(
            new VesselError(
              'digest_mismatch',
              `blob ${digest} is larger than its declared size of ${expectedSize} bytes`,
            ),
          );
          return;
        }
        hash.update(chunk);
        const now = Date.now();
        if (now - lastReport > 100) {
          lastReport = now;
          for (const l of listeners) l(bytes, expectedSize);
        }
        cb(null, chunk);
      },
    });
    try {
      const source = await open();
      await pipeline(source, meter, createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== digest) {
        throw new VesselError(
          'digest_mismatch',
          `blob ${digest} failed verification: content hashes to ${actual}`,
          {
            details: { expected: digest, actual },
          },
        );
      }
      if (expectedSize !== undefined && bytes !== expectedSize) {
        throw new VesselError(
          'digest_mismatch',
          `blob ${digest} is ${bytes} bytes but its descriptor says ${expectedSize}`,
        );
      }
      await fs.rename(tmp, this.pathOf(digest));
      for (const l of listeners) l(bytes, expectedSize);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw toVesselError(err, `downloading blob ${digest}`, 'registry_unavailable');
    }
  }

  /**
   * Store a stream whose digest is not known in advance (a layer a build made);
   * returns its digest and size. The bytes are hashed while they are written.
   */
  async adopt(source: Readable): Promise<{ digest: string; size: number }> {
    const tmp = path.join(this.paths.blobIncomingDir, `adopt.${randomSuffix()}`);
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(source, meter, createWriteStream(tmp, { flags: 'wx', mode: 0o600 }));
      const digest = `sha256:${hash.digest('hex')}`;
      if (await this.has(digest)) await fs.rm(tmp, { force: true });
      else await fs.rename(tmp, this.pathOf(digest));
      return { digest, size };
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw toVesselError(err, 'storing a blob');
    }
  }

  async read(digest: string): Promise<Buffer> {
    return fs.readFile(this.pathOf(digest));
  }

  open(digest: string): Readable {
    return createReadStream(this.pathOf(digest));
  }

  /** Store bytes already in memory (manifests, configs); returns the digest. */
  async put(data: Buffer): Promise<string> {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    if (await this.has(digest)) return digest;
    const tmp = path.join(this.paths.blobIncomingDir, `${digestHex(digest)}.${randomSuffix()}`);
    try {
      await fs.writeFile(tmp, data, { flag: 'wx', mode: 0o600 });
      await fs.rename(tmp, this.pathOf(digest));
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw toVesselError(err, `storing blob ${digest}`);
    }
    return digest;
  }

  async list(): Promise<{ digest: string; size: number }[]> {
    const dir = this.paths.blobAlgoDir('sha256');
    const out: { digest: string; size: number }[] = [];
    for (const name of await fs.readdir(dir)) {
      if (!/^[a-f0-9]{64}$/.test(name)) continue;
      try {
        const st = await fs.stat(path.join(dir, name));
        out.push({ digest: `sha256:${name}`, size: st.size });
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
    }
    return out;
  }

  async remove(digest: string): Promise<void> {
    await fs.rm(this.pathOf(digest), { force: true });
  }
}
