import { randomBytes } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import type { Registry } from 'prom-client';
import { VesselError, errnoCode, errorMessage, isVesselError } from '../core/errors.js';
import { ensureDir, writeFileAtomic } from '../core/fs.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';
import { run } from '../core/process.js';
import { KeyedMutex, Mutex } from '../core/sync.js';
import { Topic, type LifecycleBus, type Subscription } from '../events/index.js';
import {
  GuestClient,
  MarkerParser,
  type BootMarker,
  type ExecRequest,
  type ExecSession,
} from '../guest/index.js';
import type { Image, ImageManager } from '../images/index.js';
import {
  DEFAULT_KERNEL,
  buildInitramfs,
  ensureKernel,
  listKernels,
  type Kernel,
} from '../kernels/index.js';
import type { InstanceRow, InstancesRepo } from '../store/index.js';
import {
  GUEST_KERNEL_ARGS,
  pidAlive,
  type Accel,
  type Hypervisor,
  type VmExit,
  type VmHandle,
} from '../vmm/index.js';
import {
  CONFIG_SERIAL,
  OVERLAY_SERIAL,
  ROOT_SERIAL,
  buildGuestConfig,
  createOverlayDisk,
  writeConfigDisk,
  type GuestConfig,
} from './guest-config.js';
import {
  InstanceMetrics,
  newLifecycleBus,
  waitForState,
  type LifecycleEvent,
  type LifecycleEventInput,
  type LifecycleEventType,
  type WaitResult,
} from './lifecycle.js';
import { checkRestorable, readSnapshotMeta, snapshotPaths, writeSnapshotMeta } from './standby.js';
import {
  assertPortsFree,
  guestDiskConfig,
  forkNetwork,
  resolveNetwork,
  rethrowStartFailure,
  vmNet,
  withNetwork,
} from './network.js';
import { VMM_ACTIVE, assertTransition, type InstanceState } from './state.js';
import type { CreateInstanceRequest, Instance, InstanceEvent } from './types.js';
import { view } from './view.js';

export interface InstanceManagerOptions {
  readonly paths: Paths;
  readonly repo: InstancesRepo;
  readonly images: ImageManager;
  readonly hypervisor: Hypervisor;
  readonly logger: Logger;
  readonly guestBinary: string;
  /** Decides KVM or TCG (by trying; cached by the caller). */
  readonly accel: () => Promise<Accel>;
  readonly tscKhz?: number;
  readonly kernel?: string;
  readonly bootTimeoutMs?: number;
  readonly defaults?: { vcpus?: number; memory_mib?: number; disk_bytes?: number };
  /** Prometheus registry for the bus and lock metrics. */
  readonly metrics?: Registry;
  /** Per-subscriber queue bound of the lifecycle bus (default 256). */
  readonly lifecycleBufferSize?: number;
  /** `waitForState`'s fallback re-read interval (default 5000 ms). */
  readonly waitPollMs?: number;
}

/** Live state of a VM this daemon drives. */
interface Runtime {
  readonly handle: VmHandle;
  /** The app log, appended synchronously so readers never miss published bytes. */
  readonly logFd: number;
  readonly parser: MarkerParser;
  guest: GuestClient | undefined;
  marks: { programStart: boolean; agentReady: boolean };
  /** Set when Vessel ends the VMM on purpose (stop, delete, standby). */
  ending: 'stop' | 'standby' | undefined;
  /** The guest powered off (QMP SHUTDOWN) before the VMM exited. */
  guestShutdown: boolean;
  /** When the create request arrived, for the create-time metric (first boot only). */
  createStartedAt: number | undefined;
}

/** Where each boot starts in the serial and app logs: re-adoption replays from here. */
interface BootOffsets {
  readonly serial_offset: number;
  readonly app_offset: number;
}

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const FIRST_CID = 3;

/**
 * Instances: create (resolve + auto-pull with no global lock → a
 * milliseconds-long reservation → boot under the per-instance lock), start,
 * stop, pause, resume, standby, restore, fork, delete, exec, logs, wait.
 * `Running` is reported only after the guest's program-start and
 * agent-ready markers and the agent's hello. Every change goes out on one
 * lifecycle bus.
 */
export class InstanceManager {
  private readonly o: InstanceManagerOptions;
  private readonly log: Logger;
  /** Synchronous stream of log bytes and state changes (log followers). */
  private readonly topic: Topic<InstanceEvent>;
  private readonly bus: LifecycleBus<LifecycleEvent>;
  private readonly metrics: InstanceMetrics | undefined;
  private readonly reservation = new Mutex();
  private readonly locks = new KeyedMutex();
  private readonly runtimes = new Map<string, Runtime>();
  private seq = 0;

