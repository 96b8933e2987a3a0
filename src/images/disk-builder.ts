import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errnoCode, toVesselError } from '../core/errors.js';
import { ensureDir, randomSuffix, writeFileAtomic } from '../core/fs.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';
import { SingleFlight, type Mutex } from '../core/sync.js';
import type { ImageFormat } from '../store/index.js';
import type { BlobStore } from './blob-store.js';
import { buildDisk } from './convert.js';
import type { Descriptor } from './manifest.js';
import { digestHex } from './reference.js';
import { applyLayer } from './unpack/index.js';

/** What `images/<hex>/metadata.json` records about a published disk. */
export interface DiskInfo {
  readonly digest: string;
  readonly format: ImageFormat;
  readonly size_bytes: number;
  readonly warnings: string[];
  readonly created_at: string;
}

export interface DiskBuilderOptions {
  readonly paths: Paths;
  readonly blobs: BlobStore;
  readonly logger: Logger;
  /** Held only around the rename that publishes a disk. */
  readonly publishLock: Mutex;
  readonly timePublish: <T>(fn: () => Promise<T>) => Promise<T>;
  readonly maxUnpackedBytes: number;
  readonly format: () => Promise<ImageFormat>;
}

/**
 * Turns a manifest's layers into a published read-only disk:
 * unpack into a private staging dir → mkfs → atomic rename into
 * `images/<hex>/`. Concurrent builds of one digest run once.
 */
export class DiskBuilder {
  private readonly o: DiskBuilderOptions;
  private readonly flights = new SingleFlight<DiskInfo>();

  constructor(options: DiskBuilderOptions) {
    this.o = options;
  }

  async init(): Promise<void> {
    await ensureDir(this.o.paths.imagesDir, 0o700);
    await fs.rm(this.o.paths.imageStagingDir, { recursive: true, force: true });
    await ensureDir(this.o.paths.imageStagingDir, 0o700);
  }

  /** The published disk of `digest`, if any. */
  async published(digest: string): Promise<DiskInfo | undefined> {
    try {
      const text = await fs.readFile(
        path.join(this.o.paths.imageDir(digestHex(digest)), 'metadata.json'),
        'utf8',
      );
      const info = JSON.parse(text) as DiskInfo;
      await fs.access(this.o.paths.imageDisk(digestHex(digest), info.format));
      return info;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Digests with a build in progress. */
  building(): string[] {
    return this.flights.keys();
  }

  build(
    digest: string,
    layers: readonly Descriptor[],
    diffIds: readonly string[],
  ): Promise<DiskInfo> {
    return this.flights.do(
      digest,
      async () => (await this.published(digest)) ?? this.buildNow(digest, layers, diffIds),
    );
  }

  private async buildNow(
    digest: string,
    layers: readonly Descriptor[],
    diffIds: readonly string[],
  ): Promise<DiskInfo> {
    if (diffIds.length !== layers.length) {
      throw new VesselError(
        'registry_protocol',
        `image ${digest}: manifest lists ${layers.length} layers but the config has ${diffIds.length} diff_ids`,
      );
    }
    const hex = digestHex(digest);
    const staging = path.join(this.o.paths.imageStagingDir, `${hex}.${randomSuffix()}`);
    const rootfs = path.join(staging, 'rootfs');
    await fs.mkdir(staging, { mode: 0o700 });
    try {
      await fs.mkdir(rootfs, { mode: 0o755 });
      let budget = this.o.maxUnpackedBytes;
      const warnings: string[] = [];
      const canChown = process.getuid?.() === 0;
      for (const [i, layer] of layers.entries()) {
        const res = await applyLayer(this.o.blobs.open(layer.digest), {
          rootfs,
          maxBytes: budget,
          canChown,
        });
        budget -= res.tarBytes;
        warnings.push(...res.warnings);
        if (res.diffId !== diffIds[i]) {
          throw new VesselError(
            'digest_mismatch',
            `layer ${i + 1} (${layer.digest}) unpacks to ${res.diffId} but the image config says ${diffIds[i]}`,
          );
        }
      }
      for (const w of warnings) this.o.logger.warn({ digest }, w);
      const format = await this.o.format();
      const out = path.join(staging, `rootfs.${format}`);
      const started = Date.now();
      const size = await buildDisk(rootfs, out, format);
      this.o.logger.info({ digest, format, size, ms: Date.now() - started }, 'disk built');
      await fs.rm(rootfs, { recursive: true, force: true });
      const info: DiskInfo = {
        digest,
        format,
        size_bytes: size,
        warnings,
        created_at: new Date().toISOString(),
      };
      await writeFileAtomic(path.join(staging, 'metadata.json'), JSON.stringify(info, null, 2));
      const final = this.o.paths.imageDir(hex);
      await this.o.timePublish(() =>
        this.o.publishLock.run(async () => {
          try {
            await fs.rename(staging, final);
          } catch (err) {
            // Published meanwhile by an earlier daemon run or import: keep the existing disk.
            if (errnoCode(err) !== 'ENOTEMPTY' && errnoCode(err) !== 'EEXIST') throw err;
          }
        }),
      );
      return (await this.published(digest)) ?? info;
    } catch (err) {
      throw toVesselError(err, `building disk for ${digest}`);
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }
  }

  /** Remove a published disk (the caller checked nothing references it). */
  async remove(digest: string): Promise<void> {
    await fs.rm(this.o.paths.imageDir(digestHex(digest)), { recursive: true, force: true });
  }

  /** Digests of every published disk directory. */
  async list(): Promise<string[]> {
    const names = await fs.readdir(this.o.paths.imagesDir);
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }
}
