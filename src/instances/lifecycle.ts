/**
 * The instance lifecycle bus: one stream of create, update, start, stop,
 * pause, resume, standby, restore, fork, delete and state-change events,
 * with bounded per-subscriber queues, Prometheus metrics, and
 * `waitForState` as one of its consumers.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { VesselError } from '../core/errors.js';
import { LIFECYCLE_EVENT_TYPES, type WireLifecycleEvent } from '../core/wire.js';
import { LifecycleBus, type Subscription } from '../events/index.js';
import type { InstanceState } from './state.js';

export { LIFECYCLE_EVENT_TYPES };
export type LifecycleEventType = (typeof LIFECYCLE_EVENT_TYPES)[number];
/** One lifecycle event: instance id and name, type, old/new state, time. */
export type LifecycleEvent = WireLifecycleEvent;

export type LifecycleEventInput = Omit<LifecycleEvent, 'seq' | 'time'>;

/** Prometheus metrics of the instance subsystem. */
export class InstanceMetrics {
  readonly dropped: Counter;
  readonly lockHold: Histogram<'lock'>;
  readonly createSeconds: Histogram;
  readonly events: Counter<'type'>;

  constructor(registry: Registry, bus: () => LifecycleBus<LifecycleEvent>) {
    new Gauge({
      name: 'vessel_lifecycle_subscribers',
      help: 'Subscribers of the instance lifecycle event bus',
      registers: [registry],
      collect() {
        this.set(bus().stats().subscribers);
      },
    });
    new Gauge({
      name: 'vessel_lifecycle_queue_depth_max',
      help: 'Deepest per-subscriber queue of the lifecycle event bus right now',
      registers: [registry],
      collect() {
        this.set(bus().stats().maxQueueDepth);
      },
    });
    this.dropped = new Counter({
      name: 'vessel_lifecycle_events_dropped_total',
      help: 'Lifecycle events dropped because a subscriber queue was full',
      registers: [registry],
    });
    this.events = new Counter({
      name: 'vessel_lifecycle_events_total',
      help: 'Lifecycle events published, by type',
      labelNames: ['type'],
      registers: [registry],
    });
    this.lockHold = new Histogram({
      name: 'vessel_instance_lock_hold_seconds',
      help: 'How long instance locks are held per acquisition (reservation = the one global lock)',
      labelNames: ['lock'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers: [registry],
    });
    this.createSeconds = new Histogram({
      name: 'vessel_instance_create_seconds',
      help: 'Whole create time, from request to Running',
      buckets: [0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120],
      registers: [registry],
    });
  }
}

export interface WaitResult {
  readonly state: InstanceState;
  readonly timed_out: boolean;
}

export interface WaitDeps {
  readonly bus: LifecycleBus<LifecycleEvent>;
  /** Current state, or undefined once the instance is gone. */
  readonly read: () => InstanceState | undefined;
  /** Fallback re-read interval for events lost to a full queue. */
  readonly pollMs: number;
}

/**
 * Resolve once instance `id` is in `target`, or after `timeoutMs` with
 * `timed_out: true`. Subscribes first, then reads the state, so no change
 * between the two is missed; a slow poll covers events the bus dropped.
 * Rejects with `not_found` when the instance is deleted while waiting.
 */
export function waitForState(
  deps: WaitDeps,
  id: string,
  name: string,
  target: InstanceState,
  timeoutMs: number,
): Promise<WaitResult> {
  return new Promise<WaitResult>((resolve, reject) => {
    // Filled in as they are made; `finish` may run before all of them exist.
    const held: { sub?: Subscription; poll?: NodeJS.Timeout; deadline?: NodeJS.Timeout } = {};
    let done = false;
    const finish = (result: WaitResult | Error): void => {
      if (done) return;
      done = true;
      held.sub?.close();
      clearInterval(held.poll);
      clearTimeout(held.deadline);
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    const gone = (): VesselError =>
      new VesselError('not_found', `instance "${name}" was deleted while waiting for ${target}`, {
        details: { instance: name },
      });
    const check = (): void => {
      const now = deps.read();
      if (now === undefined) finish(gone());
      else if (now === target) finish({ state: now, timed_out: false });
    };
    held.sub = deps.bus.subscribe(
      (e) => {
        if (e.type === 'delete') finish(gone());
        else if (e.new_state === target) finish({ state: target, timed_out: false });
      },
      { filter: (e) => e.instance_id === id, name: 'wait', bufferSize: 64 },
    );
    check();
    if (done) return;
    held.poll = setInterval(check, deps.pollMs);
    held.poll.unref();
    held.deadline = setTimeout(() => {
      const now = deps.read();
      if (now === undefined) finish(gone());
      else finish({ state: now, timed_out: now !== target });
    }, timeoutMs);
  });
}
