/**
 * Fork a Stopped or Standby instance: a new instance with its own copy of
 * the writable disk (and of the snapshot), a new id, name and resources.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { VesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import { run } from '../core/process.js';
import type { InstanceRow } from '../store/index.js';
import type { InstanceCore } from './core.js';
import { forkNetwork, hostNetwork } from './network.js';
import { forkAddress } from './network-bridge.js';
import { snapshotPaths } from './snapshot.js';
import type { Instance } from './types.js';
import { view } from './view.js';
import { forkVolumeAttachments, forkVolumeDisks } from './volumes.js';

/** Copy a disk image: a reflink where the filesystem has them, else a (sparse) copy. */
async function copyDisk(from: string, to: string, sparse: boolean): Promise<void> {
  await run('cp', ['--reflink=auto', ...(sparse ? ['--sparse=always'] : []), '--', from, to]);
}

export async function fork(
  core: InstanceCore,
  idOrName: string,
  req: { name?: string } = {},
): Promise<Instance> {
  core.checkName(req.name);
  const src = core.row(idOrName);
  const id = randomBytes(8).toString('hex');
  const name = req.name ?? `${src.name.slice(0, 50)}-fork-${id.slice(0, 4)}`;
  core.assertNameFree(name); // early answer; the reservation checks again
  const dir = core.o.paths.instanceDir(id);
  // The source's lock keeps it from starting (and its disk from changing) during the copy.
  const forked = await core.locked(src.id, async () => {
    const cur = core.row(src.id);
    if (cur.state !== 'Stopped' && cur.state !== 'Standby') {
      throw new VesselError(
        'conflict',
        `instance "${cur.name}" is ${cur.state}; fork needs it Stopped or Standby`,
        { details: { instance: cur.name, state: cur.state } },
      );
    }
    const srcDir = core.o.paths.instanceDir(src.id);
    await ensureDir(dir, 0o700);
    try {
      // A read-write volume cannot go to two instances: refused here, before any copy.
      await forkVolumeDisks(core, cur.id, id);
      await copyDisk(`${srcDir}/overlay.ext4`, `${dir}/overlay.ext4`, true);
      if (cur.state === 'Standby') {
        const from = snapshotPaths(srcDir);
        const to = snapshotPaths(dir);
        await ensureDir(to.dir, 0o700);
        await copyDisk(from.state, to.state, false);
        await fs.copyFile(from.meta, to.meta);
      }
      // Its own MAC even from Standby: the restore tells the guest (identity.ts).
      const guest = { ...forkNetwork(cur.guest, id, false), hostname: name };
      return await core.reserve(() => {
        core.assertNameFree(name);
        const net = forkAddress(core, cur.name, guest, hostNetwork(guest), cur.state === 'Standby');
        const r: InstanceRow = {
          ...cur,
          id,
          name,
          guest: net.guest,
          guest_ip: net.ip,
          pid: null,
          sockets: null,
          state_error: null,
          created_at: new Date().toISOString(),
          cid: core.nextCid(),
          source_id: cur.id,
        };
        core.repo.insert(r);
        forkVolumeAttachments(core, cur.id, id);
        return r;
      });
    } catch (err) {
      await fs.rm(dir, { recursive: true, force: true });
      throw err;
    }
  });
  core.emit('fork', forked, { old_state: null, source_id: src.id });
  return view(forked);
}
