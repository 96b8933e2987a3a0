import type { Readable } from 'node:stream';
import type { Registry } from 'prom-client';
import type { Config } from '../core/config.js';
import { ERROR_CODES, VesselError, toVesselError, type ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';
import { Mutex, Semaphore } from '../core/sync.js';
import { Topic } from '../events/index.js';
import type {
  ImageFormat,
  ImageRow,
  ImageSource,
  ImagesRepo,
  ImageStatus,
} from '../store/index.js';
import { BlobStore } from './blob-store.js';
import { chooseFormat, probeDiskFormats, type DiskFormatSupport } from './convert.js';
import { DiskBuilder, type DiskInfo } from './disk-builder.js';
import { collectGarbage, type GcResult } from './gc.js';
import { parseImageConfig } from './image-config.js';
import { ingestArchive } from './import.js';
import { formatPlatform, hostPlatform, parseManifest, type Descriptor } from './manifest.js';
import { MediaType } from './media-types.js';
import { ImageMetrics } from './metrics.js';
import { UnpackStaging } from './unpack-staging.js';
import { pullFromRegistry } from './pull.js';
import { formatReference, isDigest, parseReference } from './reference.js';
import {
  ACTIVE_STATUSES,
  toImage,
  type Image,
  type ImageEvent,
  type LayerProgress,
} from './types.js';

/**
 * The error a failed image's waiters get. An image that does not exist where it was
 * looked for (kind NotFound: `manifest_unknown`, `platform_not_found`) stays not found,
 * so `POST /instances` answers 404 and the CLI exits 4; any other failure is
 * `image_failed` with the stored code as `cause_code`.
 */
function failureOf(name: string, image: Image): VesselError {
  const code = image.error_code;
  if (code !== null && Object.hasOwn(ERROR_CODES, code)) {
    const known = code as ErrorCode;
    if (ERROR_CODES[known].kind === 'NotFound') {
      return new VesselError(known, image.error ?? `image "${name}" not found`, {
        details: { image: name },
      });
    }
  }
  return new VesselError(
    'image_failed',
    `image "${name}" failed: ${image.error ?? 'unknown error'}`,
    {
      details: { image: name, cause_code: code },
    },
  );
}

export interface ImageManagerOptions {
  readonly paths: Paths;
  readonly repo: ImagesRepo;
  readonly logger: Logger;
  readonly config: Config['images'];
  readonly metrics: Registry;
  /** Manifest digests whose disks other subsystems use (instances): never deleted or collected. */
  readonly inUse?: () => ReadonlySet<string>;
}

/** Row fields a job may change. */
type RowPatch = Partial<Omit<ImageRow, 'name' | 'created_at' | 'updated_at'>>;

/** Work a job does once it has a permit; it moves the row to a terminal state. */
type JobBody = () => Promise<void>;

/**
 * The image subsystem's front door: pulls, imports, status, waiters, delete
 * and garbage collection. Every status change goes through {@link update},
 * which writes the store and then publishes, so waiters have one source of
 * truth and one notification path.
 */
export class ImageManager {
  readonly blobs: BlobStore;
  /** The most bytes a layer may unpack to (config `images.max_unpacked_bytes`; builds use it too). */
  readonly maxUnpackedBytes: number;
  private readonly o: ImageManagerOptions;
  private readonly log: Logger;
  private readonly topic: Topic<ImageEvent>;
  private readonly disks: DiskBuilder;
  private readonly jobs: Semaphore;
  readonly downloads: Semaphore;
  private readonly publishLock = new Mutex();
  private readonly metrics: ImageMetrics;
  private readonly queued: string[] = [];
  private readonly running = new Map<string, Promise<void>>();
  private readonly progress = new Map<string, Map<string, LayerProgress>>();
  private readonly pins = new Map<string, number>();
  private formatSupport: Promise<DiskFormatSupport> | undefined;
  private readonly keepers: (() => ReadonlySet<string>)[] = [];
  private closed = false;

  constructor(options: ImageManagerOptions) {
    this.o = options;
    this.maxUnpackedBytes = options.config.max_unpacked_bytes;
    this.log = options.logger;
    this.topic = new Topic({
      onListenerError: (err) => this.log.error({ err }, 'image event listener failed'),
    });
    this.blobs = new BlobStore({ paths: options.paths });
    this.metrics = new ImageMetrics(options.metrics);
    this.jobs = new Semaphore(options.config.max_concurrent_conversions);
    this.downloads = new Semaphore(options.config.max_concurrent_downloads);
    this.disks = new DiskBuilder({
      paths: options.paths,
      blobs: this.blobs,
      logger: this.log,
      publishLock: this.publishLock,
      timePublish: (fn) => this.timePublish(fn),
      maxUnpackedBytes: options.config.max_unpacked_bytes,
      format: () => this.diskFormat(),
      staging: new UnpackStaging({
        parent: options.config.unpack_staging_dir,
        paths: options.paths,
        logger: this.log,
      }),
      onUnpacked: (p) => this.metrics.unpacks.inc({ location: p.location, reason: p.reason }),
    });
  }

  /** Prepare directories and resume work a previous daemon left unfinished. */
  async init(): Promise<void> {
    await this.blobs.init();
    await this.disks.init();
    for (const row of this.o.repo.list()) {
      if (!ACTIVE_STATUSES.has(row.status)) continue;
      if (row.source === 'registry') {
        this.log.info({ image: row.name }, 'resuming pull interrupted by a daemon restart');
        this.pull(row.name);
      } else {
        this.update(row.name, {
          status: 'failed',
          error: 'import interrupted by a daemon restart; import the archive again',
          error_code: 'conflict',
        });
      }
    }
  }

  /**
   * Stop recording: jobs still running when the daemon exits are resumed by
   * the next daemon's {@link init}, so nothing is written after the store closes.
   */
  close(): void {
    this.closed = true;
    this.disks.close();
  }

  /** Wait for running jobs (used on shutdown and by tests). */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running.values()]);
  }

  subscribe(listener: (event: ImageEvent) => void): () => void {
    return this.topic.subscribe(listener);
  }

  list(): Image[] {
    return this.o.repo.list().map((r) => this.view(r));
  }

  /** Look an image up by reference (normalised) or by manifest digest. */
  get(nameOrDigest: string): Image {
    return this.view(this.row(nameOrDigest));
  }

  /** Per-layer download progress of an image being pulled. */
  layerProgress(name: string): LayerProgress[] {
    return [...(this.progress.get(name)?.values() ?? [])];
  }

  /** Resolve user input to a stored name; throws image_not_found. */
  resolveName(nameOrDigest: string): string {
    return this.row(nameOrDigest).name;
  }

  private row(nameOrDigest: string): ImageRow {
    const input = nameOrDigest.trim();
    if (isDigest(input)) {
      const hit = this.o.repo.byDigest(input)[0];
      if (hit) return hit;
    } else {
      const exact = this.o.repo.get(input);
      if (exact) return exact;
      const ref = parseReference(input);
      const row = this.o.repo.get(formatReference(ref));
      if (row) return row;
    }
    throw new VesselError('image_not_found', `image "${input}" not found`, {
      details: { image: input },
    });
  }

  private view(row: ImageRow): Image {
    const pos = this.queued.indexOf(row.name);
    return toImage(row, pos >= 0 ? pos + 1 : null);
  }

  /** The single write-then-publish path for every row change. */
  private update(name: string, patch: RowPatch, source?: ImageSource): ImageRow {
    if (this.closed)
      throw new VesselError(
        'conflict',
        `image manager is shutting down; ${name} resumes on restart`,
      );
    const now = new Date().toISOString();
    const prev = this.o.repo.get(name);
    const row: ImageRow = {
      name,
      digest: null,
      status: 'pending',
      error: null,
      error_code: null,
      source: source ?? 'registry',
      platform: null,
      format: null,
      size_bytes: null,
      config: null,
      layers: [],
      config_digest: null,
      created_at: now,
      ...prev,
      ...(source === undefined ? {} : { source }),
      ...patch,
      updated_at: now,
    };
    this.o.repo.upsert(row);
    this.topic.publish({ type: 'status', name, image: this.view(row) });
    return row;
  }

  /** Replace an image's user tags. */
  setTags(nameOrDigest: string, tags: Readonly<Record<string, string>>): Image {
    return this.view(this.update(this.row(nameOrDigest).name, { tags: { ...tags } }));
  }

  /**
   * Start pulling `reference` from its registry. Returns at once with the
   * record (`pending`); an image already being pulled is returned as is.
   */
  pull(reference: string): Image {
    const ref = parseReference(reference);
    const name = formatReference(ref);
    return this.startJob(name, 'registry', async () => {
      this.update(name, { status: 'pulling' });
      await pullFromRegistry({
        ref,
        name,
        blobs: this.blobs,
        downloads: this.downloads,
        config: this.o.config,
        credentialsFile: this.o.config.credentials_file ?? this.o.paths.credentialsFile,
        metrics: this.metrics,
        pin: (d) => this.pin(d),
        onResolved: (patch) => this.update(name, patch),
        onProgress: (layer) => this.onProgress(name, layer),
        published: (digest) => this.disks.published(digest),
        convert: async (digest, layers, diffIds) => {
          this.update(name, { status: 'converting' });
          return this.disks.build(digest, layers, diffIds);
        },
        finish: (info) => this.finishReady(name, info),
      });
    });
  }

  /**
   * Import a `docker save` tarball or an OCI layout (as a tar stream). The
   * blobs are verified into the store before this returns; conversion goes on
   * in the background like a pull.
   */
  async import(archive: Readable, name?: string): Promise<Image> {
    const ingested = await ingestArchive({
      archive,
      name,
      paths: this.o.paths,
      blobs: this.blobs,
      metrics: this.metrics,
    });
    const unpin = this.pin([
      ingested.digest,
      ingested.configDigest,
      ...ingested.layers.map((l) => l.digest),
    ]);
    const existing = this.o.repo.get(ingested.name);
    if (existing && ACTIVE_STATUSES.has(existing.status)) {
      unpin();
      throw new VesselError(
        'image_in_use',
        `image "${ingested.name}" is being pulled or imported right now; try again when it finishes`,
      );
    }
    return this.startJob(
      ingested.name,
      'import',
      async () => {
        try {
          this.update(ingested.name, {
            status: 'converting',
            digest: ingested.digest,
            platform: ingested.platform,
            config: ingested.config.runtime,
            layers: ingested.layers.map((l) => l.digest),
            config_digest: ingested.configDigest,
          });
          const info = await this.disks.build(
            ingested.digest,
            ingested.layers,
            ingested.config.diffIds,
          );
          await this.finishReady(ingested.name, info);
        } finally {
          unpin();
        }
      },
      { onNotStarted: unpin },
    );
  }

  /**
   * Make an image from blobs already in the store (a build's result): the
   * config and manifest are stored, then the disk is built like an import's.
   * Returns at once (`pending`); wait with {@link waitForReady}.
   */
  async commit(name: string, image: { config: Buffer; layers: Descriptor[] }): Promise<Image> {
    const ref = formatReference(parseReference(name));
    const parsed = parseImageConfig(image.config, `image ${ref} config`);
    if (parsed.diffIds.length !== image.layers.length)
      throw new VesselError(
        'invalid_argument',
        `image ${ref}: ${image.layers.length} layers but ${parsed.diffIds.length} diff_ids`,
      );
    for (const l of image.layers)
      if (!(await this.blobs.has(l.digest)))
        throw new VesselError('internal', `image ${ref}: layer ${l.digest} is not in the store`);
    const configDigest = await this.blobs.put(image.config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: {
          mediaType: MediaType.ociConfig,
          digest: configDigest,
          size: image.config.length,
        },
        layers: image.layers,
      }),
    );
    const digest = await this.blobs.put(manifest);
    const unpin = this.pin([digest, configDigest, ...image.layers.map((l) => l.digest)]);
    const existing = this.o.repo.get(ref);
    if (existing && ACTIVE_STATUSES.has(existing.status)) {
      unpin();
      throw new VesselError(
        'image_in_use',
        `image "${ref}" is being pulled, imported or built right now; try again when it finishes`,
      );
    }
    return this.startJob(
      ref,
      'build',
      async () => {
        try {
          this.update(ref, {
            status: 'converting',
            digest,
            platform: formatPlatform(hostPlatform()),
            config: parsed.runtime,
            layers: image.layers.map((l) => l.digest),
            config_digest: configDigest,
          });
          const published = await this.disks.published(digest);
          const info = published ?? (await this.disks.build(digest, image.layers, parsed.diffIds));
          await this.finishReady(ref, info);
        } finally {
          unpin();
        }
      },
      { onNotStarted: unpin },
    );
  }

  /** A ready image's manifest parts: its config blob and layer descriptors (a build's base). */
  async contents(
    nameOrDigest: string,
  ): Promise<{ name: string; digest: string; config: Buffer; layers: Descriptor[] }> {
    const row = this.row(nameOrDigest);
    if (row.status !== 'ready' || !row.digest)
      throw new VesselError('conflict', `image "${row.name}" is ${row.status}, not ready`);
    const manifest = parseManifest(
      await this.blobs.read(row.digest),
      undefined,
      `image ${row.name} manifest`,
    );
    if (manifest.kind !== 'manifest')
      throw new VesselError('internal', `image ${row.name}: stored manifest is an index`);
    return {
      name: row.name,
      digest: row.digest,
      config: await this.blobs.read(manifest.config.digest),
      layers: [...manifest.layers],
    };
  }

  /** Blobs other subsystems keep (the build cache's layers): never collected. */
  keepBlobs(fn: () => ReadonlySet<string>): void {
    this.keepers.push(fn);
  }

  private startJob(
    name: string,
    source: ImageSource,
    body: JobBody,
    hooks: { onNotStarted?: () => void } = {},
  ): Image {
    const existing = this.o.repo.get(name);
    if (existing && ACTIVE_STATUSES.has(existing.status) && this.running.has(name)) {
      hooks.onNotStarted?.();
      return this.view(existing);
    }
    this.queued.push(name);
    const row = this.update(name, { status: 'pending', error: null, error_code: null }, source);
    const started = Date.now();
    this.metrics.active.inc();
    const job = this.jobs
      .run(async () => {
        this.queued.splice(this.queued.indexOf(name), 1);
        await body();
      })
      .then(
        () => this.metrics.pulls.inc({ result: 'ready' }),
        (err: unknown) => this.fail(name, err),
      )
      .finally(() => {
        this.metrics.active.dec();
        this.metrics.pullSeconds.observe({ phase: 'total' }, (Date.now() - started) / 1000);
        this.running.delete(name);
        this.progress.delete(name);
      });
    this.running.set(name, job);
    return this.view(row);
  }

  private fail(name: string, err: unknown): void {
    const e = toVesselError(err, `image ${name}`);
    this.metrics.pulls.inc({ result: 'failed' });
    if (this.closed) return;
    this.log.warn({ image: name, code: e.code, err: e.message }, 'image failed');
    if (this.o.repo.get(name))
      this.update(name, { status: 'failed', error: e.message, error_code: e.code });
  }

  private onProgress(name: string, layer: LayerProgress): void {
    let m = this.progress.get(name);
    if (!m) this.progress.set(name, (m = new Map<string, LayerProgress>()));
    m.set(layer.digest, layer);
    this.topic.publish({ type: 'progress', name, layer });
  }

  private async finishReady(name: string, info: DiskInfo): Promise<void> {
    await this.timePublish(() =>
      this.publishLock.run(() => {
        this.update(name, {
          status: 'ready',
          format: info.format,
          size_bytes: info.size_bytes,
          error: null,
          error_code: null,
        });
        return Promise.resolve();
      }),
    );
  }

  private async timePublish<T>(fn: () => Promise<T>): Promise<T> {
    const end = this.metrics.publishLockSeconds.startTimer();
    try {
      return await fn();
    } finally {
      end();
    }
  }

  /** Keep digests from garbage collection while a job uses them. */
  private pin(digests: readonly string[]): () => void {
    for (const d of digests) this.pins.set(d, (this.pins.get(d) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const d of digests) {
        const n = (this.pins.get(d) ?? 1) - 1;
        if (n <= 0) this.pins.delete(d);
        else this.pins.set(d, n);
      }
    };
  }

  private async diskFormat(): Promise<ImageFormat> {
    this.formatSupport ??= probeDiskFormats();
    return chooseFormat(this.o.config.format, await this.formatSupport);
  }

  /**
   * Resolve when the image is ready; reject with the image's real failure.
   * Subscribes before reading the status, so a change between the read and
   * the wait cannot be missed. No polling.
   */
  async waitForReady(
    nameOrDigest: string,
    options: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<Image> {
    const name = this.resolveName(nameOrDigest);
    let unsubscribe: () => void = () => undefined;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      return await new Promise<Image>((resolve, reject) => {
        const settle = (image: Image | undefined): boolean => {
          if (!image) {
            reject(
              new VesselError(
                'image_not_found',
                `image "${name}" was deleted while waiting for it`,
              ),
            );
            return true;
          }
          if (image.status === 'ready') {
            resolve(image);
            return true;
          }
          if (image.status === 'failed') {
            reject(failureOf(name, image));
            return true;
          }
          return false;
        };
        unsubscribe = this.topic.subscribe((e) => {
          if (e.name !== name) return;
          if (e.type === 'deleted') settle(undefined);
          else if (e.type === 'status') settle(e.image);
        });
        const current = this.o.repo.get(name);
        if (settle(current ? this.view(current) : undefined)) return;
        if (options.timeoutMs !== undefined) {
          timer = setTimeout(
            () =>
              reject(
                new VesselError(
                  'timeout',
                  `image "${name}" was not ready within ${options.timeoutMs} ms`,
                ),
              ),
            options.timeoutMs,
          );
        }
        if (options.signal) {
          onAbort = () =>
            reject(new VesselError('timeout', `waiting for image "${name}" was cancelled`));
          if (options.signal.aborted) onAbort();
          else options.signal.addEventListener('abort', onAbort, { once: true });
        }
      });
    } finally {
      unsubscribe();
      if (timer) clearTimeout(timer);
      if (onAbort) options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Delete an image record; its disk goes too when no other record uses it. */
  async delete(nameOrDigest: string): Promise<void> {
    const row = this.row(nameOrDigest);
    if (ACTIVE_STATUSES.has(row.status)) {
      throw new VesselError(
        'image_in_use',
        `image "${row.name}" is ${row.status}; wait for it to finish before deleting it`,
      );
    }
    let orphan: string | undefined;
    await this.timePublish(() =>
      this.publishLock.run(() => {
        this.o.repo.delete(row.name);
        if (
          row.digest &&
          this.o.repo.byDigest(row.digest).length === 0 &&
          !this.pins.has(row.digest) &&
          !(this.o.inUse?.().has(row.digest) ?? false)
        )
          orphan = row.digest;
        return Promise.resolve();
      }),
    );
    this.topic.publish({ type: 'deleted', name: row.name });
    if (orphan) await this.disks.remove(orphan);
  }

  /** Remove blobs and disks that no image record (or running job) references. */
  async gc(): Promise<GcResult> {
    return this.timePublish(() =>
      this.publishLock.run(() =>
        collectGarbage({
          repo: this.o.repo,
          blobs: this.blobs,
          disks: this.disks,
          pinned: new Set([
            ...this.pins.keys(),
            ...this.blobs.inflightDigests(),
            ...this.disks.building(),
            ...(this.o.inUse?.() ?? []),
            ...this.keepers.flatMap((k) => [...k()]),
          ]),
          logger: this.log,
        }),
      ),
    );
  }

  /** Status counts, for /resources and metrics. */
  summary(): Record<ImageStatus, number> {
    const out: Record<ImageStatus, number> = {
      pending: 0,
      pulling: 0,
      converting: 0,
      ready: 0,
      failed: 0,
    };
    for (const r of this.o.repo.list()) out[r.status]++;
    return out;
  }
}
