/**
 * Named snapshots (hypeman's `/instances/{id}/snapshots`, `/snapshots`):
 * records in the store, files under `<data>/snapshots/<id>/`. Each operation
 * is its own module (snapshot-create, snapshot-restore, snapshot-fork); this
 * is the public face, plus the list filters, delete, the walk to a target
 * state, and compression off the request path.
 */
import fs from 'node:fs/promises';
import { VesselError, errorMessage } from '../core/errors.js';
import { KeyedMutex } from '../core/sync.js';
import { matchTags, type Tags } from '../core/tags.js';
import type {
  Snapshot,
  SnapshotCompressionConfig,
  SnapshotKind,
  SnapshotTargetState,
} from '../core/wire-snapshots.js';
import type { SnapshotRow, SnapshotsRepo } from '../store/index.js';
import type { InstanceCore } from './core.js';
import { createSnapshot } from './snapshot-create.js';
import {
  checkLevel,
  compressFile,
  compressedState,
  defaultLevel,
  dirBytes,
  exists,
  namedSnapshotPaths,
  type CompressionAlgorithm,
} from './snapshot-files.js';
import { forkFromSnapshot } from './snapshot-fork.js';
import { rollback } from './snapshot-restore.js';
import type { Instance } from './types.js';

/** The manager operations the walk to a target state uses. */
export interface SnapshotWalkOps {
  get(id: string): Instance;
  start(id: string): Promise<Instance>;
  stop(id: string): Promise<Instance>;
  standby(id: string): Promise<Instance>;
  restore(id: string): Promise<Instance>;
  waitRunning(id: string): Promise<void>;
}

export interface SnapshotFilter {
  readonly instance?: string;
  readonly kind?: SnapshotKind;
  readonly name?: string;
  readonly tags?: Tags;
}

export function snapshotView(row: SnapshotRow): Snapshot {
  return {
    id: row.id,
    name: row.name,
    kind: row.kind,
    ...(row.tags ? { tags: { ...row.tags } } : {}),
    source_instance_id: row.source_instance_id,
    source_instance_name: row.source_instance_name,
    source_hypervisor: row.hypervisor,
    source_instance_exists: row.instance_id !== null,
    created_at: row.created_at,
    size_bytes: row.size_bytes,
    vmm_version: row.vmm_version,
    kernel: row.kernel,
    compression_state: row.compression_state,
    compression_error: row.compression_error,
    ...(row.compression
      ? {
          compression: {
            enabled: true,
            algorithm: row.compression,
            level: row.compression_level ?? defaultLevel(row.compression),
          },
        }
      : {}),
    compressed_size_bytes: row.compressed_size_bytes,
    uncompressed_size_bytes: row.uncompressed_size_bytes,
  };
}

/** hypeman's compression config → what to do (null: none). */
export function compressionChoice(
  c: SnapshotCompressionConfig | undefined,
): { algorithm: CompressionAlgorithm; level: number } | null {
  if (!c?.enabled) return null;
  const algorithm = c.algorithm ?? 'zstd';
  const level = c.level ?? defaultLevel(algorithm);
  checkLevel(algorithm, level);
  return { algorithm, level };
}

/** The state a restore or fork ends in: the request's, else by kind (hypeman's defaults). */
export function defaultTarget(
  kind: SnapshotKind,
  asked?: SnapshotTargetState,
): SnapshotTargetState {
  return asked ?? (kind === 'Standby' ? 'Running' : 'Stopped');
}

export class Snapshots {
  private readonly core: InstanceCore;
  private readonly repo: SnapshotsRepo | undefined;
  private readonly ops: SnapshotWalkOps;
  /** Per snapshot: compression vs. readers of the state file vs. delete. */
  private readonly files = new KeyedMutex();
  private readonly queue: string[] = [];
  private draining: Promise<void> | undefined;

  constructor(core: InstanceCore, repo: SnapshotsRepo | undefined, ops: SnapshotWalkOps) {
    this.core = core;
    this.repo = repo;
    this.ops = ops;
  }

  private store(): SnapshotsRepo {
    if (!this.repo) throw new VesselError('internal', 'named snapshots are not configured');
    return this.repo;
  }

  /** Daemon start: compressions that were queued or running when the last daemon ended. */
  init(): void {
    if (!this.repo) return;
    for (const s of this.repo.list()) {
      if (s.compression_state === 'compressing') this.schedule(s.id);
    }
  }

  list(filter: SnapshotFilter = {}): Snapshot[] {
    if (!this.repo) return [];
    // A live instance by id or name; a deleted source by the id (or name) it had.
    const want = filter.instance;
    const live =
      want === undefined ? undefined : (this.core.repo.get(want) ?? this.core.repo.byName(want));
    return this.repo
      .list()
      .filter(
        (s) =>
          want === undefined ||
          (live
            ? s.source_instance_id === live.id
            : s.source_instance_id === want || s.source_instance_name === want),
      )
      .filter((s) => filter.kind === undefined || s.kind === filter.kind)
      .filter((s) => filter.name === undefined || s.name === filter.name)
      .filter((s) => matchTags(s.tags, filter.tags))
      .map(snapshotView);
  }

