/**
 * A fan-out bus with one bounded queue per subscriber.
 *
 * `publish` only appends to each matching subscriber's queue and returns:
 * it never waits for a consumer. Each subscriber drains its own queue in
 * order, one event at a time (awaiting the handler when it returns a
 * promise), so a slow consumer — an SSE client on a slow link — only ever
 * delays itself. A full queue drops the new event and counts it.
 */

export interface BusStats {
  readonly subscribers: number;
  /** Deepest queue right now, across subscribers. */
  readonly maxQueueDepth: number;
  /** Events dropped because a subscriber's queue was full, since start. */
  readonly dropped: number;
  readonly published: number;
}

export interface SubscribeOptions<T> {
  /** Only events for which this returns true are queued (checked at publish time). */
  readonly filter?: (event: T) => boolean;
  /** Queue bound for this subscriber; defaults to the bus's buffer size. */
  readonly bufferSize?: number;
  /** Label for drop accounting and logs (e.g. `sse`, `wait`). */
  readonly name?: string;
}

export interface Subscription {
  /** Stop delivery; queued events not yet delivered are discarded. Idempotent. */
  close(): void;
  /** Events this subscriber lost to a full queue. */
  readonly dropped: number;
  readonly depth: number;
}

type Handler<T> = (event: T) => void | Promise<void>;

class Subscriber<T> implements Subscription {
  readonly queue: T[] = [];
  dropped = 0;
  closed = false;
  private draining = false;

  constructor(
    private readonly bus: LifecycleBus<T>,
    readonly handler: Handler<T>,
    readonly filter: ((event: T) => boolean) | undefined,
    readonly bound: number,
    readonly name: string,
  ) {}

  get depth(): number {
    return this.queue.length;
  }

  offer(event: T): boolean {
    if (this.closed) return true;
    if (this.queue.length >= this.bound) {
      this.dropped += 1;
      return false;
    }
    this.queue.push(event);
    if (!this.draining) {
      this.draining = true;
      queueMicrotask(() => void this.drain());
    }
    return true;
  }

  private async drain(): Promise<void> {
    while (!this.closed && this.queue.length > 0) {
      const event = this.queue.shift() as T;
      try {
        const r = this.handler(event);
        if (r !== undefined) await r;
      } catch (err) {
        this.bus.reportError(err, this.name);
      }
    }
    this.draining = false;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.length = 0;
    this.bus.remove(this);
  }
}

export interface LifecycleBusOptions {
  /** Default per-subscriber queue bound (≥ 1). */
  readonly bufferSize: number;
  readonly onHandlerError?: (err: unknown, subscriber: string) => void;
  /** Called once per dropped event (metrics). */
  readonly onDrop?: (subscriber: string) => void;
}

export class LifecycleBus<T> {
  private readonly subs = new Set<Subscriber<T>>();
  private readonly bufferSize: number;
  private readonly onHandlerError: (err: unknown, subscriber: string) => void;
  private readonly onDrop: (subscriber: string) => void;
  private droppedTotal = 0;
  private publishedTotal = 0;

  constructor(options: LifecycleBusOptions) {
    if (!Number.isInteger(options.bufferSize) || options.bufferSize < 1) {
      throw new RangeError(`bus buffer size must be an integer ≥ 1, got ${options.bufferSize}`);
    }
    this.bufferSize = options.bufferSize;
    this.onHandlerError = options.onHandlerError ?? (() => undefined);
    this.onDrop = options.onDrop ?? (() => undefined);
  }

  subscribe(handler: Handler<T>, options: SubscribeOptions<T> = {}): Subscription {
    const bound = options.bufferSize ?? this.bufferSize;
    if (!Number.isInteger(bound) || bound < 1) {
      throw new RangeError(`subscriber buffer size must be an integer ≥ 1, got ${bound}`);
    }
    const sub = new Subscriber(this, handler, options.filter, bound, options.name ?? 'anonymous');
    this.subs.add(sub);
    return sub;
  }

  /** Queue `event` for every matching subscriber; never blocks, never throws. */
  publish(event: T): void {
    this.publishedTotal += 1;
    for (const sub of this.subs) {
      let wanted = true;
      try {
        wanted = sub.filter ? sub.filter(event) : true;
      } catch (err) {
        this.onHandlerError(err, sub.name);
        continue;
      }
      if (wanted && !sub.offer(event)) {
        this.droppedTotal += 1;
        this.onDrop(sub.name);
      }
    }
  }

  stats(): BusStats {
    let maxQueueDepth = 0;
    for (const s of this.subs) maxQueueDepth = Math.max(maxQueueDepth, s.queue.length);
    return {
      subscribers: this.subs.size,
      maxQueueDepth,
      dropped: this.droppedTotal,
      published: this.publishedTotal,
    };
  }

  /** @internal */
  remove(sub: Subscriber<T>): void {
    this.subs.delete(sub);
  }

  /** @internal */
  reportError(err: unknown, subscriber: string): void {
    this.onHandlerError(err, subscriber);
  }
}
