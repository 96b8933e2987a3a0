/**
 * Start the VMM for an instance: a fresh boot (→ Initializing), or loading a
 * standby snapshot (→ Paused, the guest already up).
 */
import fs from 'node:fs/promises';
import { VesselError, errnoCode } from '../core/errors.js';
import { ensureDir, writeFileAtomic } from '../core/fs.js';
import { MarkerParser } from '../guest/index.js';
import {
  DEFAULT_KERNEL,
  buildInitramfs,
  ensureKernel,
  listKernels,
  type Kernel,
} from '../kernels/index.js';
import type { InstanceRow } from '../store/index.js';
import { GUEST_KERNEL_ARGS } from '../vmm/index.js';
import type { InstanceCore, Runtime } from './core.js';
import {
  CONFIG_SERIAL,
  OVERLAY_SERIAL,
  ROOT_SERIAL,
  createOverlayDisk,
  writeConfigDisk,
} from './guest-config.js';
import {
  assertPortsFree,
  guestDiskConfig,
  hostNetwork,
  rethrowStartFailure,
  vmNet,
} from './network.js';
import { attachTap, reallocateAddress, releaseTap } from './network-bridge.js';
import { markBootBegin } from './phases.js';
import {
  BOOT_OFFSETS_FILE,
  CONSOLE_LOG,
  RUN_DIR,
  armBootTimeout,
  attach,
  connectGuest,
  runFile,
  type BootOffsets,
} from './runtime.js';
import { vmJail } from './jail.js';
import { bootVolumes, withVolumes } from './volumes.js';

export { BOOT_OFFSETS_FILE, type BootOffsets } from './runtime.js';

export async function fileSize(file: string): Promise<number> {
  try {
    return (await fs.stat(file)).size;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 0;
    throw err;
  }
}

/** Call under the instance's lock. */
export async function boot(
  core: InstanceCore,
  id: string,
  opts: { restoreFrom?: string; createStartedAt?: number } = {},
): Promise<Runtime> {
  const restoring = opts.restoreFrom !== undefined;
  if (!restoring) markBootBegin(core, id); // boot phase timing (phases.ts)
  // A bridge-mode instance gave its address back when its VMM ended; a restore kept it.
  if (!restoring) await reallocateAddress(core, id);
  const row = core.row(id);
  const p = core.o.paths;
  const dir = p.instanceDir(id);
  await ensureDir(dir, 0o700);
  const overlay = p.instanceFile(id, 'overlay.ext4');
  try {
    await fs.access(overlay);
  } catch {
    await createOverlayDisk(overlay, row.disk_bytes);
  }
  const volumes = await bootVolumes(core, id);
  await writeConfigDisk(
    p.instanceFile(id, 'config.disk'),
    withVolumes(guestDiskConfig(row.guest), volumes),
  );
  const image = core.o.images.get(row.image_digest);
  const kernel = await bootKernel(core, row, restoring);
  const initrd = await buildInitramfs({
    kernelDir: kernel.dir,
    guestBinary: core.o.guestBinary,
    dataDir: p.dataDir,
  });
  const accel = await core.o.accel();
  await ensureDir(p.instanceFile(id, RUN_DIR), 0o700);
  for (const s of ['qmp.sock', 'control.sock', 'console.sock'])
    await fs.rm(runFile(core, id, s), { force: true });
  const sockets = {
    qmpSocket: runFile(core, id, 'qmp.sock'),
    controlSocket: runFile(core, id, 'control.sock'),
    consoleSocket: runFile(core, id, 'console.sock'),
  };
  const offsets: BootOffsets = {
    serial_offset: await fileSize(runFile(core, id, 'serial.log')),
    console_offset: await fileSize(p.instanceFile(id, CONSOLE_LOG)),
  };
  await writeFileAtomic(p.instanceFile(id, BOOT_OFFSETS_FILE), JSON.stringify(offsets), 0o600);
  const host = hostNetwork(row.guest);
  if (host.ports.length > 0) await assertPortsFree(row.name, row.guest);
  const net =
    host.mode === 'bridge'
      ? await attachTap(core, row, host).catch((e: unknown) =>
          rethrowStartFailure(row.name, row.guest, e),
        )
      : vmNet(row.guest);
  const handle = await core.o.hypervisor
    .start({
      id,
      kernel: kernel.vmlinuz,
      initrd,
      cmdline: GUEST_KERNEL_ARGS,
      vcpus: row.vcpus,
      memoryMiB: row.memory_mib,
      disks: [
        {
          path: p.imageDisk(image.digest!.slice(7), image.format ?? 'erofs'),
          readonly: true,
          serial: ROOT_SERIAL,
          format: 'raw',
        },
        { path: overlay, readonly: false, serial: OVERLAY_SERIAL, format: 'raw' },
        {
          path: p.instanceFile(id, 'config.disk'),
          readonly: true,
          serial: CONFIG_SERIAL,
          format: 'raw',
        },
        // After Vessel's own disks, in mount-path order: a restore sees the same devices.
        ...volumes.disks.map((d) => ({ ...d, format: 'raw' as const })),
      ],
      ...sockets,
      serialLog: runFile(core, id, 'serial.log'),
      accel,
      ...(core.o.tscKhz ? { tscKhz: core.o.tscKhz } : {}),
      ...(opts.restoreFrom !== undefined ? { incoming: opts.restoreFrom } : {}),
      ...(net ? { net } : {}),
      workDir: dir,
      ...(core.o.confinement ? { jail: vmJail(core, row) } : {}),
      ...(row.disk_io_bps ? { diskIoBps: row.disk_io_bps } : {}),
    })
    .catch(async (e: unknown) => {
      if (host.mode === 'bridge') await releaseTap(core, id);
      return rethrowStartFailure(row.name, row.guest, e);
    });
  const rt = attach(core, id, handle, new MarkerParser(), {
    programStart: restoring,
    agentReady: restoring,
  });
  rt.createStartedAt = opts.createStartedAt;
  core.transition(id, restoring ? 'Paused' : 'Initializing', {
    pid: handle.pid,
    accel,
    sockets: { ...sockets },
    started_at: new Date().toISOString(),
    stopped_at: null,
    ...(restoring ? {} : { exit_code: null, exit_message: null }),
    state_error: null,
  });
  if (!restoring) {
    void connectGuest(core, id, rt);
    armBootTimeout(core, id, rt);
  }
  return rt;
}

/**
 * The kernel the row records. A fresh boot may move on to the newest
 * version of that kernel when the recorded one is gone (and records it);
 * a restore needs exactly the one the snapshot's memory was running.
 */
async function bootKernel(core: InstanceCore, row: InstanceRow, exact: boolean): Promise<Kernel> {
  const [name = DEFAULT_KERNEL, version] = row.kernel.split('/');
  const dataDir = core.o.paths.dataDir;
  const recorded = (await listKernels({ dataDir })).find(
    (k) => k.name === name && k.version === version,
  );
  if (recorded) return recorded;
  if (exact) {
    throw new VesselError(
      'conflict',
      `instance "${row.name}" was saved running kernel ${row.kernel}, which is no longer installed`,
    );
  }
  const kernel = await ensureKernel(name, { dataDir });
  core.repo.update({ ...row, kernel: `${kernel.name}/${kernel.version}` });
  return kernel;
}