  get(idOrName: string): Snapshot {
    return snapshotView(this.row(idOrName));
  }

  /** By id, or by name when exactly one snapshot has it. */
  row(idOrName: string): SnapshotRow {
    const repo = this.store();
    const byId = repo.get(idOrName);
    if (byId) return byId;
    const named = repo.byName(idOrName);
    if (named.length === 1) return named[0]!;
    if (named.length > 1) {
      throw new VesselError(
        'conflict',
        `${named.length} snapshots are named "${idOrName}" (of instances ${named.map((s) => s.source_instance_name).join(', ')}); use the id`,
        { details: { snapshot: idOrName, ids: named.map((s) => s.id) } },
      );
    }
    throw new VesselError('not_found', `snapshot "${idOrName}" not found`, {
      details: { snapshot: idOrName },
    });
  }

  async create(
    instance: string,
    req: {
      kind: SnapshotKind;
      name?: string;
      tags?: Tags;
      compression?: SnapshotCompressionConfig;
    },
  ): Promise<Snapshot> {
    const compression = compressionChoice(req.compression);
    const row = await createSnapshot(this.core, this.store(), instance, {
      kind: req.kind,
      ...(req.name !== undefined ? { name: req.name } : {}),
      ...(req.tags ? { tags: req.tags } : {}),
      ...(compression ? { compression } : {}),
    });
    if (row.compression_state === 'compressing') this.schedule(row.id);
    return snapshotView(row);
  }

  async delete(idOrName: string): Promise<void> {
    const { id } = this.row(idOrName);
    await this.files.run(id, async () => {
      this.store().delete(id);
      await fs.rm(namedSnapshotPaths(this.core.o.paths.dataDir, id).dir, {
        recursive: true,
        force: true,
      });
    });
  }

  /** Roll `instance` back to snapshot `idOrName`, then walk to `target`. */
  async restore(
    instance: string,
    idOrName: string,
    asked?: SnapshotTargetState,
  ): Promise<Instance> {
    const snap = this.row(idOrName);
    const target = defaultTarget(snap.kind, asked);
    const { id } = this.core.row(instance);
    await this.files.run(snap.id, () => rollback(this.core, snap, id));
    return this.walk(id, target);
  }

  /** A new instance from snapshot `idOrName`, walked to `target`. */
  async fork(
    idOrName: string,
    req: { name?: string; target_state?: SnapshotTargetState; target_hypervisor?: string },
  ): Promise<Instance> {
    const snap = this.row(idOrName);
    const target = defaultTarget(snap.kind, req.target_state);
    const row = await this.files.run(snap.id, () =>
      forkFromSnapshot(this.core, snap, req.name === undefined ? {} : { name: req.name }),
    );
    return this.walk(row.id, target);
  }

  /**
   * The instance is being deleted: its snapshots stay (unlinked), unless
   * `remove`, then they go with it.
   */
  async instanceDeleted(instanceId: string, remove: boolean): Promise<void> {
    if (!this.repo) return;
    if (remove) {
      for (const s of this.repo.list().filter((r) => r.source_instance_id === instanceId))
        await this.delete(s.id);
    } else {
      this.repo.unlinkInstance(instanceId);
    }
  }

  /** From Stopped or Standby to `target`, with the manager's own operations. */
  private async walk(id: string, target: SnapshotTargetState): Promise<Instance> {
    const ops = this.ops;
    const now = ops.get(id);
    if (now.state === target) return now;
    if (now.state === 'Standby') return target === 'Running' ? ops.restore(id) : ops.stop(id);
    const started = await ops.start(id);
    await ops.waitRunning(id);
    if (target === 'Running') return ops.get(started.id);
    return ops.standby(id);
  }

  private schedule(id: string): void {
    this.queue.push(id);
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
    });
  }

  /** Compress queued snapshots one at a time, each under its files lock. */
  private async drain(): Promise<void> {
    for (let id = this.queue.shift(); id !== undefined; id = this.queue.shift()) {
      const sid = id;
      await this.files.run(sid, () => this.compress(sid));
    }
  }

  private async compress(id: string): Promise<void> {
    const repo = this.store();
    const first = repo.get(id);
    if (!first || first.compression === null) return;
    const algo = first.compression;
    const p = namedSnapshotPaths(this.core.o.paths.dataDir, id);
    const out = compressedState(p.state, algo);
    try {
      if (!(await exists(out)) || (await exists(p.state))) {
        await compressFile(algo, first.compression_level ?? defaultLevel(algo), p.state, out);
      }
      await fs.rm(p.state, { force: true });
      const row = repo.get(id);
      if (!row) return;
      repo.update({
        ...row,
        compression_state: 'compressed',
        compressed_size_bytes: (await fs.stat(out)).size,
        size_bytes: await dirBytes(p.dir),
      });
    } catch (err) {
      await fs.rm(out, { force: true });
      const row = repo.get(id);
      if (row)
        repo.update({ ...row, compression_state: 'error', compression_error: errorMessage(err) });
      this.core.log.warn({ snapshot: id, err: errorMessage(err) }, 'snapshot compression failed');
    }
  }
}
