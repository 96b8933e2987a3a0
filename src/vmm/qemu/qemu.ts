/**
 * The QEMU backend: spawns `qemu-system-x86_64` (microvm machine) detached
 * from the daemon, drives it over QMP, and re-adopts it after a restart.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { errnoCode, errorMessage, isVesselError } from '../../core/errors.js';
import { run } from '../../core/process.js';
import { vmmError } from '../errors.js';
import type { Hypervisor, HypervisorCapabilities, VmHandle, VmSockets, VmSpec } from '../types.js';
import { buildQemuArgs, QEMU_BINARY, qemuOptValue } from './cmdline.js';
import { QemuVmHandle } from './handle.js';
import { pidAlive, pidCmdline, removeStale, waitForFile } from './proc.js';
import { QmpClient } from './qmp.js';
import { loadSnapshot } from './snapshot.js';
import { listVmCgroups, removeVmCgroup } from '../cgroups.js';
import { jailedCommand, jailedHelperCommand, ownVmFiles, type Confinement } from '../jail.js';
import { killPasst, startPasst } from '../passt.js';

/** The fd on which a confined QEMU finds its TAP (opened by the jailer). */
const TAP_FD = 3;

export interface QemuHypervisorOptions {
  /** Binary name or path; default `qemu-system-x86_64` from PATH. */
  readonly binary?: string;
  /** Start VMs whose spec has a `jail` through the jailer (absent: never confined). */
  readonly confinement?: Confinement;
  /**
   * The host's egress guard (network/egress-guard.ts) is loaded for the confinement uids:
   * a confined VM's passt may then keep its gateway mapping (see passt.ts).
   */
  readonly egressGuard?: boolean;
  /** Deadline for QEMU to create its QMP socket and answer; default 10000 ms. */
  readonly startTimeoutMs?: number;
}

/** Parse `qemu-system-x86_64 --version` output: `QEMU emulator version 7.2.22 (...)`. */
export function parseQemuVersion(text: string): string | null {
  return /version\s+(\d+\.\d+(?:\.\d+)?)/.exec(text)?.[1] ?? null;
}

/** Does `-machine help` output list the microvm machine? */
export function hasMicrovm(machineHelp: string): boolean {
  return /^microvm\s/m.test(machineHelp);
}

