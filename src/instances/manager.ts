import fs from 'node:fs/promises';
import { VesselError, errnoCode, errorMessage } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import type { Subscription } from '../events/index.js';
import type { ExecRequest, ExecSession } from '../guest/index.js';
import { adopt } from './adopt.js';
import { InstanceCore, type InstanceManagerOptions } from './core.js';
import { create } from './create.js';
import { fork } from './fork.js';
import type { GuestConfig } from './guest-config.js';
import { waitForState, type LifecycleEvent, type WaitResult } from './lifecycle.js';
import { pauseLocked, resume, start, stop } from './power.js';
import { detach, onExit } from './runtime.js';
import { restore, standby } from './standby.js';
import { VMM_ACTIVE, type InstanceState } from './state.js';
import type { CreateInstanceRequest, Instance, InstanceEvent } from './types.js';
import { view } from './view.js';

export type { InstanceManagerOptions } from './core.js';

export type LogSource = 'app' | 'vmm' | 'daemon';

/**
 * Instances: create (resolve + auto-pull with no global lock → a
 * milliseconds-long reservation → boot under the per-instance lock), start,
 * stop, pause, resume, standby, restore, fork, delete, exec, logs, wait.
 * `Running` is reported only after the guest's program-start and
 * agent-ready markers and the agent's hello. Every change goes out on one
 * lifecycle bus. Each operation lives in its own module; this class is the
 * public face.
 */
export class InstanceManager {
  private readonly core: InstanceCore;

  constructor(options: InstanceManagerOptions) {
    this.core = new InstanceCore(options);
    this.core.bus.subscribe((e) => this.writeDaemonLog(e), {
      name: 'daemon-log',
      bufferSize: 4096,
    });
  }

  /**
   * Reconcile every row with reality: VMs still running from an earlier
   * daemon are re-adopted; rows whose VMM is gone become Stopped.
   */
  async init(): Promise<void> {
    const core = this.core;
    await ensureDir(core.o.paths.instancesDir, 0o700);
    await Promise.all(
      core.repo
        .list()
        .filter((row) => VMM_ACTIVE.has(row.state as InstanceState))
        .map((row) =>
          core
            .locked(row.id, () => adopt(core, row))
            .catch((err: unknown) => {
              core.log.warn({ instance: row.name, err: errorMessage(err) }, 're-adoption failed');
              core.settleStopped(row.id, `could not re-adopt the VM: ${errorMessage(err)}`);
            }),
        ),
    );
  }

  /** Follow log bytes and state changes synchronously (used by log streams). */
  subscribe(listener: (e: InstanceEvent) => void): () => void {
    return this.core.topic.subscribe(listener);
  }

  /** Subscribe to the lifecycle bus (bounded queue; a slow handler only delays itself). */
  subscribeLifecycle(
    handler: (e: LifecycleEvent) => void | Promise<void>,
    options: { filter?: (e: LifecycleEvent) => boolean; name?: string } = {},
  ): Subscription {
    return this.core.bus.subscribe(handler, options);
  }

  list(): Instance[] {
    return this.core.repo.list().map(view);
  }

  get(idOrName: string): Instance {
    return view(this.core.row(idOrName));
  }

  /** Create and boot an instance; resolves once it is Initializing (boot continues). */
  create(req: CreateInstanceRequest): Promise<Instance> {
    return create(this.core, req);
  }

  async start(idOrName: string): Promise<Instance> {
    const { id } = this.core.row(idOrName);
    await start(this.core, id);
    return this.get(id);
  }

  async stop(idOrName: string, options: { timeoutMs?: number } = {}): Promise<Instance> {
    const { id } = this.core.row(idOrName);
    await stop(this.core, id, options.timeoutMs);
    return this.get(id);
  }

  async pause(idOrName: string): Promise<Instance> {
    const { id } = this.core.row(idOrName);
    await this.core.locked(id, () => pauseLocked(this.core, id));
    return this.get(id);
  }

  async resume(idOrName: string): Promise<Instance> {
    const { id } = this.core.row(idOrName);
    await resume(this.core, id);
    return this.get(id);
  }

  async standby(idOrName: string): Promise<Instance> {
    const { id } = this.core.row(idOrName);
    await standby(this.core, id);
    return this.get(id);
  }

