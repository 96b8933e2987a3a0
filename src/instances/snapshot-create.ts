/**
 * Take a named snapshot of an instance: `Stopped` (the writable disk of a
 * Stopped instance) or `Standby` (memory and disk: a Running or Paused
 * instance is paused, its state saved, its disk copied while paused, and it
 * runs on; a Standby instance's saved state is copied).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errorMessage, isVesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import type { SnapshotRow, SnapshotsRepo } from '../store/index.js';
import type { InstanceRow } from '../store/index.js';
import { fileSize } from './boot.js';
import type { InstanceCore } from './core.js';
import { pauseLocked } from './power.js';
import { memorySnapshotMeta, snapshotPaths, writeSnapshotMeta } from './snapshot.js';
import {
  copyImage,
  dirBytes,
  namedSnapshotPaths,
  type CompressionAlgorithm,
} from './snapshot-files.js';
import type { InstanceState } from './state.js';

export interface CreateSnapshotInput {
  readonly kind: 'Standby' | 'Stopped';
  readonly name?: string;
  readonly tags?: Readonly<Record<string, string>>;
  /** Compress the memory state after the snapshot is taken (off the request path). */
  readonly compression?: { readonly algorithm: CompressionAlgorithm; readonly level: number };
}

const MEMORY_SOURCES: ReadonlySet<string> = new Set(['Running', 'Paused', 'Standby']);

/** Volume attachments the source had when the snapshot was taken (see sourceRecord). */
export function attachedVolumes(source: Record<string, unknown>): number {
  return Array.isArray(source.volumes) ? source.volumes.length : 0;
}

/**
 * The part of an instance record a fork or restore needs (no live-VM fields),
 * plus the volume attachments it had (kept in their own table, so recorded here).
 */
export function sourceRecord(core: InstanceCore, row: InstanceRow): Record<string, unknown> {
  const { pid: _pid, sockets: _sockets, phases: _phases, ...rest } = row;
  const volumes = core.o.volumes?.attachmentsOf(row.id) ?? [];
  return { ...rest, ...(volumes.length > 0 ? { volumes } : {}) };
}

export async function createSnapshot(
  core: InstanceCore,
  repo: SnapshotsRepo,
  idOrName: string,
  req: CreateSnapshotInput,
): Promise<SnapshotRow> {
  const src = core.row(idOrName);
  const id = randomBytes(8).toString('hex');
  const p = namedSnapshotPaths(core.o.paths.dataDir, id);
  return core.locked(src.id, async () => {
    const cur = core.row(src.id);
    const state = cur.state as InstanceState;
    if (req.name !== undefined && repo.bySourceName(cur.id, req.name)) {
      throw new VesselError(
        'already_exists',
        `instance "${cur.name}" already has a snapshot named "${req.name}"`,
        { details: { instance: cur.name, name: req.name } },
      );
    }
    if (req.kind === 'Stopped' && state !== 'Stopped') {
      throw new VesselError(
        'conflict',
        `instance "${cur.name}" is ${state}; a Stopped (disk-only) snapshot needs it Stopped (a Standby snapshot keeps the memory too)`,
        { details: { instance: cur.name, state, kind: req.kind } },
      );
    }
    if (req.kind === 'Standby' && !MEMORY_SOURCES.has(state)) {
      throw new VesselError(
        'conflict',
        `instance "${cur.name}" is ${state}; a Standby (memory) snapshot needs it Running, Paused or Standby`,
        { details: { instance: cur.name, state, kind: req.kind } },
      );
    }
    const instDir = core.o.paths.instanceDir(cur.id);
    await ensureDir(p.dir, 0o700);
    try {
      const caps = await core.o.hypervisor.capabilities();
      if (req.kind === 'Stopped') {
        await copyImage(`${instDir}/overlay.ext4`, p.disk);
      } else if (state === 'Standby') {
        const from = snapshotPaths(instDir);
        await copyImage(from.state, p.state, false);
        await fs.copyFile(from.meta, p.meta);
        await copyImage(`${instDir}/overlay.ext4`, p.disk);
      } else {
        await saveLive(core, cur.id, p.state, `${instDir}/overlay.ext4`, p.disk);
        await writeSnapshotMeta(p.meta, await memorySnapshotMeta(cur, caps.version, p.state));
      }
      const row: SnapshotRow = {
        id,
        name: req.name ?? null,
        kind: req.kind,
        instance_id: cur.id,
        source_instance_id: cur.id,
        source_instance_name: cur.name,
        source: sourceRecord(core, core.row(cur.id)),
        hypervisor: cur.hypervisor,
        vmm_version: req.kind === 'Standby' ? caps.version : null,
        kernel: cur.kernel,
        size_bytes: await dirBytes(p.dir),
        compression: req.kind === 'Standby' ? (req.compression?.algorithm ?? null) : null,
        compression_level: req.kind === 'Standby' ? (req.compression?.level ?? null) : null,
        compression_state: req.kind === 'Standby' && req.compression ? 'compressing' : 'none',
        compression_error: null,
        compressed_size_bytes: null,
        uncompressed_size_bytes: req.kind === 'Standby' ? await fileSize(p.state) : null,
        ...(req.tags ? { tags: req.tags } : {}),
        created_at: new Date().toISOString(),
      };
      repo.insert(row);
      return row;
    } catch (err) {
      const full = await outOfSpace(p.state);
      await fs.rm(p.dir, { recursive: true, force: true });
      throw full ? diskFull(err) : err;
    }
  });
}

/** Under this much room left, a failed write into the data dir is taken as ENOSPC. */
const FULL_BELOW_BYTES = 8 * 1024 * 1024;

/**
 * Whether the filesystem holding `dir` is (nearly) full. The hypervisor reports a failed
 * state save as a broken migration socket, not the ENOSPC the daemon's file writer met
 * (src/vmm/qemu/snapshot.ts), so the room left is the structured fact to go by.
 */
async function outOfSpace(at: string): Promise<boolean> {
  try {
    const s = await fs.statfs(path.dirname(at));
    return s.bavail * s.bsize < FULL_BELOW_BYTES;
  } catch {
    return false;
  }
}

function diskFull(err: unknown): VesselError {
  if (isVesselError(err, 'disk_full')) return err;
  return new VesselError(
    'disk_full',
    `no space left in the data directory for the snapshot: ${errorMessage(err)}`,
    {
      cause: err,
    },
  );
}

/**
 * A live VM: pause (a hop the lifecycle sees), save the state, copy the disk
 * while the guest cannot write, then run again if it was running. Call under
 * the instance's lock.
 */
async function saveLive(
  core: InstanceCore,
  id: string,
  state: string,
  disk: string,
  diskCopy: string,
): Promise<void> {
  const before = core.row(id).state as InstanceState;
  if (before === 'Running') await pauseLocked(core, id);
  const rt = core.runtime(core.row(id));
  try {
    await rt.handle.snapshot(state);
    await copyImage(disk, diskCopy);
  } catch (err) {
    // Classify while the partial files still fill the disk, then free them: the resume
    // below records the state in the store, which needs room too.
    const full = await outOfSpace(state);
    await fs.rm(state, { force: true });
    await fs.rm(diskCopy, { force: true });
    throw full ? diskFull(err) : err;
  } finally {
    if (before === 'Running') {
      await rt.handle.resume();
      core.transition(id, 'Running');
      core.emit('resume', core.row(id), { old_state: 'Paused' });
    }
  }
}
