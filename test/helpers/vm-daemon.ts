/**
 * Real VM tests against a real daemon process: a kernel cache shared by the
 * test files (the first one pulls it through apt like a user would; later
 * ones copy it), and a `vessel daemon` child process started the way the
 * CLI's autostart does (ready notification on fd 3).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VesselClient } from '../../src/client/index.js';
import { guestBinaryPath } from '../../src/core/assets.js';
import { run, type RunResult } from '../../src/core/process.js';
import { DEFAULT_KERNEL, ensureKernel } from '../../src/kernels/index.js';
import { kernelsDir } from '../../src/kernels/paths.js';

const CACHE = path.join(os.tmpdir(), 'vessel-test-kernel-cache');

/** Put the default kernel into `dataDir`, pulling it once per machine into a shared cache. */
export async function seedKernel(dataDir: string): Promise<void> {
  try {
    await fs.access(path.join(kernelsDir(CACHE), DEFAULT_KERNEL));
  } catch {
    const staging = `${CACHE}.${process.pid}`;
    await ensureKernel(DEFAULT_KERNEL, { dataDir: staging });
    await fs.rename(staging, CACHE).catch(async () => {
      await fs.rm(staging, { recursive: true, force: true }); // another file won the race
    });
  }
  await fs.mkdir(dataDir, { recursive: true });
  await run('cp', ['-a', kernelsDir(CACHE), kernelsDir(dataDir)]);
}

export const MAIN_JS = fileURLToPath(new URL('../../src/main.js', import.meta.url));

export interface SpawnedDaemon {
  readonly dataDir: string;
  readonly socket: string;
  readonly client: VesselClient;
  readonly child: ChildProcess;
  /** The CLI against this daemon (it only talks to the socket, so any namespace will do). */
  cli(args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /** SIGTERM (the VMs keep running), SIGKILL after 20 s; closes the client. */
  stop(): Promise<void>;
  /** SIGKILL the daemon (its VMs keep running in their own process groups). */
  kill9(): Promise<void>;
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
    async kill9() {
      child.kill('SIGKILL');
      await exited;
      await client.close();
    },
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
