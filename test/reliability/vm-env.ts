/**
 * The real-VM setting the lifecycle reliability tests share: a temp data dir with the
 * kernel seeded, a real `vessel daemon` process, a busybox image imported through the API
 * (built with test/helpers/oci-builder.ts, as the integration tests do), and the small
 * waits and guest commands every such test needs. One place, so the churn, kill and
 * concurrency tests stay about what they measure.
 */
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type {
  CreateInstanceRequest,
  Instance,
  LifecycleEvent,
  VesselClient,
} from '../../src/client/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

/** A main command that keeps the VM busy-idle until it is deleted. */
export const LOOP = ['/bin/sh', '-c', 'while :; do sleep 1; done'];

/** Small guests: the tests boot many of them at once on two cores (TCG). */
export const MEMORY_MIB = 128;

export interface VmEnv {
  readonly dir: string;
  /** The imported busybox image's name. */
  readonly image: string;
  /** The current daemon (replaced by {@link VmEnv.restartDaemon}). */
  readonly daemon: SpawnedDaemon;
  readonly client: VesselClient;
  /** A create request for the busybox image running {@link LOOP} (fields of `extra` win). */
  request(extra?: Partial<CreateInstanceRequest>): CreateInstanceRequest;
  /** kill -9 the daemon (its VMs keep running) and start a new one on the same data dir. */
  restartDaemon(): Promise<void>;
  /** Delete every instance, stop the daemon, remove the data dir; safe after a failure. */
  close(): Promise<void>;
}

/** Start a daemon on a fresh data dir (`vessel-<label>-*`) and import the busybox image. */
export async function startVmEnv(label: string): Promise<VmEnv> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), `vessel-${label}-`));
  let daemon: SpawnedDaemon | undefined;
  try {
    await seedKernel(dir);
    daemon = await startDaemon(dir);
    const image = await importBusybox(daemon.client, dir, `${label}/busybox:1`);
    return envOf(dir, daemon, image);
  } catch (err) {
    await daemon?.kill9();
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function importBusybox(client: VesselClient, dir: string, ref: string): Promise<string> {
  const archive = path.join(dir, 'busybox.tar');
  await writeDockerArchive(archive, await busyboxImage(), ref);
  const image = await client.importImage(createReadStream(archive));
  await fs.rm(archive);
  return image.name;
}

function envOf(dir: string, first: SpawnedDaemon, image: string): VmEnv {
  let daemon = first;
  return {
    dir,
    image,
    get daemon() {
      return daemon;
    },
    get client() {
      return daemon.client;
    },
    request: (extra = {}) => ({ image, cmd: LOOP, memory_mib: MEMORY_MIB, ...extra }),
    async restartDaemon() {
      await daemon.kill9();
      daemon = await startDaemon(dir);
    },
    async close() {
      const left = await daemon.client.listInstances().catch(() => []);
      await Promise.all(left.map((i) => daemon.client.deleteInstance(i.id).catch(() => {})));
      await daemon.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Wait until `id` has left Created/Initializing (its boot ended either way), polling: the
 * API's wait for Running would sit out its whole timeout on a VM whose boot failed.
 */
export async function settled(client: VesselClient, id: string, seconds = 180): Promise<Instance> {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const inst = await client.getInstance(id);
    if (inst.state !== 'Created' && inst.state !== 'Initializing') return inst;
    if (Date.now() > deadline)
      throw new Error(`${inst.name} is still ${inst.state} after ${seconds} s`);
    await sleep(100);
  }
}

/** Wait until `id` is Running, then return its view; fails naming the state it ended in. */
export async function running(client: VesselClient, id: string, seconds = 180): Promise<Instance> {
  const inst = await settled(client, id, seconds);
  assert.equal(inst.state, 'Running', `${inst.name} is ${inst.state}: ${inst.state_error ?? ''}`);
  return inst;
}

/** Run a shell script in the guest; fails unless it exits 0. Returns stdout. */
export async function sh(client: VesselClient, id: string, script: string): Promise<string> {
  const r = await client.execInstance(id, { argv: ['/bin/sh', '-c', script] });
  assert.equal(r.exit_code, 0, `exec in ${id} exited ${r.exit_code}: ${r.stderr}`);
  return r.stdout;
}

/** The instance's app log (the main command's output) as text. */
export async function appLog(client: VesselClient, id: string): Promise<string> {
  const lines: string[] = [];
  for await (const e of client.instanceLogs(id)) if (e.type === 'log') lines.push(e.text);
  return lines.join('\n');
}

/** A live recording of the lifecycle event stream, each event stamped on arrival. */
export interface EventRecorder {
  readonly seen: readonly { readonly event: LifecycleEvent; readonly at: number }[];
  /** The arrival time (Date.now()) of the first matching event that arrived at or after `since`. */
  waitFor(pred: (e: LifecycleEvent) => boolean, ms?: number, since?: number): Promise<number>;
  stop(): Promise<void>;
}

/** Record lifecycle events (optionally of one instance) until `stop()`. */
export async function recordEvents(
  client: VesselClient,
  filter: { instance?: string } = {},
): Promise<EventRecorder> {
  const seen: { event: LifecycleEvent; at: number }[] = [];
  const ac = new AbortController();
  const done = (async () => {
    try {
      for await (const event of client.events(filter, ac.signal))
        seen.push({ event, at: Date.now() });
    } catch {
      // aborted, or the daemon went away
    }
  })();
  // The SSE subscription is made asynchronously; give it a moment so no event is missed.
  await new Promise((r) => setTimeout(r, 200));
  return {
    seen,
    async waitFor(pred, ms = 30_000, since = 0) {
      const deadline = Date.now() + ms;
      for (;;) {
        const hit = seen.find((s) => s.at >= since && pred(s.event));
        if (hit) return hit.at;
        if (Date.now() > deadline) throw new Error(`no matching lifecycle event in ${ms} ms`);
        await new Promise((r) => setTimeout(r, 5));
      }
    },
    async stop() {
      ac.abort();
      await done;
    },
  };
}

/**
 * One VM booted, exec'd and deleted. Run it before taking a leak baseline: the daemon opens
 * some descriptors once, on first use (libuv's one inotify fd for its file watches), which
 * are not per-VM and so not leaks.
 */
export async function warmUp(e: VmEnv): Promise<void> {
  const inst = await e.client.createInstance(e.request({ name: 'warm-up' }));
  await running(e.client, inst.id);
  assert.equal(await sh(e.client, inst.id, 'echo ok'), 'ok\n');
  await e.client.deleteInstance(inst.id);
}

/** Run `task(i)` for i in [0, count) with at most `parallel` running at once. */
export async function pool(
  count: number,
  parallel: number,
  task: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
