import { randomBytes } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import { VesselError, errorMessage, isVesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';
import { KeyedMutex, Mutex } from '../core/sync.js';
import { Topic } from '../events/index.js';
import {
  GuestClient,
  MarkerParser,
  type BootMarker,
  type ExecRequest,
  type ExecSession,
} from '../guest/index.js';
import type { Image, ImageManager } from '../images/index.js';
import { DEFAULT_KERNEL, buildInitramfs, ensureKernel } from '../kernels/index.js';
import type { InstanceRow, InstancesRepo } from '../store/index.js';
import {
  GUEST_KERNEL_ARGS,
  pidAlive,
  type Accel,
  type Hypervisor,
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
import { VMM_ACTIVE, assertTransition, type InstanceState } from './state.js';
import type { CreateInstanceRequest, Instance, InstanceEvent } from './types.js';

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
}

/** Live state of a VM this daemon drives. */
interface Runtime {
  readonly handle: VmHandle;
  /** The app log, appended synchronously so readers never miss published bytes. */
  readonly logFd: number;
  guest: GuestClient | undefined;
  marks: { programStart: boolean; agentReady: boolean };
}

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

/**
 * Instances: create (resolve + auto-pull with no global lock → a
 * milliseconds-long reservation → boot under the per-instance lock), start,
 * stop, delete, exec, logs. `Running` is reported only after the guest's
 * program-start and agent-ready markers and the agent's hello.
 */
export class InstanceManager {
  private readonly o: InstanceManagerOptions;
  private readonly log: Logger;
  private readonly topic: Topic<InstanceEvent>;
  private readonly reservation = new Mutex();
  private readonly locks = new KeyedMutex();
  private readonly runtimes = new Map<string, Runtime>();

  constructor(options: InstanceManagerOptions) {
    this.o = options;
    this.log = options.logger;
    this.topic = new Topic({
      onListenerError: (err) => this.log.error({ err }, 'instance listener failed'),
    });
  }

  /** Instances whose VMM died with the previous daemon are marked Stopped. */
  async init(): Promise<void> {
    await ensureDir(this.o.paths.instancesDir, 0o700);
    for (const row of this.o.repo.list()) {
      if (!VMM_ACTIVE.has(row.state as InstanceState)) continue;
      const alive = row.pid !== null && (await pidAlive(row.pid));
      if (alive && row.pid !== null) {
        // Re-adoption arrives with the lifecycle work; until then do not leave an orphan running.
        try {
          process.kill(row.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      this.save(
        {
          ...row,
          state: 'Stopped',
          pid: null,
          stopped_at: new Date().toISOString(),
          state_error: 'the daemon restarted while the VM ran',
        },
        row.state as InstanceState,
      );
    }
  }

  subscribe(listener: (e: InstanceEvent) => void): () => void {
    return this.topic.subscribe(listener);
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

  /** Write and publish; the single path for every state change. */
  private save(row: InstanceRow, from: InstanceState | null): InstanceRow {
    this.o.repo.update(row);
    this.topic.publish({ type: 'state', id: row.id, from, instance: view(row) });
    return row;
  }

  private transition(id: string, to: InstanceState, patch: Partial<InstanceRow> = {}): InstanceRow {
    const row = this.o.repo.get(id);
    if (!row) throw new VesselError('not_found', `instance ${id} vanished`);
    const from = row.state as InstanceState;
    if (from !== to) assertTransition(row.name, from, to);
    return this.save({ ...row, ...patch, state: to }, from);
  }

  /** Create and boot an instance; resolves once it is Initializing (boot continues). */
  async create(req: CreateInstanceRequest): Promise<Instance> {
    if (req.name !== undefined && !NAME.test(req.name)) {
      throw new VesselError(
        'invalid_argument',
        `instance name "${req.name}" must be lowercase letters, digits, '.', '_' or '-' (max 63)`,
      );
    }
    // Phase 1: resolve (auto-pull) with no global lock.
    const image = await this.resolveImage(req.image);
    const kernel = await ensureKernel(this.o.kernel ?? DEFAULT_KERNEL, {
      dataDir: this.o.paths.dataDir,
    });
    const id = randomBytes(8).toString('hex');
    const name = req.name ?? `vm-${id.slice(0, 6)}`;
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
    const row = await this.reservation.run(() => {
      if (this.o.repo.byName(name)) {
        throw new VesselError('already_exists', `an instance named "${name}" already exists`, {
          details: { name },
        });
      }
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
        guest: guest as unknown as Record<string, unknown>,
        pid: null,
        sockets: null,
        exit_code: null,
        created_at: new Date().toISOString(),
        started_at: null,
        stopped_at: null,
      };
      this.o.repo.insert(r);
      return r;
    });
    this.topic.publish({ type: 'state', id, from: null, instance: view(row) });
    // Phase 3: boot under the per-instance lock only.
    await this.locks.run(id, () => this.boot(id));
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

  private async boot(id: string): Promise<void> {
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
    await writeConfigDisk(p.instanceFile(id, 'config.disk'), row.guest as unknown as GuestConfig);
    const image = this.o.images.get(row.image_digest);
    const [kernelName] = row.kernel.split('/');
    const kernel = await ensureKernel(kernelName ?? DEFAULT_KERNEL, { dataDir: p.dataDir });
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
    const handle = await this.o.hypervisor.start({
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
      workDir: dir,
    });
    const logFd = openSync(p.instanceFile(id, 'app.log'), 'a', 0o600);
    const rt: Runtime = {
      handle,
      logFd,
      guest: undefined,
      marks: { programStart: false, agentReady: false },
    };
    this.runtimes.set(id, rt);
    this.attachConsole(id, rt);
    this.transition(id, 'Initializing', {
      pid: handle.pid,
      accel,
      sockets: { ...sockets },
      started_at: new Date().toISOString(),
      stopped_at: null,
      exit_code: null,
      state_error: null,
    });
    void handle.exited.then(() => this.onExit(id, rt));
    void this.connectGuest(id, rt, sockets.controlSocket);
    const timer = setTimeout(() => {
      if (this.o.repo.get(id)?.state === 'Initializing' && this.runtimes.get(id) === rt) {
        this.markError(
          id,
          `the guest did not become ready within ${(this.o.bootTimeoutMs ?? 120_000) / 1000} s`,
        );
        void handle.kill();
      }
    }, this.o.bootTimeoutMs ?? 120_000);
    timer.unref();
    void handle.exited.then(() => clearTimeout(timer));
  }

  private attachConsole(id: string, rt: Runtime): void {
    const parser = new MarkerParser();
    const onBytes = (chunk: Buffer): void => {
      const { log, markers } = parser.push(chunk);
      if (log.length > 0) {
        writeSync(rt.logFd, log);
        this.topic.publish({ type: 'log', id, data: log });
      }
      for (const m of markers) this.onMarker(id, rt, m);
    };
    rt.handle.onConsole(onBytes);
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
    if (this.o.repo.get(id)?.state === 'Initializing') this.transition(id, 'Running');
  }

  private markError(id: string, message: string): void {
    const row = this.o.repo.get(id);
    if (!row) return;
    this.log.warn({ instance: row.name, message }, 'instance error');
    this.save({ ...row, state_error: message }, row.state as InstanceState);
  }

  private async connectGuest(id: string, rt: Runtime, socketPath: string): Promise<void> {
    try {
      const sock = net.connect(socketPath);
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

  private onExit(id: string, rt: Runtime): void {
    if (this.runtimes.get(id) !== rt) return;
    this.runtimes.delete(id);
    rt.guest?.close();
    closeSync(rt.logFd);
    const row = this.o.repo.get(id);
    if (!row) return;
    this.transition(id, 'Stopped', { pid: null, stopped_at: new Date().toISOString() });
  }

  /** Start a stopped instance; its writable disk persists. */
  async start(idOrName: string): Promise<Instance> {
    const row = this.row(idOrName);
    await this.locks.run(row.id, async () => {
      const state = this.row(row.id).state as InstanceState;
      assertTransition(row.name, state, 'Initializing');
      await this.boot(row.id);
    });
    return this.get(row.id);
  }

  /** Graceful stop (ACPI power-off), forced after `timeoutMs`. */
  async stop(idOrName: string, options: { timeoutMs?: number } = {}): Promise<Instance> {
    const row = this.row(idOrName);
    await this.locks.run(row.id, async () => {
      const rt = this.runtimes.get(row.id);
      if (!rt) {
        if (this.row(row.id).state === 'Stopped') return;
        assertTransition(row.name, this.row(row.id).state as InstanceState, 'Stopped');
        return;
      }
      await rt.handle.stop({ graceful: true, timeoutMs: options.timeoutMs ?? 10_000 });
      await rt.handle.exited;
      this.onExit(row.id, rt);
    });
    return this.get(row.id);
  }

  /** Delete an instance: stop its VM (forced) and remove its files. */
  async delete(idOrName: string): Promise<void> {
    const row = this.row(idOrName);
    await this.locks.run(row.id, async () => {
      const rt = this.runtimes.get(row.id);
      if (rt) {
        await rt.handle.kill();
        this.onExit(row.id, rt);
      }
      this.o.repo.delete(row.id);
      await fs.rm(this.o.paths.instanceDir(row.id), { recursive: true, force: true });
    });
    this.topic.publish({ type: 'deleted', id: row.id });
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
    return this.o.paths.instanceFile(this.row(idOrName).id, 'app.log');
  }

  /** Stop every VM (daemon shutdown). */
  async shutdown(): Promise<void> {
    await Promise.allSettled(
      [...this.runtimes.keys()].map((id) => this.stop(id, { timeoutMs: 5000 })),
    );
  }
}

function view(r: InstanceRow): Instance {
  const g = r.guest as Partial<GuestConfig>;
  return {
    id: r.id,
    name: r.name,
    image: r.image,
    image_digest: r.image_digest,
    state: r.state as InstanceState,
    state_error: r.state_error,
    hypervisor: r.hypervisor,
    accel: r.accel,
    kernel: r.kernel,
    vcpus: r.vcpus,
    memory_mib: r.memory_mib,
    disk_bytes: r.disk_bytes,
    entrypoint: g.entrypoint ?? [],
    cmd: g.cmd ?? [],
    env: g.env ?? [],
    pid: r.pid,
    exit_code: r.exit_code,
    created_at: r.created_at,
    started_at: r.started_at,
    stopped_at: r.stopped_at,
  };
}
