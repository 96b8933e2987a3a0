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

/** Addresses of {@link addOutsideWorld}'s network, seen from the daemon's namespace. */
export const OUTSIDE = {
  /** The daemon namespace's own address on the link: "the host's address". */
  hostIp: '198.18.0.1',
  /** A public-like server (198.18.0.0/15 is a benchmarking range, not private). */
  publicIp: '198.18.0.2',
  /** The cloud metadata service's address, served by the outside namespace. */
  metadataIp: '169.254.169.254',
  /** A host on a private network (RFC 1918), also served by the outside namespace. */
  privateIp: '192.168.77.1',
  /** Every outside server listens here and answers `outside <its address>\n`. */
  port: 8000,
} as const;

export interface OutsideWorld {
  readonly ns: Netns;
  destroy(): Promise<void>;
}

/**
 * "The internet" for a daemon namespace: a second namespace joined by a veth pair and the
 * daemon namespace's default route. It answers on {@link OUTSIDE.port} at a public-like
 * address, at the metadata address and at a private address, each reply naming the address
 * that answered. Nothing leaves the two namespaces.
 */
export async function addOutsideWorld(inner: Netns): Promise<OutsideWorld> {
  const ns = await createNetns();
  try {
    const inNs = (args: string[]): Promise<RunResult> => run('ip', ['-n', inner.name, ...args]);
    const outNs = (args: string[]): Promise<RunResult> => run('ip', ['-n', ns.name, ...args]);
    await inNs([
      'link',
      'add',
      'vworld',
      'type',
      'veth',
      'peer',
      'name',
      'vhost',
      'netns',
      ns.name,
    ]);
    await inNs(['addr', 'add', `${OUTSIDE.hostIp}/24`, 'dev', 'vworld']);
    await inNs(['link', 'set', 'vworld', 'up']);
    await inNs(['route', 'add', 'default', 'via', OUTSIDE.publicIp]);
    await outNs(['addr', 'add', `${OUTSIDE.publicIp}/24`, 'dev', 'vhost']);
    for (const ip of [OUTSIDE.metadataIp, OUTSIDE.privateIp])
      await outNs(['addr', 'add', `${ip}/32`, 'dev', 'vhost']);
    await outNs(['link', 'set', 'vhost', 'up']);
    // Replies to NATed guests and to the daemon namespace go back over the link.
    await outNs(['route', 'add', 'default', 'via', OUTSIDE.hostIp]);
    void ns.exec(
      process.execPath,
      [
        '-e',
        `require('net').createServer((s) => s.end('outside ' + s.localAddress.replace(/^::ffff:/, '') + '\\n')).listen(${OUTSIDE.port}, '0.0.0.0')`,
      ],
      { timeoutMs: 3_600_000, allowFailure: true },
    );
    await until('the outside server', 10_000, async () => {
      const r = await ns.exec(
        'sh',
        ['-c', `busybox nc -w 1 ${OUTSIDE.publicIp} ${OUTSIDE.port} </dev/null`],
        {
          allowFailure: true,
        },
      );
      return r.stdout.startsWith('outside') ? true : undefined;
    });
  } catch (err) {
    await ns.destroy();
    throw err;
  }
  return { ns, destroy: () => ns.destroy() };
}

/**
 * A TCP server in `ns` on `host:port` answering every connection with `text` and a newline;
 * it lives until the namespace is destroyed.
 */
export function serveText(ns: Netns, host: string, port: number, text: string): void {
  void ns.exec(
    process.execPath,
    [
      '-e',
      `require('net').createServer((s) => s.end(${JSON.stringify(`${text}\n`)})).listen(${port}, '${host}')`,
    ],
    { timeoutMs: 3_600_000, allowFailure: true },
  );
}