  async restore(idOrName: string): Promise<Instance> {
    const { id } = this.core.row(idOrName);
    await restore(this.core, id);
    return this.get(id);
  }

  fork(idOrName: string, req: { name?: string } = {}): Promise<Instance> {
    return fork(this.core, idOrName, req);
  }

  /** Delete an instance: kill its VM and remove its row and files. */
  async delete(idOrName: string): Promise<void> {
    const core = this.core;
    const { id } = core.row(idOrName);
    await core.locked(id, async () => {
      const rt = core.runtimes.get(id);
      if (rt) {
        rt.ending = 'stop';
        onExit(core, id, rt, await rt.handle.kill());
      }
      const last = core.row(id);
      core.repo.delete(id);
      core.emit('delete', last, { new_state: null });
      // Retries: the daemon-log writer may still append a line while the tree goes (ENOTEMPTY).
      await fs.rm(core.o.paths.instanceDir(id), { recursive: true, force: true, maxRetries: 5 });
    });
    core.topic.publish({ type: 'deleted', id });
  }

  /** Wait until the instance is in `state`, or `timeoutMs` passes. */
  waitForState(idOrName: string, state: InstanceState, timeoutMs: number): Promise<WaitResult> {
    const core = this.core;
    const row = core.row(idOrName);
    return waitForState(
      {
        bus: core.bus,
        read: () => core.repo.get(row.id)?.state as InstanceState | undefined,
        pollMs: core.o.waitPollMs ?? 5000,
      },
      row.id,
      row.name,
      state,
      timeoutMs,
    );
  }

  /** Run a command in a Running instance. Takes no lock: long I/O never blocks stop or delete. */
  exec(idOrName: string, req: ExecRequest): ExecSession {
    const row = this.core.row(idOrName);
    const rt = this.core.runtimes.get(row.id);
    if (row.state !== 'Running' || !rt?.guest) {
      throw new VesselError(
        'conflict',
        `instance "${row.name}" is ${row.state}; exec needs it Running`,
      );
    }
    // Like `docker exec`: the instance's environment, then the request's overrides.
    const base = ((row.guest as Partial<GuestConfig>).env ?? []).filter(
      (kv) => !(req.env ?? []).some((o) => o.split('=')[0] === kv.split('=')[0]),
    );
    return rt.guest.exec({ ...req, env: [...base, ...(req.env ?? [])] });
  }

  /** Log file by source: `app` (console, markers removed), `vmm` (QEMU's own output), `daemon`. */
  logPath(idOrName: string, source: LogSource): string {
    const file = { app: 'app.log', vmm: 'vmm.log', daemon: 'daemon.log' }[source];
    return this.core.o.paths.instanceFile(this.core.row(idOrName).id, file);
  }

  /**
   * Daemon shutdown. By default the VMs keep running and the next daemon
   * re-adopts them; with `stopVms` they are stopped.
   */
  async shutdown(options: { stopVms?: boolean } = {}): Promise<void> {
    const core = this.core;
    if (options.stopVms) {
      await Promise.allSettled([...core.runtimes.keys()].map((id) => stop(core, id, 5000)));
      return;
    }
    for (const [id, rt] of [...core.runtimes]) detach(core, id, rt);
  }

  /**
   * The per-instance daemon log is one more bus consumer, so writing it never
   * sits on the path of a state change (or of the waiters it wakes).
   */
  private async writeDaemonLog(event: LifecycleEvent): Promise<void> {
    const states =
      event.old_state === event.new_state
        ? (event.new_state ?? '')
        : `${event.old_state ?? '-'} → ${event.new_state ?? '-'}`;
    const err = event.state_error ? ` (${event.state_error})` : '';
    const line = `${event.time} ${event.type} ${states}${err}\n`;
    const id = event.instance_id;
    try {
      await fs.appendFile(this.core.o.paths.instanceFile(id, 'daemon.log'), line, {
        mode: 0o600,
      });
      this.core.topic.publish({ type: 'daemon-log', id, line });
    } catch (e) {
      // ENOENT: the instance (and its directory) is gone.
      if (errnoCode(e) !== 'ENOENT')
        this.core.log.warn({ err: e }, 'writing the daemon log failed');
    }
  }
}
