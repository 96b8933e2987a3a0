/**
 * A network namespace per test run, and a real `vessel daemon` process inside it. Anything
 * that gives a VM an IP address runs in such a namespace: the daemon (and so every QEMU it
 * starts, with its user-mode network and published ports) lives there, while its API socket
 * is a file the test reaches from the host namespace. Only `lo` exists in the namespace, so
 * nothing can leave it. `close()` stops the daemon, kills what is left in the namespace
 * (processes this run started), deletes the namespace and the data dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VesselClient } from '../../src/client/index.js';
import { guestBinaryPath } from '../../src/core/assets.js';
import { run, type RunResult } from '../../src/core/process.js';
import { seedKernel } from './vm-daemon.js';

/** The compiled program next to this compiled helper (`dist/src/main.js` in the build). */
export const MAIN_JS = fileURLToPath(new URL('../../src/main.js', import.meta.url));

/** Why real-VM tests in a namespace cannot run here, or false when they can. */
export async function netnsSkipReason(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'needs root (ip netns)';
  for (const tool of ['/usr/bin/qemu-system-x86_64', '/usr/bin/busybox']) {
    try {
      await fs.access(tool);
    } catch {
      return `${tool} is missing`;
    }
  }
  try {
    await fs.access(guestBinaryPath());
  } catch {
    return `the guest program is not built (${guestBinaryPath()}); run npm run build`;
  }
  try {
    await run('ip', ['netns', 'list']);
  } catch {
    return 'ip netns does not work here (iproute2 missing?)';
  }
  return false;
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

export interface SpawnedDaemon {
  readonly dataDir: string;
  readonly socket: string;
  readonly client: VesselClient;
  readonly child: ChildProcess;
  /** The CLI against this daemon (it only talks to the socket, so any namespace will do). */
  cli(args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /** SIGTERM (the daemon stops its VMs), SIGKILL after 20 s; closes the client. */
  stop(): Promise<void>;
}

/**
 * Start `vessel --data-dir <dataDir> daemon` from this build (`MAIN_JS`), inside network
 * namespace `netns` (via `ip netns exec`) or in the caller's own namespace when omitted,
 * and resolve once it is listening (the ready notification on fd 3, as the CLI's autostart).
 */
export async function startDaemon(
  dataDir: string,
  options: { netns?: string } = {},
): Promise<SpawnedDaemon> {
  const argv = [MAIN_JS, '--data-dir', dataDir, 'daemon', '--ready-fd', '3'];
  const [file, args] =
    options.netns === undefined
      ? [process.execPath, argv]
      : ['ip', ['netns', 'exec', options.netns, process.execPath, ...argv]];
  const child = spawn(file, args, {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    env: { ...process.env, VESSEL_LOG_LEVEL: 'warn', VESSEL_GUEST_BINARY: guestBinaryPath() },
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const ready = await new Promise<string>((resolve) => {
    let text = '';
    const fd3 = child.stdio[3] as NodeJS.ReadableStream;
    fd3.on('data', (d: Buffer) => (text += d.toString()));
    fd3.on('end', () => resolve(text));
    void exited.then(() => resolve(text));
  });
  if (!ready.startsWith('ready')) {
    child.kill('SIGKILL');
    throw new Error(`daemon did not start: ${ready.trim()} ${stderr.trim()}`);
  }
  const socket = path.join(dataDir, 'vessel.sock');
  const client = new VesselClient({ socketPath: socket, timeoutMs: 300_000 });
  return {
    dataDir,
    socket,
    client,
    child,
    cli: (cliArgs, timeoutMs = 120_000) =>
      run(process.execPath, [MAIN_JS, '--data-dir', dataDir, ...cliArgs], {
        timeoutMs,
        allowFailure: true,
      }),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(timer);
      }
      await client.close();
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
