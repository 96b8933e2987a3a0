import type { Config } from '../core/config.js';
import { VesselError } from '../core/errors.js';
import type { Semaphore } from '../core/sync.js';
import type { ImageRow } from '../store/index.js';
import type { BlobStore } from './blob-store.js';
import { loadCredentials } from './credentials.js';
import type { DiskInfo } from './disk-builder.js';
import { parseImageConfig } from './image-config.js';
import {
  formatPlatform,
  hostPlatform,
  parseManifest,
  selectPlatform,
  type Descriptor,
  type ImageManifest,
} from './manifest.js';
import type { ImageMetrics } from './metrics.js';
import { manifestReference, type ImageReference } from './reference.js';
import { RegistryClient } from './registry-client.js';
import type { LayerProgress } from './types.js';

export interface PullContext {
  readonly ref: ImageReference;
  readonly name: string;
  readonly blobs: BlobStore;
  readonly downloads: Semaphore;
  readonly config: Config['images'];
  readonly credentialsFile: string;
  readonly metrics: ImageMetrics;
  readonly pin: (digests: readonly string[]) => () => void;
  readonly onResolved: (
    patch: Pick<ImageRow, 'digest' | 'platform' | 'config' | 'layers' | 'config_digest'>,
  ) => void;
  readonly onProgress: (layer: LayerProgress) => void;
  readonly published: (digest: string) => Promise<DiskInfo | undefined>;
  readonly convert: (
    digest: string,
    layers: readonly Descriptor[],
    diffIds: readonly string[],
  ) => Promise<DiskInfo>;
  readonly finish: (info: DiskInfo) => Promise<void>;
}

/**
 * Pull one image: resolve the manifest (through an index to the host
 * platform), fetch the config, download missing layers concurrently into the
 * shared blob store, then hand over to conversion. A digest whose disk is
 * already published goes straight to ready (warm re-pull).
 */
export async function pullFromRegistry(ctx: PullContext): Promise<void> {
  const { ref, name, blobs } = ctx;
  const t0 = Date.now();
  const client = new RegistryClient(ref.registry, ref.repository, {
    insecure: ctx.config.insecure_registries,
    credentials: await loadCredentials(ctx.credentialsFile),
  });

  let fetched = await client.manifest(manifestReference(ref));
  let parsed = parseManifest(fetched.body, fetched.contentType, `image ${name}`);
  let platform: string | null = null;
  if (parsed.kind === 'index') {
    const chosen = selectPlatform(parsed, hostPlatform(), `image ${name}`);
    platform = chosen.platform ? formatPlatform(chosen.platform) : null;
    fetched = await client.manifest(chosen.digest);
    parsed = parseManifest(fetched.body, fetched.contentType, `image ${name}@${chosen.digest}`);
    if (parsed.kind !== 'manifest') {
      throw new VesselError(
        'registry_protocol',
        `image ${name}: index entry ${chosen.digest} is itself an index`,
      );
    }
  }
  const manifest: ImageManifest = parsed;
  const digest = fetched.digest;
  const unpin = ctx.pin([digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]);
  try {
    await blobs.put(fetched.body);
    await blobs.ensure(manifest.config.digest, manifest.config.size, () =>
      client.blob(manifest.config.digest),
    );
    const config = parseImageConfig(await blobs.read(manifest.config.digest), `image ${name}`);
    platform ??= config.os && config.architecture ? `${config.os}/${config.architecture}` : null;
    ctx.onResolved({
      digest,
      platform,
      config: config.runtime,
      layers: manifest.layers.map((l) => l.digest),
      config_digest: manifest.config.digest,
    });
    ctx.metrics.pullSeconds.observe({ phase: 'resolve' }, (Date.now() - t0) / 1000);

    const existing = await ctx.published(digest);
    if (existing) {
      await ctx.finish(existing);
      return;
    }

    const t1 = Date.now();
    await Promise.all(
      manifest.layers.map((layer) =>
        ctx.downloads.run(async () => {
          const had = await blobs.has(layer.digest);
          await blobs.ensure(
            layer.digest,
            layer.size,
            () => client.blob(layer.digest),
            (current, total) =>
              ctx.onProgress({ digest: layer.digest, current, total: total ?? null }),
          );
          if (!had) ctx.metrics.blobBytes.inc(layer.size);
        }),
      ),
    );
    ctx.metrics.pullSeconds.observe({ phase: 'download' }, (Date.now() - t1) / 1000);

    const t2 = Date.now();
    const info = await ctx.convert(digest, manifest.layers, config.diffIds);
    ctx.metrics.pullSeconds.observe({ phase: 'convert' }, (Date.now() - t2) / 1000);
    await ctx.finish(info);
  } finally {
    unpin();
  }
}
