import fs from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { VesselError, errnoCode, errorMessage } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import type { Subscription } from '../events/index.js';
import type { ExecRequest, ExecSession } from '../guest/index.js';
import { adopt } from './adopt.js';
import { InstanceCore, type InstanceManagerOptions } from './core.js';
import { create } from './create.js';
import { fork } from './fork.js';
import * as io from './io.js';
import { logFile, type LogChunk, type LogSource, type ReadLogOptions } from './logs.js';
import { waitForState, type LifecycleEvent, type WaitResult } from './lifecycle.js';
import { pauseLocked, resume, start, stop } from './power.js';
import { detach, onExit } from './runtime.js';
import { Snapshots } from './snapshots.js';
import { restore, standby } from './standby.js';
import { VMM_ACTIVE, type InstanceState } from './state.js';
import type { CreateInstanceRequest, Instance, InstanceEvent } from './types.js';
import { view } from './view.js';
import type { PathInfo, InstanceStats } from '../core/wire-ops.js';
import { matchTags, type Tags } from '../core/tags.js';
import { forkFlow, type ForkFlowRequest } from './fork-flow.js';
import { update, type CommandOverrides, type InstancePatch } from './patch.js';
import { statPath } from './stat.js';
import * as files from './files.js';
import { collectStats } from './stats.js';
import { ExpiryTimer } from './ttl.js';
import * as volumes from './volumes.js';
import { Sessions } from './sessions.js';
import { Workspaces, type PrepareWorkspaceRequest, type WorkspaceInfo } from './workspace.js';
import { KeyedMutex } from '../core/sync.js';
import type { VolumeMountRequest } from '../volumes/index.js';

export type { InstanceManagerOptions } from './core.js';
export type { InstancePatch, CommandOverrides } from './patch.js';
export type { ForkFlowRequest } from './fork-flow.js';

