import type { Logger } from '../core/logger.js';
import type { ImagesRepo } from '../store/index.js';
import type { BlobStore } from './blob-store.js';
import type { DiskBuilder } from './disk-builder.js';
import { parseManifest } from './manifest.js';

export interface GcResult {
  readonly removed_blobs: number;
  readonly removed_disks: number;
  readonly freed_bytes: number;
}

export interface GcOptions {
  readonly repo: ImagesRepo;
  readonly blobs: BlobStore;
  readonly disks: DiskBuilder;
  /** Digests a running job uses: never collected. */
  readonly pinned: ReadonlySet<string>;
  readonly logger: Logger;
}

/**
 * Mark and sweep. Roots are the manifest digests of every image record (any
 * status) plus pinned digests; a root keeps its manifest blob, config blob,
 * layer blobs and published disk. Everything else goes. The caller holds the
 * publish lock, so no disk is published or record written meanwhile.
 */
export async function collectGarbage(o: GcOptions): Promise<GcResult> {
  const roots = new Set([...o.repo.referencedDigests(), ...o.pinned]);
  const keep = new Set(roots);
  for (const digest of roots) {
    if (!(await o.blobs.has(digest))) continue;
    try {
      const m = parseManifest(await o.blobs.read(digest), undefined, `blob ${digest}`);
      if (m.kind === 'manifest') {
        keep.add(m.config.digest);
        for (const l of m.layers) keep.add(l.digest);
      }
    } catch (err) {
      // A pinned layer or config is not a manifest; that is expected.
      o.logger.debug({ digest, err }, 'gc: root is not a manifest');
    }
  }
  let removedBlobs = 0;
  let removedDisks = 0;
  let freed = 0;
  for (const blob of await o.blobs.list()) {
    if (keep.has(blob.digest)) continue;
    await o.blobs.remove(blob.digest);
    removedBlobs++;
    freed += blob.size;
  }
  for (const digest of await o.disks.list()) {
    if (keep.has(digest)) continue;
    const info = await o.disks.published(digest);
    await o.disks.remove(digest);
    removedDisks++;
    freed += info?.size_bytes ?? 0;
  }
  o.logger.info({ removedBlobs, removedDisks, freed }, 'garbage collected');
  return { removed_blobs: removedBlobs, removed_disks: removedDisks, freed_bytes: freed };
}
