/**
 * A network namespace per test run, and a real `vessel daemon` process inside it. Anything
 * that gives a VM an IP address runs in such a namespace: the daemon (and so every QEMU it
 * starts, with its user-mode network and published ports) lives there, while its API socket
 * is a file the test reaches from the host namespace. Only `lo` exists in the namespace, so
 * nothing can leave it. `close()` stops the daemon, kills what is left in the namespace
 * (processes this run started), deletes the namespace and the data dir.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { VesselClient } from '../../src/client/index.js';
import { run, type RunResult } from '../../src/core/process.js';
import { vmSkipReason } from './prereqs.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from './vm-daemon.js';

/** The compiled program next to this compiled helper (`dist/src/main.js` in the build). */

/** Why real-VM tests in a namespace cannot run here, or false when they can. */
export async function netnsSkipReason(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'needs root (ip netns)';
  const vm = await vmSkipReason();
  if (vm) return vm;
  try {
    await run('ip', ['netns', 'list']);
  } catch {
    return 'ip netns does not work here (iproute2 missing?)';
  }
  return false;
}

/** {@link netnsSkipReason}, plus what bridge mode needs: a tun device and nft. */
export async function bridgeSkipReason(): Promise<string | false> {
  const why = await netnsSkipReason();
  if (why) return why;
  try {
    await fs.access('/dev/net/tun');
    await run('nft', ['--version']);
  } catch {
    return '/dev/net/tun or nft is missing';
  }
  return false;
}

/** Retry `fn` every 500 ms until it returns a value, or fail after `timeoutMs` with its last error. */
export async function until<T>(
  what: string,
  timeoutMs: number,
  fn: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen in time: ${String(last)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface Netns {
  readonly name: string;
  /** Run a program inside the namespace; throws on a non-zero exit unless `allowFailure`. */
  exec(
    file: string,
    args: readonly string[],
    options?: { timeoutMs?: number; allowFailure?: boolean },
  ): Promise<RunResult>;
  /** Kill every process left in the namespace and delete it. */
  destroy(): Promise<void>;
}

/** Create `vessel-test-<random>` with `lo` up. */
export async function createNetns(): Promise<Netns> {
  const name = `vessel-test-${randomBytes(4).toString('hex')}`;
  await run('ip', ['netns', 'add', name]);
  try {
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  } catch (err) {
    await run('ip', ['netns', 'del', name], { allowFailure: true });
    throw err;
  }
  return {
    name,
    exec: (file, args, options = {}) =>
      run('ip', ['netns', 'exec', name, file, ...args], {
        timeoutMs: options.timeoutMs ?? 60_000,
        ...(options.allowFailure ? { allowFailure: true } : {}),
      }),
    async destroy() {
      // Only processes of this namespace, i.e. ones this run started (daemon, QEMUs, servers).
      const pids = (await run('ip', ['netns', 'pids', name], { allowFailure: true })).stdout
        .split('\n')
        .map((l) => Number(l.trim()))
        .filter((p) => Number.isInteger(p) && p > 0);
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await run('ip', ['netns', 'del', name], { allowFailure: true });
    },
  };
}

export interface NetnsDaemon extends SpawnedDaemon {
  readonly ns: Netns;
  /** Stop the daemon (its VMs with it), destroy the namespace, remove the data dir. */
  close(): Promise<void>;
}

/**
 * A fresh namespace and data dir (kernel seeded from the shared test cache, pulled with
 * apt in the host namespace on first use), and `vessel daemon` started inside the namespace
 * (with `config` as its config file when given).
 */
export async function startNetnsDaemon(
  options: { config?: Record<string, unknown> } = {},
): Promise<NetnsDaemon> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-net-'));
  let ns: Netns | undefined;
  try {
    await seedKernel(dataDir);
    // `<data_dir>/config.json`, which the daemon reads at start.
    if (options.config)
      await fs.writeFile(path.join(dataDir, 'config.json'), JSON.stringify(options.config));
    ns = await createNetns();
    const daemon = await startDaemon(dataDir, { netns: ns.name });
    const theNs = ns;
    return {
      ...daemon,
      ns: theNs,
      async close() {
        try {
          await daemon.stop();
        } finally {
          await theNs.destroy();
          await fs.rm(dataDir, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    await ns?.destroy();
    await fs.rm(dataDir, { recursive: true, force: true });
    throw err;
  }
}

/** Poll an instance (test helper) until it is in `state`; fails with its last view. */
export async function waitForState(
  client: VesselClient,
  id: string,
  state: string,
  timeoutMs = 180_000,
): Promise<Awaited<ReturnType<VesselClient['getInstance']>>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const inst = await client.getInstance(id);
    if (inst.state === state) return inst;
    if (Date.now() > deadline || (inst.state === 'Stopped' && state !== 'Stopped')) {
      throw new Error(
        `instance ${inst.name} is ${inst.state}${inst.state_error ? ` (${inst.state_error})` : ''}, wanted ${state}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
