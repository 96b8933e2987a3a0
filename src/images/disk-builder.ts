import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errnoCode, isVesselError, toVesselError } from '../core/errors.js';
import { ensureDir, randomSuffix, writeFileAtomic } from '../core/fs.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';
import { SingleFlight, type Mutex } from '../core/sync.js';
import type { ImageFormat } from '../store/index.js';
import type { BlobStore } from './blob-store.js';
import { buildDisk } from './convert.js';
import type { Descriptor } from './manifest.js';
import { digestHex } from './reference.js';
import { applyLayer, unpackedSizeHint } from './unpack/index.js';
import type { StagingGrant, StagingLease, UnpackStaging } from './unpack-staging.js';

/** A layer's failure, its message prefixed with the layer it came from; code and cause kept. */
function inLayer(err: unknown, index: number, count: number, digest: string): VesselError {
  const e = toVesselError(err, 'unpacking');
  return new VesselError(e.code, `layer ${index + 1} of ${count} (${digest}): ${e.message}`, {
    cause: e,
    details: { ...e.details, layer: digest },
  });
}

/**
 * Where an image was unpacked and why: `staging_dir` (it fit on the fast staging
 * filesystem) or `data_dir`: `disabled`, `no_room`, `unavailable` (the staging
 * directory failed), or `staging_full` (the staging filesystem filled up during
 * the unpack, which was then redone in the data dir).
 */
export interface UnpackPlacement {
  readonly location: 'staging_dir' | 'data_dir';
  readonly reason: 'fits' | 'disabled' | 'no_room' | 'unavailable' | 'staging_full';
}

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
  /** The fast staging filesystem for unpacking (tmpfs); absent or disabled → the data dir. */
  readonly staging?: UnpackStaging;
  /** Told where each successful unpack happened (metrics). */
  readonly onUnpacked?: (placement: UnpackPlacement) => void;
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
    await this.o.staging?.init();
  }

  /** Shutdown: no new unpacks on the fast staging filesystem. */
  close(): void {
    this.o.staging?.close();
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
    await fs.mkdir(staging, { mode: 0o700 });
    let lease: StagingLease | null = null;
    try {
      const estimate = await this.estimate(layers);
      const got: StagingGrant = this.o.staging
        ? await this.o.staging.acquire(hex.slice(0, 16), estimate)
        : { lease: null, why: 'disabled', detail: 'no staging directory' };
      lease = got.lease;
      let placement: UnpackPlacement = { location: 'staging_dir', reason: 'fits' };
      if (got.lease === null) {
        placement = { location: 'data_dir', reason: got.why };
        this.o.logger.debug({ digest, estimate, why: got.detail }, 'unpacking in the data dir');
      }
      let rootfs = path.join(lease?.dir ?? staging, 'rootfs');
      let warnings: string[];
      try {
        warnings = await this.unpack(rootfs, layers, diffIds);
      } catch (err) {
        // The estimate is a guess (e.g. multi-member gzip): a full staging fs is not the image's fault.
        if (lease === null || !isVesselError(err, 'disk_full')) throw err;
        this.o.logger.warn(
          { digest, estimate, staging: lease.dir },
          'unpack staging filesystem filled up; unpacking again in the data directory',
        );
        await lease.release();
        lease = null;
        placement = { location: 'data_dir', reason: 'staging_full' };
        rootfs = path.join(staging, 'rootfs');
        warnings = await this.unpack(rootfs, layers, diffIds);
      }
      this.o.onUnpacked?.(placement);
      for (const w of warnings) this.o.logger.warn({ digest }, w);
      const format = await this.o.format();
      const out = path.join(staging, `rootfs.${format}`);
      const started = Date.now();
      const size = await buildDisk(rootfs, out, format);
      this.o.logger.info(
        { digest, format, size, ms: Date.now() - started, unpacked_in: placement.location },
        'disk built',
      );
      if (lease) await lease.release();
      else await fs.rm(rootfs, { recursive: true, force: true });
      lease = null;
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
      await lease?.release();
      await fs.rm(staging, { recursive: true, force: true });
    }
  }

  /** Apply every layer in order into a fresh `rootfs`, checking each diff_id; returns the warnings. */
  private async unpack(
    rootfs: string,
    layers: readonly Descriptor[],
    diffIds: readonly string[],
  ): Promise<string[]> {
    await fs.mkdir(rootfs, { mode: 0o755 });
    let budget = this.o.maxUnpackedBytes;
    const warnings: string[] = [];
    const canChown = process.getuid?.() === 0;
    for (const [i, layer] of layers.entries()) {
      const res = await applyLayer(this.o.blobs.open(layer.digest), {
        rootfs,
        maxBytes: budget,
        canChown,
      }).catch((err: unknown) => {
        throw inLayer(err, i, layers.length, layer.digest);
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
    return warnings;
  }

  /** Estimated unpacked size of the layers (from their framing), capped by the image budget. */
  private async estimate(layers: readonly Descriptor[]): Promise<number> {
    let total = 0;
    for (const layer of layers) total += await unpackedSizeHint(this.o.blobs.pathOf(layer.digest));
    return Math.min(total, this.o.maxUnpackedBytes);
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
