/**
 * Roll an instance back to one of its named snapshots. Everything that can
 * fail without loss happens first (the restore check, copying and
 * decompressing into staging files next to the instance); only then is the
 * VM ended and the staged files renamed into place. A `Stopped` snapshot
 * leaves the instance Stopped; a `Standby` one leaves it in Standby with the
 * snapshot's memory, ready for the ordinary restore. The walk to the
 * requested target state is the caller's (snapshots.ts).
 */
import fs from 'node:fs/promises';
import { VesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import type { SnapshotRow } from '../store/index.js';
import type { InstanceCore } from './core.js';
import { onExit } from './runtime.js';
import {
  checkRestorable,
  readSnapshotMeta,
  snapshotPaths,
  writeSnapshotMeta,
  type SnapshotMeta,
} from './snapshot.js';
import { copyImage, materializeState, namedSnapshotPaths } from './snapshot-files.js';
import { attachedVolumes } from './snapshot-create.js';
import type { InstanceState } from './state.js';

/** Refuse a memory snapshot that would not load on what Vessel would start now. */
export async function checkSnapshotRestorable(
  core: InstanceCore,
  snap: SnapshotRow,
  target: { name: string; hypervisor: string; kernel: string; vcpus: number; memory_mib: number },
): Promise<SnapshotMeta> {
  const p = namedSnapshotPaths(core.o.paths.dataDir, snap.id);
  const meta = await readSnapshotMeta(p.meta, target.name);
  // The record is what the API shows; the file is what was written: both must match.
  const saved: SnapshotMeta = { ...meta, vmm_version: snap.vmm_version, kernel: snap.kernel };
  const caps = await core.o.hypervisor.capabilities();
  checkRestorable(target.name, saved, {
    hypervisor: target.hypervisor,
    vmm_version: caps.version,
    kernel: target.kernel,
    accel: await core.o.accel(),
    vcpus: target.vcpus,
    memory_mib: target.memory_mib,
  });
  return meta;
}

export async function rollback(
  core: InstanceCore,
  snap: SnapshotRow,
  idOrName: string,
): Promise<void> {
  const inst = core.row(idOrName);
  if (snap.source_instance_id !== inst.id) {
    throw new VesselError(
      'conflict',
      `snapshot ${snap.id} was taken of instance "${snap.source_instance_name}", not "${inst.name}"; fork it into a new instance instead`,
      { details: { snapshot: snap.id, instance: inst.name } },
    );
  }
  if (snap.kind === 'Standby' && attachedVolumes(snap.source) > 0) {
    // The saved memory caches the volumes as they were; their disks moved on since.
    throw new VesselError(
      'conflict',
      `snapshot ${snap.id} holds the memory of an instance with volumes attached; restoring it would not match the volumes' current contents (a Stopped snapshot can be restored)`,
      { details: { snapshot: snap.id, instance: inst.name } },
    );
  }
  const p = namedSnapshotPaths(core.o.paths.dataDir, snap.id);
  await core.locked(inst.id, async () => {
    const cur = core.row(inst.id);
    const meta = snap.kind === 'Standby' ? await checkSnapshotRestorable(core, snap, cur) : null;
    const dir = core.o.paths.instanceDir(cur.id);
    const stagedDisk = `${dir}/overlay.ext4.rollback`;
    const stagedState = `${dir}/state.bin.rollback`;
    try {
      await copyImage(p.disk, stagedDisk);
      if (meta) await materializeState(p, snap.compression, stagedState);
      // Past this point the instance's current state is given up.
      const before = cur.state as InstanceState;
      const rt = core.runtimes.get(cur.id);
      if (rt) {
        rt.ending = 'stop';
        await onExit(core, cur.id, rt, await rt.handle.kill());
      }
      const standby = snapshotPaths(dir);
      await fs.rm(standby.dir, { recursive: true, force: true });
      if (core.row(cur.id).state !== 'Stopped') core.settleStopped(cur.id, null);
      await fs.rename(stagedDisk, `${dir}/overlay.ext4`);
      if (meta) {
        await ensureDir(standby.dir, 0o700);
        await fs.rename(stagedState, standby.state);
        await writeSnapshotMeta(standby.meta, meta);
        // The files a standby leaves are in place: the record says so (not a VM hop).
        const row = core.row(cur.id);
        core.save({ ...row, state: 'Standby', state_error: null }, 'Stopped');
      }
      core.emit('restore', core.row(cur.id), { old_state: before });
    } finally {
      await fs.rm(stagedDisk, { force: true });
      await fs.rm(stagedState, { force: true });
    }
  });
}
