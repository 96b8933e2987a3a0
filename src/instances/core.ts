/**
 * The state every instance operation shares: options, the store, the two
 * event streams, the locks and the live VMs — plus the few primitives all
 * of them use (read a row, change state, publish, take a lock). Each
 * operation lives in its own file as a function of this core.
 */
import type { Registry } from 'prom-client';
import { VesselError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';
import { KeyedMutex, Mutex } from '../core/sync.js';
import { LifecycleBus, Topic } from '../events/index.js';
import type { ExitStatus, GuestClient, MarkerParser } from '../guest/index.js';
import type { ImageManager } from '../images/index.js';
import type { InstanceRow, InstancesRepo, SnapshotsRepo } from '../store/index.js';
import type { Accel, Hypervisor, VmHandle } from '../vmm/index.js';
import type { VolumeManager } from '../volumes/index.js';
import type { InstanceConfinement } from './jail.js';
import {
  InstanceMetrics,
  type LifecycleEvent,
  type LifecycleEventInput,
  type LifecycleEventType,
} from './lifecycle.js';
import type { BridgeContext } from './network-bridge.js';
import { accruePhase } from './phases.js';
import { assertTransition, type InstanceState } from './state.js';
import type { InstanceEvent } from './types.js';
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
  /** Bridge (TAP) networking; absent: user mode only. */
  readonly network?: BridgeContext;
  /** Named snapshot records; absent: the snapshot operations answer `internal`. */
  readonly snapshots?: SnapshotsRepo;
  /** Volumes and their attachments; absent: asking for a volume is `invalid_argument`. */
  readonly volumes?: VolumeManager;
  /** Confine each VMM (own uid, jail, cgroup); absent: VMMs run as the daemon's user. */
  readonly confinement?: InstanceConfinement;
}

/** Live state of a VM this daemon drives. */
export interface Runtime {
  readonly handle: VmHandle;
  /**
   * The app log (the main command's stdout/stderr, framed: core/stdio-stream.ts)
   * and the console log (serial console text without markers). Both are
   * appended synchronously before publishing, so readers never miss bytes.
   */
  readonly appFd: number;
  readonly consoleFd: number;
  /** The main command's exit as the agent reported it (exec mode). */
  mainExit: ExitStatus | undefined;
  /** The agent connection in progress (boot, re-adoption, restore). */
  guestConnecting: Promise<void> | undefined;
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

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const FIRST_CID = 3;

export class InstanceCore {
  readonly o: InstanceManagerOptions;
  readonly log: Logger;
  readonly repo: InstancesRepo;
  /** Synchronous stream of log bytes and state changes (log followers). */
  readonly topic: Topic<InstanceEvent>;
  readonly bus: LifecycleBus<LifecycleEvent>;
  readonly metrics: InstanceMetrics | undefined;
  readonly runtimes = new Map<string, Runtime>();
  private readonly reservation = new Mutex();
  private readonly locks = new KeyedMutex();
  private seq = 0;

  constructor(options: InstanceManagerOptions) {
    this.o = options;
    this.log = options.logger;
    this.repo = options.repo;
    this.topic = new Topic({
      onListenerError: (err) => this.log.error({ err }, 'instance listener failed'),
    });
    this.bus = new LifecycleBus<LifecycleEvent>({
      bufferSize: options.lifecycleBufferSize ?? 256,
      onDrop: () => this.metrics?.dropped.inc(),
      onHandlerError: (err, sub) =>
        this.log.error({ err, subscriber: sub }, 'lifecycle subscriber failed'),
    });
    this.metrics = options.metrics
      ? new InstanceMetrics(options.metrics, () => this.bus)
      : undefined;
  }

  row(idOrName: string): InstanceRow {
    const r = this.repo.get(idOrName) ?? this.repo.byName(idOrName);
    if (!r)
      throw new VesselError('not_found', `instance "${idOrName}" not found`, {
        details: { instance: idOrName },
      });
    return r;
  }

  /** Publish one lifecycle event. */
  emit(type: LifecycleEventType, row: InstanceRow, extra: Partial<LifecycleEventInput> = {}) {
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

  /** Write and publish; the single path for every state change. */
  save(saved: InstanceRow, from: InstanceState | null): InstanceRow {
    // Phase accounting (time per state, boot phases) rides on every state change.
    const row = from === saved.state ? saved : accruePhase(this, saved, from);
    this.repo.update(row);
    this.topic.publish({ type: 'state', id: row.id, from, instance: view(row) });
    if (from !== row.state)
      this.emit('state', row, { old_state: from, new_state: row.state as InstanceState });
    return row;
  }

  /** One checked hop of the state table, with a patch of other fields. */
  transition(id: string, to: InstanceState, patch: Partial<InstanceRow> = {}): InstanceRow {
    const row = this.repo.get(id);
    if (!row) throw new VesselError('not_found', `instance ${id} vanished`);
    const from = row.state as InstanceState;
    if (from !== to) assertTransition(row.name, from, to);
    return this.save({ ...row, ...patch, state: to }, from);
  }

  /** Record an error on the instance without changing its state. */
  markError(id: string, message: string): void {
    const row = this.repo.get(id);
    if (!row) return;
    this.log.warn({ instance: row.name, message }, 'instance error');
    const next = this.save({ ...row, state_error: message }, row.state as InstanceState);
    this.emit('update', next);
  }

  /** Move a row to Stopped, e.g. after its VMM vanished. */
  settleStopped(id: string, stateError: string | null): void {
    const row = this.repo.get(id);
    if (!row) return;
    this.save(
      {
        ...row,
        state: 'Stopped',
        pid: null,
        sockets: null,
        stopped_at: new Date().toISOString(),
        state_error: stateError,
      },
      row.state as InstanceState,
    );
  }

  /** The live VM of `row`, or a conflict naming its state. */
  runtime(row: InstanceRow): Runtime {
    const rt = this.runtimes.get(row.id);
    if (!rt) {
      throw new VesselError('conflict', `instance "${row.name}" has no running VM (${row.state})`);
    }
    return rt;
  }

  /** Run `fn` under instance `id`'s lock, recording how long the lock was held. */
  locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
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
  reserve<T>(fn: () => T): Promise<T> {
    return this.reservation.run(() => {
      const t0 = performance.now();
      try {
        return fn();
      } finally {
        this.metrics?.lockHold.observe({ lock: 'reservation' }, (performance.now() - t0) / 1000);
      }
    });
  }

  checkName(name: string | undefined): void {
    if (name !== undefined && !NAME.test(name)) {
      throw new VesselError(
        'invalid_argument',
        `instance name "${name}" must be lowercase letters, digits, '.', '_' or '-' (max 63)`,
      );
    }
  }

  /** Call inside {@link reserve}. */
  assertNameFree(name: string): void {
    if (this.repo.byName(name)) {
      throw new VesselError('already_exists', `an instance named "${name}" already exists`, {
        details: { name },
      });
    }
  }

  /** The lowest free guest context id; call inside {@link reserve}. */
  nextCid(): number {
    const used = this.repo.cids();
    let cid = FIRST_CID;
    while (used.has(cid)) cid += 1;
    return cid;
  }
}