export type { LogSource, LogChunk, ReadLogOptions } from './logs.js';
export type { MainControls } from './io.js';

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
  private readonly expiry: ExpiryTimer;
  /** Named snapshots: create, list, restore, fork, delete (snapshots.ts). */
  readonly snapshots: Snapshots;
  /** Workspace prepare/export, under their own per-instance lock (workspace.ts). */
  private readonly workspaces: Workspaces;
  /** Guest sessions: commands kept by the guest agent, attachable later (sessions.ts). */
  readonly sessions: Sessions;

  constructor(options: InstanceManagerOptions) {
    this.core = new InstanceCore(options);
    this.workspaces = new Workspaces(this.core, new KeyedMutex());
    this.sessions = new Sessions(this.core);
    this.snapshots = new Snapshots(this.core, options.snapshots, {
      get: (id) => this.get(id),
      start: (id) => this.start(id),
      stop: (id) => this.stop(id),
      standby: (id) => this.standby(id),
      restore: (id) => this.restore(id),
      waitRunning: (id) => this.waitRunning(id),
    });
    this.expiry = new ExpiryTimer({
      next: () => this.core.repo.nextExpiry(),
      expire: (id) => this.expire(id),
      logger: options.logger,
    });
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
    // Cgroups of VMMs that ended while no daemon ran (the adopted keep theirs).
    await this.core.o.hypervisor.sweepCgroups?.(new Set(this.core.runtimes.keys()));
    // TTL: what expired while no daemon ran goes now; then one timer for the next.
    await this.expiry.start();
    this.snapshots.init();
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

  /** Instances, optionally only those in `state` and carrying every tag of `tags`. */
  list(filter: { state?: InstanceState; tags?: Tags } = {}): Instance[] {
    return this.core.repo
      .list()
      .filter((r) => filter.state === undefined || r.state === filter.state)
      .filter((r) => matchTags(r.tags, filter.tags))
      .map(view);
  }

  get(idOrName: string): Instance {
    return view(this.core.row(idOrName));
  }

  /** Create and boot an instance; resolves once it is Initializing (boot continues). */
  async create(req: CreateInstanceRequest): Promise<Instance> {
    try {
      return await create(this.core, req);
    } finally {
      this.expiry.rearm();
    }
  }

  /** Boot a stopped instance; `overrides` replace its command for this and later boots. */
  async start(idOrName: string, overrides: CommandOverrides = {}): Promise<Instance> {
    const { id } = this.core.row(idOrName);
    await start(this.core, id, overrides);
    return this.get(id);
  }

  /** Change env, tags or expiry (PATCH); env reaches the main command at its next boot. */
  async update(idOrName: string, patch: InstancePatch): Promise<Instance> {
    const { id } = this.core.row(idOrName);
    await update(this.core, id, patch);
    this.expiry.rearm();
    return this.get(id);
  }

  /** A path in a Running instance's guest (`followLinks` false: lstat). */
  stat(idOrName: string, path: string, followLinks: boolean): Promise<PathInfo> {
    return statPath(this.core, idOrName, path, followLinks);
  }

  /** A tar stream of a guest path (Docker's `GET /archive`); 404 if missing, 409 unless Running. */
  archiveOut(idOrName: string, path: string): ReturnType<typeof files.archiveOut> {
    return files.archiveOut(this.core, idOrName, path);
  }

  /** Unpack a tar stream into a guest directory (Docker's `PUT /archive`). */
  archiveIn(idOrName: string, path: string, body: Readable): Promise<void> {
    return files.archiveIn(this.core, idOrName, path, body);
  }

  /** A guest directory's entries or a file's bytes (`GET /files`). */
  openPath(idOrName: string, path: string): Promise<files.OpenedPath> {
    return files.openPath(this.core, idOrName, path);
  }

  /** Write one guest file, parents created (`PUT /files`). */
  /** The root filesystem's changes since boot, as an OCI layer tar (builds). */
  diff(idOrName: string, exclude: readonly string[]): Readable {
    return files.diffOut(this.core, idOrName, exclude);
  }

  writeFile(idOrName: string, path: string, mode: number, body: Readable): Promise<void> {
    return files.writeFile(this.core, idOrName, path, mode, body);
  }

  /** Remove a guest path (`DELETE /files`). */
  removePath(idOrName: string, path: string, recursive: boolean): Promise<void> {
    return files.removePath(this.core, idOrName, path, recursive);
  }

  /**
   * Stream a repository into the guest at `req.path` (a tar with the history
   * bundle) and set up git there; under the instance's workspace lock.
   */
  prepareWorkspace(
    idOrName: string,
    req: PrepareWorkspaceRequest,
    body: Readable,
  ): Promise<WorkspaceInfo> {
    return this.workspaces.prepare(idOrName, req, body);
  }

  /** The guest's changes at `path` as a binary git patch (see Workspaces.patch). */
  workspacePatch(
    idOrName: string,
    path: string,
    since: 'head' | 'prepared' = 'head',
  ): Promise<Readable> {
    return this.workspaces.patch(idOrName, path, since);
  }

  /** CPU, memory, network and disk use of an instance's VM. */
  stats(idOrName: string): Promise<InstanceStats> {
    return collectStats(this.core, idOrName);
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

  async fork(idOrName: string, req: { name?: string } = {}): Promise<Instance> {
    const forked = await fork(this.core, idOrName, req);
    this.expiry.rearm(); // a fork keeps its source's expiry
    return forked;
  }

  /** Attach a volume to a Stopped instance (the rules are checked in the reservation). */
  attachVolume(idOrName: string, mount: VolumeMountRequest): Promise<Instance> {
    return volumes.attachVolume(this.core, idOrName, mount);
  }

  /** Detach a volume from a Stopped instance (its private overlay layer is removed). */
  detachVolume(idOrName: string, volumeIdOrName: string): Promise<Instance> {
    return volumes.detachVolume(this.core, idOrName, volumeIdOrName);
  }

  /** Fork with the hypeman API's options: a Running source (`from_running`), a target state. */
  forkTo(idOrName: string, req: ForkFlowRequest): Promise<Instance> {
    return forkFlow(
      {
        get: (id) => this.get(id),
        fork: (id, r) => this.fork(id, r),
        standby: (id) => this.standby(id),
        restore: (id) => this.restore(id),
        start: (id) => this.start(id),
        stop: (id) => this.stop(id),
        waitRunning: (id) => this.waitRunning(id),
      },
      idOrName,
      req,
    );
  }

  /** Wait for a boot to reach Running (boot timeout), or a `timeout` error naming the state. */
  private async waitRunning(id: string): Promise<void> {
    const w = await this.waitForState(id, 'Running', this.core.o.bootTimeoutMs ?? 120_000);
    if (w.timed_out) {
      throw new VesselError('timeout', `instance "${id}" did not reach Running (is ${w.state})`);
    }
  }

  /** TTL: the expire event, then the delete — unless the expiry moved meanwhile. */
  private async expire(id: string): Promise<void> {
    const row = this.core.repo.get(id);
    if (!row?.expires_at || Date.parse(row.expires_at) > Date.now()) return;
    this.core.log.info({ instance: row.name, expires_at: row.expires_at }, 'instance expired');
    this.core.emit('expire', row);
    await this.delete(id);
  }

  /**
   * Delete an instance: kill its VM and remove its row and files. Its named
   * snapshots stay (they can still be forked) unless `deleteSnapshots`.
   */
  async delete(idOrName: string, options: { deleteSnapshots?: boolean } = {}): Promise<void> {
    const core = this.core;
    const { id } = core.row(idOrName);
    await core.locked(id, async () => {
      const rt = core.runtimes.get(id);
      if (rt) {
        rt.ending = 'stop';
        await onExit(core, id, rt, await rt.handle.kill());
      }
      const last = core.row(id);
      core.repo.delete(id);
      core.emit('delete', last, { new_state: null });
      // Retries: the daemon-log writer may still append a line while the tree goes (ENOTEMPTY).
      await fs.rm(core.o.paths.instanceDir(id), { recursive: true, force: true, maxRetries: 5 });
    });
    await core.o.hypervisor.releaseCgroup?.(id); // also after a VMM that failed to start
    await this.snapshots.instanceDeleted(id, options.deleteSnapshots ?? false);
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

  /**
   * Run a command in the guest; an instance still booting is waited for.
   * Takes no lock: long I/O never blocks stop or delete.
   */
  exec(idOrName: string, req: ExecRequest): Promise<ExecSession> {
    return io.exec(this.core, idOrName, req);
  }

  /** The main command's stdin, signals and terminal size (attach). */
  mainControls(idOrName: string): io.MainControls {
    return io.mainControls(this.core, idOrName);
  }

  /** A log's bytes; with `follow`, until the instance stops (see logs.ts). */
  logs(
    idOrName: string,
    source: LogSource,
    options: ReadLogOptions = {},
  ): AsyncGenerator<LogChunk> {
    return io.logs(this.core, idOrName, source, options);
  }

  /** `app` for exec mode, `console` when the image's own init runs (systemd mode). */
  defaultLogSource(idOrName: string): LogSource {
    return io.defaultLogSource(this.core, idOrName);
  }

  /** The file behind a log source (tests, diagnostics). */
  logPath(idOrName: string, source: LogSource): string {
    return logFile(this.core, this.core.row(idOrName).id, source);
  }

  /**
   * Daemon shutdown. By default the VMs keep running and the next daemon
   * re-adopts them; with `stopVms` they are stopped.
   */
  async shutdown(options: { stopVms?: boolean } = {}): Promise<void> {
    const core = this.core;
    this.expiry.stop();
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
