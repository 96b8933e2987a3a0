/**
 * Volume attachments as instance operations: resolve the mounts of a create
 * request, attach and detach on a Stopped instance (under its lock, the
 * check inside the reservation), and what a boot or a fork needs. The
 * volume records and rules live in src/volumes/.
 */
import fs from 'node:fs/promises';
import { VesselError, errnoCode } from '../core/errors.js';
import { run } from '../core/process.js';
import type {
  BootVolumes,
  ResolvedMount,
  VolumeManager,
  VolumeMountRequest,
} from '../volumes/index.js';
import type { InstanceCore } from './core.js';
import type { GuestConfig } from './guest-config.js';
import type { Instance } from './types.js';
import { view } from './view.js';

function manager(core: InstanceCore): VolumeManager {
  const v = core.o.volumes;
  if (!v) throw new VesselError('invalid_argument', 'volumes are not enabled on this daemon');
  return v;
}

/** The mounts of a create request, resolved (no lock; the reservation checks them again). */
export function resolveMounts(
  core: InstanceCore,
  mounts: readonly VolumeMountRequest[] | undefined,
): ResolvedMount[] {
  if (!mounts || mounts.length === 0) return [];
  return manager(core).resolve(mounts);
}

/** Attach a volume to a Stopped instance (hypeman `POST /instances/{id}/volumes/{volume_id}`). */
export async function attachVolume(
  core: InstanceCore,
  idOrName: string,
  mount: VolumeMountRequest,
): Promise<Instance> {
  const vols = manager(core);
  const { id } = core.row(idOrName);
  const [resolved] = vols.resolve([mount]);
  await core.locked(id, async () => {
    const row = core.row(id);
    assertStopped(row.name, row.state, 'attach a volume');
    // The rule check and the insert in one step of the reservation: two racing attaches, one wins.
    await core.reserve(() => vols.attach(id, [resolved!]));
  });
  core.emit('update', core.row(id));
  return view(core.row(id));
}

/** Detach a volume from a Stopped instance; its private overlay layer goes with it. */
export async function detachVolume(
  core: InstanceCore,
  idOrName: string,
  volumeIdOrName: string,
): Promise<Instance> {
  const vols = manager(core);
  const { id } = core.row(idOrName);
  await core.locked(id, async () => {
    const row = core.row(id);
    assertStopped(row.name, row.state, 'detach a volume');
    await vols.detach(id, volumeIdOrName);
  });
  core.emit('update', core.row(id));
  return view(core.row(id));
}

function assertStopped(name: string, state: string, what: string): void {
  if (state !== 'Stopped') {
    throw new VesselError('conflict', `instance "${name}" is ${state}; ${what} needs it Stopped`, {
      details: { instance: name, state },
    });
  }
}

/** The volume disks of a boot, private upper disks created when missing. */
export async function bootVolumes(core: InstanceCore, id: string): Promise<BootVolumes> {
  const vols = core.o.volumes;
  if (!vols) return { disks: [], guest: [], uppers: [] };
  return vols.prepareBoot(id);
}

/** The config disk document with its `volumes` section (PROTOCOL.md §2). */
export function withVolumes(config: GuestConfig, b: BootVolumes): GuestConfig {
  return b.guest.length === 0 ? config : { ...config, volumes: b.guest };
}

/**
 * Fork, before the copy: refuse a source with a read-write volume
 * (`volume_in_use`), else copy its private upper disks into the fork's
 * directory. Read-only attachments are shared and need no copy.
 */
export async function forkVolumeDisks(
  core: InstanceCore,
  sourceId: string,
  forkId: string,
): Promise<void> {
  const vols = core.o.volumes;
  if (!vols) return;
  for (const c of vols.forkPlan(sourceId, forkId)) {
    try {
      await fs.access(c.from);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') continue; // never booted: the fork's boot makes its own
      throw err;
    }
    await run('cp', ['--reflink=auto', '--sparse=always', '--', c.from, c.to]);
  }
}

/** Fork, inside the reservation after the fork's row is inserted: its attachments. */
export function forkVolumeAttachments(core: InstanceCore, sourceId: string, forkId: string): void {
  try {
    core.o.volumes?.forkAttach(sourceId, forkId);
  } catch (err) {
    core.repo.delete(forkId); // still inside the reservation: nobody saw the row
    throw err;
  }
}
