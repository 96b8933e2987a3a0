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
import { run } from '../../src/core/process.js';
import { DEFAULT_KERNEL, ensureKernel } from '../../src/kernels/index.js';
import { kernelsDir } from '../../src/kernels/paths.js';

export const BIN = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../../bin/vessel.js',
);

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

export interface DaemonProcess {
  readonly child: ChildProcess;
  readonly client: VesselClient;
  readonly socket: string;
  /** SIGKILL the daemon (its VMs keep running in their own process groups). */
  kill9(): Promise<void>;
  /** SIGTERM and wait for exit. */
  stop(): Promise<void>;
}

/** Start `vessel --data-dir <dir> daemon` and resolve once it is listening. */
export async function startDaemonProcess(dataDir: string): Promise<DaemonProcess> {
  const child = spawn(process.execPath, [BIN, '--data-dir', dataDir, 'daemon', '--ready-fd', '3'], {
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
    env: { ...process.env, VESSEL_LOG_LEVEL: 'warn' },
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
    child,
    client,
    socket,
    // The daemon goes first: streams still open on the client then end instead of holding close().
    async kill9() {
      child.kill('SIGKILL');
      await exited;
      await client.close();
    },
    async stop() {
      child.kill('SIGTERM');
      await exited;
      await client.close();
    },
  };
}
