/**
 * Standby: pause, write the VM state to disk, end the VMM → `Standby`.
 * Restore: start the VMM from that state, resume, wait for the agent →
 * `Running`, with memory (running processes, tmpfs) intact.
 */
import fs from 'node:fs/promises';
import { VesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import { boot } from './boot.js';
import type { InstanceCore } from './core.js';
import { identityChanged, identityOf, reconfigureGuest } from './identity.js';
import { reallocateAddress, releaseAddress } from './network-bridge.js';
import { pauseLocked } from './power.js';
import { connectGuest, onExit } from './runtime.js';
import {
  checkRestorable,
  memorySnapshotMeta,
  readSnapshotMeta,
  snapshotPaths,
  writeSnapshotMeta,
} from './snapshot.js';
import { assertTransition, type InstanceState } from './state.js';

export async function standby(core: InstanceCore, id: string): Promise<void> {
  await core.locked(id, async () => {
    const before = core.row(id).state as InstanceState;
    if (before === 'Running') await pauseLocked(core, id);
    const cur = core.row(id);
    assertTransition(cur.name, cur.state as InstanceState, 'Standby');
    const rt = core.runtime(cur);
    const snap = snapshotPaths(core.o.paths.instanceDir(id));
    await fs.rm(snap.dir, { recursive: true, force: true });
    await ensureDir(snap.dir, 0o700);
    try {
      await rt.handle.snapshot(snap.state);
      const caps = await core.o.hypervisor.capabilities();
      await writeSnapshotMeta(snap.meta, await memorySnapshotMeta(cur, caps.version, snap.state));
    } catch (err) {
      // The VM is still there, paused: nothing is lost; the half-written snapshot goes.
      await fs.rm(snap.dir, { recursive: true, force: true });
      throw err;
    }
    rt.ending = 'standby';
    await onExit(core, id, rt, await rt.handle.stop({ graceful: false }));
    core.transition(id, 'Standby', {
      pid: null,
      sockets: null,
      stopped_at: new Date().toISOString(),
    });
    core.emit('standby', core.row(id), { old_state: before });
  });
}

export async function restore(core: InstanceCore, id: string): Promise<void> {
  await core.locked(id, async () => {
    const cur = core.row(id);
    assertTransition(cur.name, cur.state as InstanceState, 'Paused');
    if (cur.state !== 'Standby') {
      throw new VesselError('conflict', `instance "${cur.name}" is ${cur.state}, not Standby`);
    }
    const snap = snapshotPaths(core.o.paths.instanceDir(id));
    const meta = await readSnapshotMeta(snap.meta, cur.name);
    const caps = await core.o.hypervisor.capabilities();
    checkRestorable(cur.name, meta, {
      hypervisor: cur.hypervisor,
      vmm_version: caps.version,
      kernel: cur.kernel,
      accel: await core.o.accel(),
      vcpus: cur.vcpus,
      memory_mib: cur.memory_mib,
    });
    // A fork, or a rollback to a named snapshot, has no address yet in bridge mode.
    await reallocateAddress(core, id);
    const rt = await boot(core, id, { restoreFrom: snap.state });
    try {
      await rt.handle.resume();
    } catch (err) {
      rt.ending = 'stop';
      await rt.handle.kill();
      throw err;
    }
    // Running means exec works: wait for the agent (it was running when the state was saved).
    await connectGuest(core, id, rt);
    // The saved memory believes another hostname or address (a fork, a new address): tell it.
    if (identityChanged(meta.identity, identityOf(core.row(id)))) {
      try {
        await reconfigureGuest(core, id, rt);
      } catch (err) {
        // Never run on with another instance's identity; the saved state stays for another try.
        rt.ending = 'standby';
        await onExit(core, id, rt, await rt.handle.kill());
        core.transition(id, 'Standby', { pid: null, sockets: null });
        releaseAddress(core, id);
        throw err;
      }
    }
    core.transition(id, 'Running', {
      state_error: rt.guest ? null : 'the guest agent did not answer after the restore',
    });
    // The disk moves on from here: the snapshot no longer matches it.
    await fs.rm(snap.dir, { recursive: true, force: true });
    core.emit('restore', core.row(id), { old_state: 'Standby' });
  });
}
