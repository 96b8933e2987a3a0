/**
 * A new instance from a named snapshot: the snapshot's disk (a reflink or
 * sparse copy) and, for a `Standby` snapshot, its memory state (decompressed
 * first when compressed), under a new id, name, guest context id, MAC and — in
 * bridge mode — address (allocated when it boots or is restored; the restore
 * tells the resumed guest its new hostname and address, identity.ts). The
 * fork is left Stopped or Standby; the walk to the target state is the
 * caller's (snapshots.ts).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { VesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import type { InstanceRow, SnapshotRow } from '../store/index.js';
import type { InstanceCore } from './core.js';
import { forkNetwork } from './network.js';
import { attachedVolumes } from './snapshot-create.js';
import { withoutAddress } from './network-bridge.js';
import { snapshotPaths, writeSnapshotMeta } from './snapshot.js';
import { copyImage, materializeState, namedSnapshotPaths } from './snapshot-files.js';
import { checkSnapshotRestorable } from './snapshot-restore.js';

export async function forkFromSnapshot(
  core: InstanceCore,
  snap: SnapshotRow,
  req: { name?: string },
): Promise<InstanceRow> {
  const src = snap.source as unknown as InstanceRow;
  if (attachedVolumes(snap.source) > 0) {
    // The volumes' contents moved on since (and the source may be gone): a fork cannot get
    // the attachments the snapshot's memory and disk expect.
    throw new VesselError(
      'conflict',
      `snapshot ${snap.id} is of an instance with volumes attached; forking it is not supported (detach the volumes before taking the snapshot)`,
      { details: { snapshot: snap.id } },
    );
  }
  core.checkName(req.name);
  const id = randomBytes(8).toString('hex');
  const base = (snap.name ?? src.name).slice(0, 50);
  const name = req.name ?? `${base}-fork-${id.slice(0, 4)}`;
  core.assertNameFree(name); // early answer; the reservation checks again
  const meta =
    snap.kind === 'Standby' ? await checkSnapshotRestorable(core, snap, { ...src, name }) : null;
  const p = namedSnapshotPaths(core.o.paths.dataDir, snap.id);
  const dir = core.o.paths.instanceDir(id);
  await ensureDir(dir, 0o700);
  try {
    await copyImage(p.disk, `${dir}/overlay.ext4`);
    if (meta) {
      const to = snapshotPaths(dir);
      await materializeState(p, snap.compression, to.state);
      await writeSnapshotMeta(to.meta, meta);
    }
    const guest = withoutAddress({ ...forkNetwork(src.guest, id, false), hostname: name });
    const now = new Date().toISOString();
    const row = await core.reserve(() => {
      core.assertNameFree(name);
      const r: InstanceRow = {
        ...src,
        id,
        name,
        state: meta ? 'Standby' : 'Stopped',
        state_error: null,
        guest,
        guest_ip: null,
        pid: null,
        sockets: null,
        exit_code: null,
        exit_message: null,
        created_at: now,
        started_at: null,
        stopped_at: now,
        cid: core.nextCid(),
        source_id: src.id,
        expires_at: null,
        phases: null,
      };
      core.repo.insert(r);
      return r;
    });
    core.emit('fork', row, { old_state: null, source_id: src.id });
    return row;
  } catch (err) {
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
}