function connectUnix(file: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path: file });
    s.once('connect', () => {
      s.removeListener('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/**
 * Connect QMP once its socket file exists. QEMU binds before it listens, so a
 * connect in that window is refused: retry briefly until `deadline`.
 */
async function connectQmp(
  file: string,
  deadline: number,
  gone: Promise<unknown>,
): Promise<QmpClient> {
  let exited = false;
  void gone.then(() => (exited = true));
  for (;;) {
    try {
      return await QmpClient.connect(file, { timeoutMs: Math.max(1, deadline - Date.now()) });
    } catch (err) {
      const refused = errnoCode((err as { cause?: unknown }).cause) === 'ECONNREFUSED';
      if (!refused || exited || Date.now() >= deadline) throw err;
      await delay(5);
    }
  }
}

/** The binary's absolute path (a path, or a name looked up on PATH); null when not found. */
async function resolveBinary(binary: string): Promise<string | null> {
  return (await findBinary(binary))?.file ?? null;
}

/** `size:mtime` of the binary (a path, or a name looked up on PATH); null when not found. */
async function binaryStamp(binary: string): Promise<string | null> {
  const found = await findBinary(binary);
  return found ? `${found.file}:${found.size}:${found.mtimeMs}` : null;
}

async function findBinary(
  binary: string,
): Promise<{ file: string; size: number; mtimeMs: number } | null> {
  const candidates = binary.includes('/')
    ? [binary]
    : (process.env.PATH ?? '')
        .split(':')
        .filter(Boolean)
        .map((d) => path.join(d, binary));
  for (const file of candidates) {
    try {
      const st = await fsp.stat(file);
      if (st.isFile()) return { file: path.resolve(file), size: st.size, mtimeMs: st.mtimeMs };
    } catch {
      // not in this directory
    }
  }
  return null;
}

async function logTail(file: string): Promise<string> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  return text.trim().split('\n').slice(-5).join('\n');
}

export class QemuHypervisor implements Hypervisor {
  readonly name = 'qemu' as const;
  private readonly binary: string;
  private readonly startTimeoutMs: number;
  private readonly confinement: Confinement | undefined;
  private readonly egressGuard: boolean;
  private caps: { stamp: string; value: HypervisorCapabilities } | undefined;

  constructor(options: QemuHypervisorOptions = {}) {
    this.binary = options.binary ?? QEMU_BINARY;
    this.startTimeoutMs = options.startTimeoutMs ?? 10_000;
    this.confinement = options.confinement;
    this.egressGuard = options.egressGuard ?? false;
  }

  /** Whether VMs with a `jail` in their spec are started confined. */
  get confined(): boolean {
    return this.confinement !== undefined;
  }

  /** Remove a VM's cgroup once its hypervisor is gone (best effort; a busy group stays). */
  async releaseCgroup(id: string): Promise<boolean> {
    const layout = this.confinement?.cgroups;
    return layout ? removeVmCgroup(layout, id) : true;
  }

  /** Remove the cgroups of VMs not in `live` (left behind while no daemon ran). */
  async sweepCgroups(live: ReadonlySet<string>): Promise<void> {
    const layout = this.confinement?.cgroups;
    if (!layout) return;
    for (const name of await listVmCgroups(layout)) {
      if (!live.has(name)) await removeVmCgroup(layout, name, 1);
    }
  }

  /** The program and arguments that start `spec`'s VMM, confined when it asks to be. */
  private async command(spec: VmSpec): Promise<{ file: string; args: string[] }> {
    const c = this.confinement;
    if (!spec.jail || !c) return { file: this.binary, args: buildQemuArgs(spec) };
    const runDir = path.dirname(spec.qmpSocket);
    for (const f of [spec.consoleSocket, spec.controlSocket, spec.serialLog]) {
      if (path.dirname(f) !== runDir) {
        throw vmmError('spawn', `VM "${spec.id}": a confined VM keeps ${f} in ${runDir}`);
      }
    }
    const program = await resolveBinary(this.binary);
    if (!program) throw vmmError('spawn', `${this.binary} is not installed (not found on PATH)`);
    const tapFd = spec.net?.mode === 'tap' ? TAP_FD : undefined;
    const args = buildQemuArgs(spec, { sandbox: true, ...(tapFd ? { tapFd } : {}) });
    await ownVmFiles(spec, runDir, spec.jail);
    const tap = spec.net?.mode === 'tap' ? { name: spec.net.ifname, fd: TAP_FD } : undefined;
    return jailedCommand(c, spec, spec.jail, runDir, program, args, tap);
  }

  /**
   * How passt starts for `spec`: through the jailer as the VM's uid when the VM is
   * confined; as root when the daemon is root but unconfined (passt would else switch to
   * `nobody`, who cannot write the run directory); as the daemon's user otherwise.
   */
  private async passtCommand(
    spec: VmSpec,
    program: string,
    args: string[],
  ): Promise<{ file: string; args: string[] }> {
    const c = this.confinement;
    if (spec.jail && c) {
      const file = await resolveBinary(program);
      if (!file) {
        throw vmmError(
          'spawn',
          'user-mode networking with egress needs passt, which is not installed (apt-get install passt)',
        );
      }
      return jailedHelperCommand(c, spec.jail, path.dirname(spec.qmpSocket), file, args);
    }
    return { file: program, args: process.getuid?.() === 0 ? [...args, '--runas', '0:0'] : args };
  }

  /**
   * What the binary is and can do. Standby and restore ask for the version every time, so
   * the answer is kept while the binary file is unchanged (same size and mtime): an upgrade
   * under a running daemon is still seen, without two QEMU spawns per operation.
   */
  async capabilities(): Promise<HypervisorCapabilities> {
    const stamp = await binaryStamp(this.binary);
    if (stamp !== null && this.caps?.stamp === stamp) return this.caps.value;
    const value = await this.probeCapabilities();
    this.caps = stamp === null || !value.available ? undefined : { stamp, value };
    return value;
  }

  private async probeCapabilities(): Promise<HypervisorCapabilities> {
    const base = { name: this.name, binary: this.binary, pause: true, snapshot: true };
    try {
      const version = await run(this.binary, ['--version'], { timeoutMs: 10_000 });
      const machines = await run(this.binary, ['-machine', 'help'], { timeoutMs: 10_000 });
      return {
        ...base,
        available: true,
        version: parseQemuVersion(version.stdout),
        microvm: hasMicrovm(machines.stdout),
      };
    } catch (err) {
      return {
        ...base,
        available: false,
        version: null,
        microvm: false,
        reason: errorMessage(err),
      };
    }
  }

  async start(spec: VmSpec): Promise<VmHandle> {
    await fsp.mkdir(spec.workDir, { recursive: true });
    await fsp.mkdir(path.dirname(spec.qmpSocket), { recursive: true, mode: 0o700 });
    await Promise.all(
      [spec.qmpSocket, spec.consoleSocket, spec.controlSocket].map((f) => removeStale(f)),
    );
    const vmmLog = path.join(spec.workDir, 'vmm.log');
    const cmd = await this.command(spec);
    const passt = spec.net?.mode === 'user' && spec.net.stack === 'passt' ? spec.net : undefined;
    if (passt) {
      const guarded = this.egressGuard && spec.jail !== undefined && this.confined;
      await startPasst(
        spec,
        passt.forwards,
        (program, args) => this.passtCommand(spec, program, args),
        guarded,
      );
    }
    const log = await fsp.open(vmmLog, 'a');
    let child: ChildProcess;
    try {
      // Own process group: a daemon restart (or its process group getting a
      // signal) does not take the VMs down. The child stays referenced while a
      // handle is attached (so `exited` can settle); detach() unrefs it.
      child = spawn(cmd.file, cmd.args, { detached: true, stdio: ['ignore', log.fd, log.fd] });
    } finally {
      await log.close();
    }
    const gone = new Promise<Error | null>((resolve) => {
      child.once('error', (err) => resolve(err));
      child.once('exit', () => resolve(null));
    });
    const sockets: VmSockets = {
      qmpSocket: spec.qmpSocket,
      consoleSocket: spec.consoleSocket,
      controlSocket: spec.controlSocket,
    };
    let qmp: QmpClient | undefined;
    let consoleSock: net.Socket | undefined;
    try {
      const deadline = Date.now() + this.startTimeoutMs;
      await waitForFile(spec.qmpSocket, this.startTimeoutMs, gone);
      qmp = await connectQmp(spec.qmpSocket, deadline, gone);
      // Chardevs exist before the monitor greets, so the console socket is there.
      consoleSock = await connectUnix(spec.consoleSocket);
      const pid = child.pid;
      if (pid === undefined) throw vmmError('spawn', 'QEMU has no pid');
      const handle = new QemuVmHandle({ pid, sockets, qmp, console: consoleSock, child });
      if (spec.incoming !== undefined) {
        // Restore: load the saved state; the VM stays paused for the caller to resume.
        await loadSnapshot(qmp, spec.incoming, path.dirname(spec.qmpSocket));
      } else {
        // Started with -S: the console is connected, let the vCPUs run.
        await qmp.execute('cont');
      }
      return handle;
    } catch (err) {
      qmp?.close();
      consoleSock?.destroy();
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        child.kill('SIGKILL');
      }
      const spawnErr = await gone;
      await this.releaseCgroup(spec.id); // the VMM never ran: nothing else will
      if (passt) await killPasst(spec); // it waits for a VMM that will never connect
      if (spawnErr && errnoCode(spawnErr) === 'ENOENT') {
        throw vmmError('spawn', `${this.binary} is not installed (not found on PATH)`, {
          cause: spawnErr,
        });
      }
      const tail = await logTail(vmmLog);
      const why = isVesselError(err) ? err.message : errorMessage(err);
      throw vmmError(
        'spawn',
        `QEMU for VM "${spec.id}" failed to start: ${why}${tail ? `; ${vmmLog}: ${tail}` : ''}`,
        { cause: err, details: { vmmLog } },
      );
    }
  }

  async adopt(pid: number, sockets: VmSockets): Promise<VmHandle> {
    if (!(await pidAlive(pid))) {
      throw vmmError('gone', `cannot adopt VM: QEMU pid ${pid} is not running`);
    }
    // Guard against pid reuse: the process must be the QEMU that owns this QMP socket.
    const argv = (await pidCmdline(pid)) ?? [];
    const qmpArg = qemuOptValue(sockets.qmpSocket);
    if (!argv.some((a) => a.includes(qmpArg))) {
      throw vmmError('gone', `cannot adopt VM: pid ${pid} is not QEMU with ${sockets.qmpSocket}`, {
        details: { pid },
      });
    }
    const qmp = await QmpClient.connect(sockets.qmpSocket, { timeoutMs: this.startTimeoutMs });
    const consoleSock = await connectUnix(sockets.consoleSocket).catch(() => undefined);
    return new QemuVmHandle({ pid, sockets, qmp, console: consoleSock });
  }
}
