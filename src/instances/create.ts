/**
 * Create in three phases (seed 001): resolve the image and kernel — pulling
 * them when missing — with no global lock; a milliseconds-long reservation
 * of the name and resources that writes the row; boot under the instance's
 * own lock.
 */
import { randomBytes } from 'node:crypto';
import { isVesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import type { Image } from '../images/index.js';
import { DEFAULT_KERNEL, ensureKernel } from '../kernels/index.js';
import type { InstanceRow } from '../store/index.js';
import { boot } from './boot.js';
import type { InstanceCore } from './core.js';
import { buildGuestConfig } from './guest-config.js';
import { resolveNetwork, withNetwork } from './network.js';
import { allocateAddress, ensureBridge, withAddress } from './network-bridge.js';
import type { CreateInstanceRequest, Instance } from './types.js';
import { expiryFor } from './ttl.js';
import { view } from './view.js';
import { resolveMounts } from './volumes.js';

/** Resolves once the instance is Initializing; the boot continues. */
export async function create(core: InstanceCore, req: CreateInstanceRequest): Promise<Instance> {
  const startedAt = performance.now();
  core.checkName(req.name);
  // Volumes by id or name, mount paths checked (400 before any pull); the rules come later.
  const mounts = resolveMounts(core, req.volumes);
  // Phase 1: resolve (auto-pull) with no global lock.
  const image = await resolveImage(core, req.image);
  const kernel = await ensureKernel(core.o.kernel ?? DEFAULT_KERNEL, {
    dataDir: core.o.paths.dataDir,
  });
  const id = randomBytes(8).toString('hex');
  const name = req.name ?? `vm-${id.slice(0, 6)}`;
  const network = await ensureBridge(core, resolveNetwork(id, req, core.o.network), () =>
    resolveNetwork(id, req, core.o.network),
  );
  const guest = buildGuestConfig({
    image,
    hostname: name,
    ...(req.cmd ? { cmd: req.cmd } : {}),
    ...(req.entrypoint ? { entrypoint: req.entrypoint } : {}),
    ...(req.env ? { env: req.env } : {}),
    ...(req.workdir ? { workdir: req.workdir } : {}),
    ...(req.user ? { user: req.user } : {}),
    ...(req.stdin ? { stdin: true } : {}),
    ...(req.tty ? { tty: true } : {}),
    ...(req.agent ? { agent: true } : {}),
  });
  const defaults = core.o.defaults;
  // Phase 2: the reservation — milliseconds, under the one global lock.
  const row = await core.reserve(() => {
    core.assertNameFree(name);
    // Volume rules (one read-write or many read-only) checked here, so racing creates can't both win.
    if (mounts.length > 0) core.o.volumes!.check(id, mounts);
    const ip = network.host.mode === 'bridge' ? allocateAddress(core) : null;
    const r: InstanceRow = {
      id,
      name,
      image: image.name,
      image_digest: image.digest!,
      state: 'Created',
      state_error: null,
      kernel: `${kernel.name}/${kernel.version}`,
      hypervisor: core.o.hypervisor.name,
      accel: null,
      vcpus: req.vcpus ?? defaults?.vcpus ?? 1,
      memory_mib: req.memory_mib ?? defaults?.memory_mib ?? 512,
      disk_bytes: req.disk_bytes ?? defaults?.disk_bytes ?? 4 * 1024 ** 3,
      disk_io_bps: req.disk_io_bps ?? null,
      guest: withNetwork(guest, ip === null ? network : withAddress(network, ip)),
      pid: null,
      sockets: null,
      exit_code: null,
      created_at: new Date().toISOString(),
      started_at: null,
      stopped_at: null,
      cid: core.nextCid(),
      source_id: null,
      guest_ip: ip,
      tags: { ...req.tags },
      expires_at: expiryFor(req, Date.now()),
    };
    core.repo.insert(r);
    if (mounts.length > 0) core.o.volumes!.attach(id, mounts);
    return r;
  });
  await ensureDir(core.o.paths.instanceDir(id), 0o700);
  core.topic.publish({ type: 'state', id, from: null, instance: view(row) });
  core.emit('create', row, { old_state: null });
  // Phase 3: boot under the per-instance lock only.
  await core.locked(id, () => boot(core, id, { createStartedAt: startedAt }));
  return view(core.row(id));
}

/** The image, ready: local, being pulled (waited for), or pulled now. */
async function resolveImage(core: InstanceCore, ref: string): Promise<Image> {
  const images = core.o.images;
  try {
    const img = images.get(ref);
    if (img.status === 'ready') return img;
    return await images.waitForReady(img.name);
  } catch (err) {
    if (!isVesselError(err, 'image_not_found')) throw err;
  }
  return images.waitForReady(images.pull(ref).name);
}