  constructor(options: InstanceManagerOptions) {
    this.o = options;
    this.log = options.logger;
    this.topic = new Topic({
      onListenerError: (err) => this.log.error({ err }, 'instance listener failed'),
    });
    this.bus = newLifecycleBus(options.lifecycleBufferSize ?? 256, {
      onDrop: () => this.metrics?.dropped.inc(),
      onError: (err, sub) =>
        this.log.error({ err, subscriber: sub }, 'lifecycle subscriber failed'),
    });
    this.metrics = options.metrics
      ? new InstanceMetrics(options.metrics, () => this.bus)
      : undefined;
    this.bus.subscribe((e) => this.writeDaemonLog(e), { name: 'daemon-log', bufferSize: 4096 });
  }

  /**
   * Reconcile every row with reality: VMs still running from an earlier
   * daemon are re-adopted; rows whose VMM is gone become Stopped.
   */
  async init(): Promise<void> {
    await ensureDir(this.o.paths.instancesDir, 0o700);
    await Promise.all(
      this.o.repo
        .list()
        .filter((row) => VMM_ACTIVE.has(row.state as InstanceState))
        .map((row) =>
          this.locked(row.id, () => this.adopt(row)).catch((err: unknown) => {
            this.log.warn({ instance: row.name, err: errorMessage(err) }, 're-adoption failed');
            this.settleStopped(row.id, `could not re-adopt the VM: ${errorMessage(err)}`);
          }),
        ),
    );
  }

  /** Follow log bytes and state changes synchronously (used by log streams). */
  subscribe(listener: (e: InstanceEvent) => void): () => void {
    return this.topic.subscribe(listener);
  }

  /** Subscribe to the lifecycle bus (bounded queue; a slow handler only delays itself). */
  subscribeLifecycle(
    handler: (e: LifecycleEvent) => void | Promise<void>,
    options: { filter?: (e: LifecycleEvent) => boolean; name?: string } = {},
  ): Subscription {
    return this.bus.subscribe(handler, options);
  }

  list(): Instance[] {
    return this.o.repo.list().map(view);
  }

  get(idOrName: string): Instance {
    return view(this.row(idOrName));
  }

  private row(idOrName: string): InstanceRow {
    const r = this.o.repo.get(idOrName) ?? this.o.repo.byName(idOrName);
    if (!r)
      throw new VesselError('not_found', `instance "${idOrName}" not found`, {
        details: { instance: idOrName },
      });
    return r;
  }

