/**
 * A running QEMU VM: QMP for control, the console socket for live output,
 * and exit detection (the child's exit event when this process spawned it;
 * otherwise the QMP socket closing, confirmed through /proc).
 */
import type { ChildProcess } from 'node:child_process';
import { dirname } from 'node:path';
import type net from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { vmmError } from '../errors.js';
import type {
  BlockStats,
  StopOptions,
  VmEvent,
  VmEventListener,
  VmEventType,
  VmExit,
  VmHandle,
  VmInfo,
  VmSockets,
  VmState,
} from '../types.js';
import { pidAlive } from './proc.js';
import type { QmpClient, QmpEvent } from './qmp.js';
import { saveSnapshot } from './snapshot.js';

const EVENT_TYPES: Record<string, VmEventType> = {
  STOP: 'stopped',
  RESUME: 'resumed',
  SHUTDOWN: 'shutdown',
  POWERDOWN: 'powerdown',
  RESET: 'reset',
  GUEST_PANICKED: 'guest-panicked',
};

/** How long `quit` gets before SIGKILL. */
const QUIT_GRACE_MS = 2000;

export type ConsoleListener = (chunk: Buffer) => void;

export interface QemuVmHandleOptions {
  readonly pid: number;
  readonly sockets: VmSockets;
  readonly qmp: QmpClient;
  /** The console stream, when connected. */
  readonly console?: net.Socket | undefined;
  /** Present when this process spawned QEMU: its exit event is authoritative. */
  readonly child?: ChildProcess | undefined;
}

/** Map QMP `query-status` to the interface's coarse state. */
export function stateFromQmpStatus(status: string): VmState {
  switch (status) {
    case 'running':
      return 'running';
    case 'shutdown':
    case 'guest-panicked':
      return 'shutdown';
    default:
      return 'paused';
  }
}

export class QemuVmHandle implements VmHandle {
  readonly pid: number;
  readonly qmpSocket: string;
  readonly controlSocket: string;
  readonly consoleSocket: string;
  readonly exited: Promise<VmExit>;
  private readonly qmp: QmpClient;
  private readonly console: net.Socket | undefined;
  private readonly child: ChildProcess | undefined;
  private readonly listeners = new Set<VmEventListener>();
  private readonly consoleListeners = new Set<ConsoleListener>();
  private exit: VmExit | undefined;
  private detached = false;

  constructor(opts: QemuVmHandleOptions) {
    this.pid = opts.pid;
    this.qmpSocket = opts.sockets.qmpSocket;
    this.controlSocket = opts.sockets.controlSocket;
    this.consoleSocket = opts.sockets.consoleSocket;
    this.qmp = opts.qmp;
    this.console = opts.console;
    this.child = opts.child;
    this.qmp.onEvent((ev) => this.forwardQmpEvent(ev));
    this.console?.on('data', (chunk: Buffer) => {
      for (const l of this.consoleListeners) l(chunk);
    });
    this.console?.on('error', () => undefined);
    this.exited = (opts.child ? this.childExit(opts.child) : this.watchExit()).then((exit) => {
      this.exit = exit;
      this.qmp.close();
      this.console?.destroy();
      if (!this.detached) {
        this.emit({ type: 'exited', raw: 'exit', data: { ...exit }, at: new Date() });
      }
      return exit;
    });
  }

  onEvent(listener: VmEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Follow the serial console live (bytes as the guest writes them). */
  onConsole(listener: ConsoleListener): () => void {
    this.consoleListeners.add(listener);
    return () => this.consoleListeners.delete(listener);
  }

  async pause(): Promise<void> {
    await this.command('stop');
  }

  async resume(): Promise<void> {
    await this.command('cont');
  }

  async snapshot(path: string): Promise<void> {
    this.assertAlive('snapshot');
    // The run directory (the sockets' directory) is the one the jailed hypervisor can reach.
    await saveSnapshot(this.qmp, path, dirname(this.qmpSocket));
  }

  async info(): Promise<VmInfo> {
    if (this.exit) return { state: 'exited', status: 'exited', pid: this.pid };
    try {
      const res = await this.qmp.execute<{ status: string }>('query-status');
      return { state: stateFromQmpStatus(res.status), status: res.status, pid: this.pid };
    } catch (err) {
      if (!(await pidAlive(this.pid))) return { state: 'exited', status: 'exited', pid: this.pid };
      throw err;
    }
  }

  async blockStats(): Promise<BlockStats[]> {
    this.assertAlive('query-blockstats');
    const res =
      await this.qmp.execute<
        { device?: string; qdev?: string; stats: { rd_bytes: number; wr_bytes: number } }[]
      >('query-blockstats');
    return res.map((b) => ({
      device: b.device || b.qdev || '',
      readBytes: b.stats.rd_bytes,
      writeBytes: b.stats.wr_bytes,
    }));
  }

  async stop(options: StopOptions = {}): Promise<VmExit> {
    const graceful = options.graceful ?? true;
    const timeoutMs = options.timeoutMs ?? 5000;
    if (this.exit) return this.exit;
    if (graceful) {
      // A paused guest cannot answer the power button: skip straight to quit.
      const info = await this.info().catch(() => undefined);
      if (info?.state === 'running') {
        await this.qmp.execute('system_powerdown').catch(() => undefined);
        if (await this.exitedWithin(timeoutMs)) return this.exited;
      }
    }
    await this.qmp.execute('quit').catch(() => undefined);
    if (await this.exitedWithin(QUIT_GRACE_MS)) return this.exited;
    return this.kill();
  }

  async kill(): Promise<VmExit> {
    if (this.exit) return this.exit;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      /* already gone: exited settles */
    }
    return this.exited;
  }

  detach(): void {
    this.detached = true;
    this.listeners.clear();
    this.consoleListeners.clear();
    this.qmp.close();
    this.console?.destroy();
    this.child?.unref();
  }

  private async exitedWithin(ms: number): Promise<boolean> {
    const ac = new AbortController();
    const timer = delay(ms, false, { signal: ac.signal }).catch(() => false);
    const done = await Promise.race([this.exited.then(() => true), timer]);
    ac.abort();
    return done;
  }

  private assertAlive(op: string): void {
    if (this.exit) throw vmmError('gone', `cannot ${op}: QEMU (pid ${this.pid}) has exited`);
  }

  private async command(cmd: string): Promise<void> {
    this.assertAlive(cmd);
    await this.qmp.execute(cmd);
  }

  private emit(ev: VmEvent): void {
    for (const l of this.listeners) l(ev);
  }

  private forwardQmpEvent(ev: QmpEvent): void {
    const type = EVENT_TYPES[ev.event];
    if (type === undefined) return;
    const at = ev.timestamp
      ? new Date(ev.timestamp.seconds * 1000 + Math.floor(ev.timestamp.microseconds / 1000))
      : new Date();
    this.emit({ type, raw: ev.event, data: ev.data, at });
  }

  private childExit(child: ChildProcess): Promise<VmExit> {
    if (child.exitCode !== null || child.signalCode !== null) {
      return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
    }
    return new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
  }

  /**
   * Adopted VM: QEMU closes its QMP socket when it exits, which wakes us at
   * once; /proc confirms (QEMU may close sockets a moment before it is gone).
   * If QMP closed while the process lives on (or was detached), poll slowly.
   */
  private async watchExit(): Promise<VmExit> {
    await this.qmp.closed;
    let interval = 10;
    while (await pidAlive(this.pid)) {
      if (this.detached) return new Promise<never>(() => undefined);
      await delay(interval);
      interval = Math.min(interval * 2, 1000);
    }
    return { code: null, signal: null };
  }
}
