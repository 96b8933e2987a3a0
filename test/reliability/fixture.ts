/**
 * Shared set-up of the fault tests (disk-full, hostile-guest): a real `vessel daemon` on a
 * data dir with the kernel seeded and a busybox image imported, a guest shell helper, and a
 * small loop-mounted ext4 filesystem to run a data dir out of space.
 */
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import type { VesselClient } from '../../src/client/index.js';
import { isVesselError } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

export interface ImageDaemon {
  readonly d: SpawnedDaemon;
  readonly c: VesselClient;
  /** The imported busybox image's name. */
  readonly image: string;
  /** The last 20 kB of the daemon's stderr (its log at warn level). */
  log(): string;
  /** Delete every instance, stop the daemon. */
  stop(): Promise<void>;
}

/**
 * Seed the kernel into `dataDir`, start a daemon on it (with `env` added to its environment)
 * and import a busybox image built in `scratch` (outside the data dir when that must stay small).
 */
export async function startImageDaemon(
  dataDir: string,
  scratch: string,
  env: Record<string, string> = {},
): Promise<ImageDaemon> {
  await seedKernel(dataDir);
  const saved = { ...process.env };
  Object.assign(process.env, env); // startDaemon passes this process's environment on
  let d: SpawnedDaemon;
  try {
    d = await startDaemon(dataDir);
  } finally {
    for (const k of Object.keys(env)) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
  const c = d.client;
  let log = '';
  d.child.stderr?.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-20_000)));
  try {
    const archive = path.join(scratch, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'faults/busybox:1');
    const image = (await c.importImage(createReadStream(archive))).name;
    return {
      d,
      c,
      image,
      log: () => log,
      async stop() {
        for (const i of await c.listInstances().catch(() => []))
          await c.deleteInstance(i.id).catch(() => undefined);
        await d.stop();
      },
    };
  } catch (err) {
    await d.stop();
    throw err;
  }
}

/** A running busybox VM (user-mode network unless `network` says otherwise) idling on sleep. */
export async function runningVm(
  c: VesselClient,
  image: string,
  name: string,
  extra: Partial<Parameters<VesselClient['createInstance']>[0]> = {},
): Promise<string> {
  const inst = await c.createInstance({
    image,
    name,
    cmd: ['sh', '-c', 'while :; do sleep 1; done'],
    ...extra,
  });
  const w = await c.waitInstance(inst.id, 'Running', 240);
  assert.equal(w.timed_out, false, `${name} did not reach Running: ${JSON.stringify(w)}`);
  return inst.id;
}

/** Run `sh -c script` in the guest. */
export async function sh(
  c: VesselClient,
  id: string,
  script: string,
): Promise<{ code: number | null; out: string; err: string }> {
  const r = await c.execInstance(id, { argv: ['sh', '-c', script] });
  return { code: r.exit_code, out: r.stdout, err: r.stderr };
}

/** The daemon still answers and still drives a VM: list instances and exec in `id`. */
export async function assertServing(c: VesselClient, id: string): Promise<void> {
  assert.ok(Array.isArray(await c.listInstances()));
  const r = await sh(c, id, 'echo alive');
  assert.equal(r.out.trim(), 'alive', `exec after the fault: ${JSON.stringify(r)}`);
}

/** `p` rejects with a VesselError of `code`; returns its message. */
export async function rejectsWithCode(p: Promise<unknown>, code: string): Promise<string> {
  let message = '';
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isVesselError(err), `not a VesselError: ${String(err)}`);
    assert.equal(err.code, code, `${err.code}: ${err.message}`);
    message = err.message;
    return true;
  });
  return message;
}

export interface SmallFs {
  readonly mount: string;
  /** Bytes free right now. */
  free(): Promise<number>;
  /** Fill the filesystem until `leaveBytes` are free (one filler file). */
  fill(leaveBytes: number): Promise<void>;
  /** Delete the filler. */
  unfill(): Promise<void>;
  /** Unmount and delete everything (safe to call twice, also after a failed set-up). */
  destroy(): Promise<void>;
}

/** A `mib` MiB ext4 image loop-mounted on a temp dir (needs root). */
export async function smallFs(mib: number): Promise<SmallFs> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-smallfs-'));
  const img = path.join(base, 'fs.img');
  const mount = path.join(base, 'mnt');
  const filler = path.join(mount, 'filler');
  let mounted = false;
  const destroy = async (): Promise<void> => {
    if (mounted) {
      // A daemon that just exited may still hold the mount for a moment.
      for (let i = 0; i < 20; i++) {
        const r = await run('umount', [mount], { allowFailure: true });
        if (r.code === 0) break;
        await new Promise((res) => setTimeout(res, 250));
      }
      mounted = false;
    }
    await fs.rm(base, { recursive: true, force: true });
  };
  try {
    await fs.mkdir(mount);
    await run('truncate', ['-s', `${mib}M`, img]);
    await run('mkfs.ext4', ['-q', '-m', '0', img]);
    await run('mount', ['-o', 'loop', img, mount]);
    mounted = true;
    // Traversable like any data dir's parents (a confined VMM runs as another uid).
    await fs.chmod(base, 0o755);
    await fs.chmod(mount, 0o755);
  } catch (err) {
    await destroy();
    throw err;
  }
  const free = async (): Promise<number> => {
    const s = await fs.statfs(mount);
    return s.bavail * s.bsize;
  };
  return {
    mount,
    free,
    async fill(leaveBytes) {
      await fs.rm(filler, { force: true });
      // The daemon may still be writing or freeing: measure again and retry a few times.
      for (let attempt = 1; ; attempt++) {
        const want = (await free()) - leaveBytes;
        if (want <= 0) return;
        const r = await run('fallocate', ['-l', String(want), filler], { allowFailure: true });
        if (r.code === 0) return;
        await fs.rm(filler, { force: true });
        if (attempt === 5) throw new Error(`could not fill ${mount}: ${r.stderr.trim()}`);
        await new Promise((res) => setTimeout(res, 200));
      }
    },
    unfill: () => fs.rm(filler, { force: true }),
    destroy,
  };
}