  /** Publish one lifecycle event and note it in the instance's daemon log. */
  private emit(
    type: LifecycleEventType,
    row: InstanceRow,
    extra: Partial<LifecycleEventInput> = {},
  ) {
    const event: LifecycleEvent = {
      seq: ++this.seq,
      type,
      instance_id: row.id,
      instance_name: row.name,
      old_state: ('old_state' in extra ? extra.old_state : row.state) as InstanceState | null,
      new_state: ('new_state' in extra ? extra.new_state : row.state) as InstanceState | null,
      time: new Date().toISOString(),
      state_error: extra.state_error ?? row.state_error,
      ...(extra.source_id ? { source_id: extra.source_id } : {}),
    };
    this.metrics?.events.inc({ type });
    this.bus.publish(event);
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
      await fs.appendFile(this.o.paths.instanceFile(id, 'daemon.log'), line, { mode: 0o600 });
      this.topic.publish({ type: 'daemon-log', id, line });
    } catch (e) {
      // ENOENT: the instance (and its directory) is gone.
      if (errnoCode(e) !== 'ENOENT') this.log.warn({ err: e }, 'writing the daemon log failed');
    }
  }

  /** Write and publish; the single path for every state change. */
  private save(row: InstanceRow, from: InstanceState | null): InstanceRow {
    this.o.repo.update(row);
    this.topic.publish({ type: 'state', id: row.id, from, instance: view(row) });
    if (from !== row.state)
      this.emit('state', row, { old_state: from, new_state: row.state as InstanceState });
    return row;
  }

  private transition(id: string, to: InstanceState, patch: Partial<InstanceRow> = {}): InstanceRow {
    const row = this.o.repo.get(id);
    if (!row) throw new VesselError('not_found', `instance ${id} vanished`);
    const from = row.state as InstanceState;
    if (from !== to) assertTransition(row.name, from, to);
    return this.save({ ...row, ...patch, state: to }, from);
  }

  /** Run `fn` under instance `id`'s lock, recording how long the lock was held. */
  private async locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(id, async () => {
      const t0 = performance.now();
      try {
        return await fn();
      } finally {
        this.metrics?.lockHold.observe({ lock: 'instance' }, (performance.now() - t0) / 1000);
      }
    });
  }

  /** The one global lock: milliseconds, around name checks, resource allocation and the insert. */
  private reserve<T>(fn: () => T): Promise<T> {
    return this.reservation.run(() => {
      const t0 = performance.now();
      try {
        return fn();
      } finally {
        this.metrics?.lockHold.observe({ lock: 'reservation' }, (performance.now() - t0) / 1000);
      }
    });
  }

  private assertNameFree(name: string): void {
    if (this.o.repo.byName(name)) {
      throw new VesselError('already_exists', `an instance named "${name}" already exists`, {
        details: { name },
      });
    }
  }

  private nextCid(): number {
    const used = this.o.repo.cids();
    let cid = FIRST_CID;
    while (used.has(cid)) cid += 1;
    return cid;
  }

  private checkName(name: string | undefined): void {
    if (name !== undefined && !NAME.test(name)) {
      throw new VesselError(
        'invalid_argument',
        `instance name "${name}" must be lowercase letters, digits, '.', '_' or '-' (max 63)`,
      );
    }
  }

  /** Create and boot an instance; resolves once it is Initializing (boot continues). */
  async create(req: CreateInstanceRequest): Promise<Instance> {
    const startedAt = performance.now();
    this.checkName(req.name);
    // Phase 1: resolve (auto-pull) with no global lock.
    const image = await this.resolveImage(req.image);
    const kernel = await ensureKernel(this.o.kernel ?? DEFAULT_KERNEL, {
      dataDir: this.o.paths.dataDir,
    });
    const id = randomBytes(8).toString('hex');
    const name = req.name ?? `vm-${id.slice(0, 6)}`;
    const network = resolveNetwork(id, req);
    const guest = buildGuestConfig({
      image,
      hostname: name,
      ...(req.cmd ? { cmd: req.cmd } : {}),
      ...(req.entrypoint ? { entrypoint: req.entrypoint } : {}),
      ...(req.env ? { env: req.env } : {}),
      ...(req.workdir ? { workdir: req.workdir } : {}),
      ...(req.user ? { user: req.user } : {}),
    });
    // Phase 2: the reservation — milliseconds, under the one global lock.
    const row = await this.reserve(() => {
      this.assertNameFree(name);
      const r: InstanceRow = {
        id,
        name,
        image: image.name,
        image_digest: image.digest!,
        state: 'Created',
        state_error: null,
        kernel: `${kernel.name}/${kernel.version}`,
        hypervisor: this.o.hypervisor.name,
        accel: null,
        vcpus: req.vcpus ?? this.o.defaults?.vcpus ?? 1,
        memory_mib: req.memory_mib ?? this.o.defaults?.memory_mib ?? 512,
        disk_bytes: req.disk_bytes ?? this.o.defaults?.disk_bytes ?? 4 * 1024 ** 3,
        guest: withNetwork(guest, network),
        pid: null,
        sockets: null,
        exit_code: null,
        created_at: new Date().toISOString(),
        started_at: null,
        stopped_at: null,
        cid: this.nextCid(),
        source_id: null,
      };
      this.o.repo.insert(r);
      return r;
    });
    await ensureDir(this.o.paths.instanceDir(id), 0o700);
    this.topic.publish({ type: 'state', id, from: null, instance: view(row) });
    this.emit('create', row, { old_state: null });
    // Phase 3: boot under the per-instance lock only.
    await this.locked(id, () => this.boot(id, { createStartedAt: startedAt }));
    return this.get(id);
  }

  private async resolveImage(ref: string): Promise<Image> {
    try {
      const img = this.o.images.get(ref);
      if (img.status === 'ready') return img;
      return await this.o.images.waitForReady(img.name);
    } catch (err) {
      if (!isVesselError(err, 'image_not_found')) throw err;
    }
    const pulling = this.o.images.pull(ref);
    return this.o.images.waitForReady(pulling.name);
  }

  /**
   * Start the VMM for instance `id`: a fresh boot (→ Initializing), or, with
   * `restoreFrom`, loading a standby snapshot (→ Paused, guest already up).
   */
  private async boot(
    id: string,
    opts: { restoreFrom?: string; createStartedAt?: number } = {},
  ): Promise<Runtime> {
    const row = this.row(id);
    const p = this.o.paths;
    const dir = p.instanceDir(id);
    await ensureDir(dir, 0o700);
    const overlay = p.instanceFile(id, 'overlay.ext4');
    try {
      await fs.access(overlay);
    } catch {
      await createOverlayDisk(overlay, row.disk_bytes);
    }
    await writeConfigDisk(p.instanceFile(id, 'config.disk'), guestDiskConfig(row.guest));
    const image = this.o.images.get(row.image_digest);
    const kernel = await this.bootKernel(row, opts.restoreFrom !== undefined);
    const initrd = await buildInitramfs({
      kernelDir: kernel.dir,
      guestBinary: this.o.guestBinary,
      dataDir: p.dataDir,
    });
    const accel = await this.o.accel();
    for (const s of ['qmp.sock', 'control.sock', 'console.sock'])
      await fs.rm(p.instanceFile(id, s), { force: true });
    const sockets = {
      qmpSocket: p.instanceFile(id, 'qmp.sock'),
      controlSocket: p.instanceFile(id, 'control.sock'),
      consoleSocket: p.instanceFile(id, 'console.sock'),
    };
    const offsets: BootOffsets = {
      serial_offset: await fileSize(p.instanceFile(id, 'serial.log')),
      app_offset: await fileSize(p.instanceFile(id, 'app.log')),
    };
    await writeFileAtomic(p.instanceFile(id, 'boot.json'), JSON.stringify(offsets), 0o600);
    const net = vmNet(row.guest);
    if (net) await assertPortsFree(row.name, row.guest);
    const starting = this.o.hypervisor.start({
      id,
      kernel: kernel.vmlinuz,
      initrd,
      cmdline: GUEST_KERNEL_ARGS,
      vcpus: row.vcpus,
      memoryMiB: row.memory_mib,
      disks: [
        {
          path: p.imageDisk(image.digest!.slice(7), image.format ?? 'erofs'),
          readonly: true,
          serial: ROOT_SERIAL,
          format: 'raw',
        },
        { path: overlay, readonly: false, serial: OVERLAY_SERIAL, format: 'raw' },
        {
          path: p.instanceFile(id, 'config.disk'),
          readonly: true,
          serial: CONFIG_SERIAL,
          format: 'raw',
        },
      ],
      ...sockets,
      serialLog: p.instanceFile(id, 'serial.log'),
      accel,
      ...(this.o.tscKhz ? { tscKhz: this.o.tscKhz } : {}),
      ...(opts.restoreFrom !== undefined ? { incoming: opts.restoreFrom } : {}),
      ...(net ? { net } : {}),
      workDir: dir,
    });
    const handle = await starting.catch((e: unknown) =>
      rethrowStartFailure(row.name, row.guest, e),
    );
    const restoring = opts.restoreFrom !== undefined;
    const rt = this.attach(id, handle, new MarkerParser(), {
      programStart: restoring,
      agentReady: restoring,
    });
    rt.createStartedAt = opts.createStartedAt;
    this.transition(id, restoring ? 'Paused' : 'Initializing', {
      pid: handle.pid,
      accel,
      sockets: { ...sockets },
      started_at: new Date().toISOString(),
      stopped_at: null,
      ...(restoring ? {} : { exit_code: null }),
      state_error: null,
    });
    if (!restoring) {
      void this.connectGuest(id, rt);
      this.armBootTimeout(id, rt);
    }
    return rt;
  }

  /**
   * The kernel the row records. A fresh boot may move on to the newest
   * version of that kernel when the recorded one is gone (and records it);
   * a restore needs exactly the one the snapshot's memory was running.
   */
  private async bootKernel(row: InstanceRow, exact: boolean): Promise<Kernel> {
    const [name = DEFAULT_KERNEL, version] = row.kernel.split('/');
    const dataDir = this.o.paths.dataDir;
    const recorded = (await listKernels({ dataDir })).find(
      (k) => k.name === name && k.version === version,
    );
    if (recorded) return recorded;
    if (exact) {
      throw new VesselError(
        'conflict',
        `instance "${row.name}" was saved running kernel ${row.kernel}, which is no longer installed`,
      );
    }
    const kernel = await ensureKernel(name, { dataDir });
    this.o.repo.update({ ...row, kernel: `${kernel.name}/${kernel.version}` });
    return kernel;
  }

  /** Wire a VM handle to the manager: console → app log + markers, events, exit. */
  private attach(
    id: string,
    handle: VmHandle,
    parser: MarkerParser,
    marks: Runtime['marks'],
  ): Runtime {
    const logFd = openSync(this.o.paths.instanceFile(id, 'app.log'), 'a', 0o600);
    const rt: Runtime = {
      handle,
      logFd,
      parser,
      guest: undefined,
      marks,
      ending: undefined,
      guestShutdown: false,
      createStartedAt: undefined,
    };
    this.runtimes.set(id, rt);
    handle.onConsole((chunk) => this.onConsoleBytes(id, rt, chunk));
    handle.onEvent((ev) => {
      if (ev.type !== 'shutdown' || rt.ending !== undefined) return;
      rt.guestShutdown = true;
      const state = this.o.repo.get(id)?.state as InstanceState | undefined;
      if (state === 'Initializing' || state === 'Running' || state === 'Paused') {
        this.transition(id, 'Shutdown');
      }
    });
    void handle.exited.then((exit) => this.onExit(id, rt, exit));
    return rt;
  }

  private onConsoleBytes(id: string, rt: Runtime, chunk: Buffer): void {
    const { log, markers } = rt.parser.push(chunk);
    if (log.length > 0) {
      writeSync(rt.logFd, log);
      this.topic.publish({ type: 'log', id, data: log });
    }
    for (const m of markers) this.onMarker(id, rt, m);
  }

  private armBootTimeout(id: string, rt: Runtime): void {
    const ms = this.o.bootTimeoutMs ?? 120_000;
    const timer = setTimeout(() => {
      if (this.o.repo.get(id)?.state === 'Initializing' && this.runtimes.get(id) === rt) {
        this.markError(id, `the guest did not become ready within ${ms / 1000} s`);
        void rt.handle.kill();
      }
    }, ms);
    timer.unref();
    void rt.handle.exited.then(() => clearTimeout(timer));
  }

  private onMarker(id: string, rt: Runtime, m: BootMarker): void {
    switch (m.kind) {
      case 'program-start':
        rt.marks.programStart = true;
        break;
      case 'agent-ready':
        rt.marks.agentReady = true;
        break;
      case 'failed':
        this.markError(id, `guest boot failed: ${m.reason}`);
        break;
      case 'exit':
        this.o.repo.update({ ...this.row(id), exit_code: m.code });
        break;
    }
    this.maybeRunning(id, rt);
  }

  private maybeRunning(id: string, rt: Runtime): void {
    if (!rt.marks.programStart || !rt.marks.agentReady || !rt.guest) return;
    if (this.o.repo.get(id)?.state !== 'Initializing') return;
    this.transition(id, 'Running');
    if (rt.createStartedAt !== undefined) {
      this.metrics?.createSeconds.observe((performance.now() - rt.createStartedAt) / 1000);
      rt.createStartedAt = undefined;
    }
  }

  private markError(id: string, message: string): void {
    const row = this.o.repo.get(id);
    if (!row) return;
    this.log.warn({ instance: row.name, message }, 'instance error');
    const next = this.save({ ...row, state_error: message }, row.state as InstanceState);
    this.emit('update', next);
  }

  private async connectGuest(id: string, rt: Runtime): Promise<void> {
    try {
      const sock = net.connect(rt.handle.controlSocket);
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
      });
      rt.guest = await GuestClient.connect(sock, { timeoutMs: this.o.bootTimeoutMs ?? 120_000 });
      this.maybeRunning(id, rt);
    } catch (err) {
      if (this.runtimes.get(id) === rt)
        this.log.warn({ id, err: errorMessage(err) }, 'guest agent connection failed');
    }
  }

  /** The VMM process is gone: release what it held and settle the state. */
  private onExit(id: string, rt: Runtime, exit: VmExit): void {
    if (this.runtimes.get(id) !== rt) return;
    this.runtimes.delete(id);
    rt.guest?.close();
    closeSync(rt.logFd);
    for (const s of ['qmp.sock', 'control.sock', 'console.sock'])
      void fs.rm(this.o.paths.instanceFile(id, s), { force: true });
    const row = this.o.repo.get(id);
    if (!row || rt.ending === 'standby') return;
    const crashed = rt.ending === undefined && !rt.guestShutdown && exit.code !== 0;
    const how = exit.signal ? `killed by ${exit.signal}` : `exit status ${String(exit.code)}`;
    this.settleStopped(
      id,
      crashed ? `the hypervisor exited unexpectedly (${how})` : (row.state_error ?? null),
    );
  }

  /** Move a row to Stopped (through the table), e.g. after its VMM vanished. */
  private settleStopped(id: string, stateError: string | null): void {
    const row = this.o.repo.get(id);
    if (!row) return;
    const from = row.state as InstanceState;
    this.save(
      {
        ...row,
        state: 'Stopped',
        pid: null,
        sockets: null,
        stopped_at: new Date().toISOString(),
        state_error: stateError,
      },
      from,
    );
  }

  /** Start a stopped instance; its writable disk persists. */
  async start(idOrName: string): Promise<Instance> {
    const row = this.row(idOrName);
    await this.locked(row.id, async () => {
      const state = this.row(row.id).state as InstanceState;
      assertTransition(row.name, state, 'Initializing');
      await this.boot(row.id);
      this.emit('start', this.row(row.id), { old_state: state });
    });
    return this.get(row.id);
  }

  /** Graceful stop (ACPI power-off), forced after `timeoutMs`. */
  async stop(idOrName: string, options: { timeoutMs?: number } = {}): Promise<Instance> {
    const row = this.row(idOrName);
    await this.locked(row.id, async () => {
      const before = this.row(row.id);
      const rt = this.runtimes.get(row.id);
      if (!rt) {
        if (before.state === 'Stopped') return;
        // Standby: the VMM is already gone; dropping the snapshot makes it a plain stop.
        assertTransition(row.name, before.state as InstanceState, 'Stopped');
        await fs.rm(snapshotPaths(this.o.paths.instanceDir(row.id)).dir, {
          recursive: true,
          force: true,
        });
        this.settleStopped(row.id, null);
      } else {
        rt.ending = 'stop';
        const exit = await rt.handle.stop({
          graceful: true,
          timeoutMs: options.timeoutMs ?? 10_000,
        });
        this.onExit(row.id, rt, exit);
      }
      this.emit('stop', this.row(row.id), { old_state: before.state as InstanceState });
    });
    return this.get(row.id);
  }

  /** Freeze the vCPUs; memory and devices stay (QMP `stop`). */
  async pause(idOrName: string): Promise<Instance> {
    const row = this.row(idOrName);
    await this.locked(row.id, () => this.pauseLocked(row.id));
    return this.get(row.id);
  }

  private async pauseLocked(id: string): Promise<void> {
    const row = this.row(id);
    assertTransition(row.name, row.state as InstanceState, 'Paused');
    await this.runtime(row).handle.pause();
    this.transition(id, 'Paused');
    this.emit('pause', this.row(id), { old_state: row.state as InstanceState });
  }

  /** Let a paused instance run again (QMP `cont`). */
  async resume(idOrName: string): Promise<Instance> {
    const row = this.row(idOrName);
    await this.locked(row.id, async () => {
      const cur = this.row(row.id);
      assertTransition(cur.name, cur.state as InstanceState, 'Running');
      if (cur.state !== 'Paused') {
        throw new VesselError('conflict', `instance "${cur.name}" is ${cur.state}, not Paused`);
      }
      await this.runtime(cur).handle.resume();
      this.transition(row.id, 'Running');
      this.emit('resume', this.row(row.id), { old_state: 'Paused' });
    });
    return this.get(row.id);
  }

  private runtime(row: InstanceRow): Runtime {
    const rt = this.runtimes.get(row.id);
    if (!rt) {
      throw new VesselError('conflict', `instance "${row.name}" has no running VM (${row.state})`);
    }
    return rt;
  }

  /**
   * Standby: pause, write the VM state to disk, end the VMM → `Standby`.
   * Restore brings it back with its memory (running processes, tmpfs) intact.
   */
  async standby(idOrName: string): Promise<Instance> {
    const row = this.row(idOrName);
    await this.locked(row.id, async () => {
      const before = this.row(row.id).state as InstanceState;
      if (before === 'Running') await this.pauseLocked(row.id);
      const cur = this.row(row.id);
      assertTransition(cur.name, cur.state as InstanceState, 'Standby');
      const rt = this.runtime(cur);
      const snap = snapshotPaths(this.o.paths.instanceDir(row.id));
      await fs.rm(snap.dir, { recursive: true, force: true });
      await ensureDir(snap.dir, 0o700);
      try {
        await rt.handle.snapshot(snap.state);
        const caps = await this.o.hypervisor.capabilities();
        await writeSnapshotMeta(snap.meta, {
          version: 1,
          hypervisor: cur.hypervisor,
          vmm_version: caps.version,
          kernel: cur.kernel,
          accel: cur.accel ?? 'tcg',
          vcpus: cur.vcpus,
          memory_mib: cur.memory_mib,
          state_bytes: await fileSize(snap.state),
          created_at: new Date().toISOString(),
        });
      } catch (err) {
        // The VM is still there, paused: nothing is lost; the half-written snapshot goes.
        await fs.rm(snap.dir, { recursive: true, force: true });
        throw err;
      }
      rt.ending = 'standby';
      const exit = await rt.handle.stop({ graceful: false });
      this.onExit(row.id, rt, exit);
      this.transition(row.id, 'Standby', {
        pid: null,
        sockets: null,
        stopped_at: new Date().toISOString(),
      });
      this.emit('standby', this.row(row.id), { old_state: before });
    });
    return this.get(row.id);
  }

  /** Restore a standby instance from its snapshot and resume it → `Running`. */
  async restore(idOrName: string): Promise<Instance> {
    const row = this.row(idOrName);
    await this.locked(row.id, async () => {
      const cur = this.row(row.id);
      assertTransition(cur.name, cur.state as InstanceState, 'Paused');
      if (cur.state !== 'Standby') {
        throw new VesselError('conflict', `instance "${cur.name}" is ${cur.state}, not Standby`);
      }
      const snap = snapshotPaths(this.o.paths.instanceDir(row.id));
      const meta = await readSnapshotMeta(snap.meta, cur.name);
      const caps = await this.o.hypervisor.capabilities();
      checkRestorable(cur.name, meta, {
        hypervisor: cur.hypervisor,
        vmm_version: caps.version,
        kernel: cur.kernel,
        accel: await this.o.accel(),
        vcpus: cur.vcpus,
        memory_mib: cur.memory_mib,
      });
      const rt = await this.boot(row.id, { restoreFrom: snap.state });
      try {
        await rt.handle.resume();
      } catch (err) {
        rt.ending = 'stop';
        await rt.handle.kill();
        throw err;
      }
      // Running means exec works: wait for the agent (it was running when the state was saved).
      await this.connectGuest(row.id, rt);
      this.transition(row.id, 'Running', {
        state_error: rt.guest ? null : 'the guest agent did not answer after the restore',
      });
      // The disk moves on from here: the snapshot no longer matches it.
      await fs.rm(snap.dir, { recursive: true, force: true });
      this.emit('restore', this.row(row.id), { old_state: 'Standby' });
    });
    return this.get(row.id);
  }

  /**
   * Fork a Stopped or Standby instance: a new instance with its own copy of
   * the writable disk (and snapshot), a new id, name and resources.
   */
  async fork(idOrName: string, req: { name?: string } = {}): Promise<Instance> {
    this.checkName(req.name);
    const src = this.row(idOrName);
    const id = randomBytes(8).toString('hex');
    const name = req.name ?? `${src.name.slice(0, 50)}-fork-${id.slice(0, 4)}`;
    this.assertNameFree(name);
    const dir = this.o.paths.instanceDir(id);
    const forked = await this.locked(src.id, async () => {
      const cur = this.row(src.id);
      if (cur.state !== 'Stopped' && cur.state !== 'Standby') {
        throw new VesselError(
          'conflict',
          `instance "${cur.name}" is ${cur.state}; fork needs it Stopped or Standby`,
          { details: { instance: cur.name, state: cur.state } },
        );
      }
      const srcDir = this.o.paths.instanceDir(src.id);
      await ensureDir(dir, 0o700);
      try {
        await copyDisk(`${srcDir}/overlay.ext4`, `${dir}/overlay.ext4`, true);
        if (cur.state === 'Standby') {
          const from = snapshotPaths(srcDir);
          const to = snapshotPaths(dir);
          await ensureDir(to.dir, 0o700);
          await copyDisk(from.state, to.state, false);
          await fs.copyFile(from.meta, to.meta);
        }
        const guest = {
          ...forkNetwork(cur.guest, id, cur.state === 'Standby'),
          hostname: name,
        };
        return await this.reserve(() => {
          this.assertNameFree(name);
          const r: InstanceRow = {
            ...cur,
            id,
            name,
            guest,
            pid: null,
            sockets: null,
            state_error: null,
            created_at: new Date().toISOString(),
            cid: this.nextCid(),
            source_id: cur.id,
          };
          this.o.repo.insert(r);
          return r;
        });
      } catch (err) {
        await fs.rm(dir, { recursive: true, force: true });
        throw err;
      }
    });
    this.emit('fork', forked, { old_state: null, source_id: src.id });
    return view(forked);
  }

  /** Delete an instance: stop its VM (forced) and remove its files. */
  async delete(idOrName: string): Promise<void> {
    const row = this.row(idOrName);
    await this.locked(row.id, async () => {
      const rt = this.runtimes.get(row.id);
      if (rt) {
        rt.ending = 'stop';
        const exit = await rt.handle.kill();
        this.onExit(row.id, rt, exit);
      }
      const last = this.row(row.id);
      this.o.repo.delete(row.id);
      this.emit('delete', last, { new_state: null });
      await fs.rm(this.o.paths.instanceDir(row.id), { recursive: true, force: true });
    });
    this.topic.publish({ type: 'deleted', id: row.id });
  }

  /** Wait until the instance is in `state`, or `timeoutMs` passes. */
  waitForState(idOrName: string, state: InstanceState, timeoutMs: number): Promise<WaitResult> {
    const row = this.row(idOrName);
    return waitForState(
      {
        bus: this.bus,
        read: () => this.o.repo.get(row.id)?.state as InstanceState | undefined,
        pollMs: this.o.waitPollMs ?? 5000,
      },
      row.id,
      row.name,
      state,
      timeoutMs,
    );
  }

  /** Run a command in a Running instance. */
  exec(idOrName: string, req: ExecRequest): ExecSession {
    const row = this.row(idOrName);
    const rt = this.runtimes.get(row.id);
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

  /** Path of the app log (serial console without markers). */
  appLogPath(idOrName: string): string {
    return this.logPath(idOrName, 'app');
  }

  /** Log file by source: `app` (console, markers removed), `vmm` (QEMU's own output), `daemon`. */
  logPath(idOrName: string, source: 'app' | 'vmm' | 'daemon'): string {
    const file = { app: 'app.log', vmm: 'vmm.log', daemon: 'daemon.log' }[source];
    return this.o.paths.instanceFile(this.row(idOrName).id, file);
  }

  /**
   * Re-attach to a VM a previous daemon started. The vCPUs are held for the
   * few milliseconds it takes to replay the console output printed while no
   * daemon listened, so the app log and the boot markers stay exact.
   */
  private async adopt(row: InstanceRow): Promise<void> {
    const alive = row.pid !== null && (await pidAlive(row.pid));
    if (!alive || row.pid === null || !row.sockets) {
      this.settleStopped(row.id, 'the hypervisor exited while the daemon was down');
      return;
    }
    const s = row.sockets;
    const handle = await this.o.hypervisor.adopt(row.pid, {
      qmpSocket: s.qmpSocket ?? '',
      controlSocket: s.controlSocket ?? '',
      consoleSocket: s.consoleSocket ?? '',
    });
    const info = await handle.info();
    if (info.state === 'running') await handle.pause();
    const parser = new MarkerParser();
    const marks = { programStart: false, agentReady: false };
    const replayed = await this.replayConsole(row.id, parser);
    const rt = this.attach(row.id, handle, parser, marks);
    for (const m of replayed) this.onMarker(row.id, rt, m);
    if (info.state === 'running') await handle.resume();
    const state = row.state as InstanceState;
    if (info.state === 'paused' && state === 'Running') this.transition(row.id, 'Paused');
    if (info.state === 'running' && state === 'Paused') this.transition(row.id, 'Running');
    if (info.state === 'shutdown' && state !== 'Shutdown') this.transition(row.id, 'Shutdown');
    if (state === 'Running' || state === 'Paused') {
      rt.marks.programStart = true;
      rt.marks.agentReady = true;
    }
    if (state === 'Initializing') this.armBootTimeout(row.id, rt);
    void this.connectGuest(row.id, rt);
    this.log.info({ instance: row.name, pid: row.pid, state: info.status }, 're-adopted VM');
  }

  /** Rebuild this boot's app log from the serial log; returns the markers seen. */
  private async replayConsole(id: string, parser: MarkerParser): Promise<BootMarker[]> {
    const p = this.o.paths;
    let offsets: BootOffsets = { serial_offset: 0, app_offset: 0 };
    try {
      offsets = JSON.parse(
        await fs.readFile(p.instanceFile(id, 'boot.json'), 'utf8'),
      ) as BootOffsets;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
    const serial = await fs.readFile(p.instanceFile(id, 'serial.log')).catch(() => Buffer.alloc(0));
    const { log, markers } = parser.push(serial.subarray(offsets.serial_offset));
    const app = p.instanceFile(id, 'app.log');
    await fs.truncate(app, offsets.app_offset).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    await fs.appendFile(app, log, { mode: 0o600 });
    return markers;
  }

  /**
   * Daemon shutdown. By default the VMs keep running and the next daemon
   * re-adopts them; with `stopVms` they are stopped.
   */
  async shutdown(options: { stopVms?: boolean } = {}): Promise<void> {
    if (options.stopVms) {
      await Promise.allSettled(
        [...this.runtimes.keys()].map((id) => this.stop(id, { timeoutMs: 5000 })),
      );
      return;
    }
    for (const [id, rt] of this.runtimes) {
      this.runtimes.delete(id);
      rt.guest?.close();
      rt.handle.detach();
      closeSync(rt.logFd);
    }
  }
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await fs.stat(file)).size;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 0;
    throw err;
  }
}

/** Copy a disk image: a reflink where the filesystem has them, else a sparse copy. */
async function copyDisk(from: string, to: string, sparse: boolean): Promise<void> {
  await run('cp', ['--reflink=auto', ...(sparse ? ['--sparse=always'] : []), '--', from, to]);
}
