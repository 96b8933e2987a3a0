/**
 * Small concurrency primitives: a FIFO mutex, a keyed mutex, a semaphore and
 * single-flight de-duplication. All are promise based and never poll.
 */

/** A FIFO mutex. `run` holds it for exactly the callback's duration. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();
  private held = false;

  get locked(): boolean {
    return this.held;
  }

  async run<T>(fn: () => Promise<T> | T): Promise<T> {
    const prev = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((r) => (release = r));
    await prev;
    this.held = true;
    try {
      return await fn();
    } finally {
      this.held = false;
      release();
    }
  }
}

/** One mutex per key, forgotten when nobody holds or waits for it. */
export class KeyedMutex {
  private readonly locks = new Map<string, { mutex: Mutex; users: number }>();

  async run<T>(key: string, fn: () => Promise<T> | T): Promise<T> {
    let entry = this.locks.get(key);
    if (!entry) {
      entry = { mutex: new Mutex(), users: 0 };
      this.locks.set(key, entry);
    }
    entry.users++;
    try {
      return await entry.mutex.run(fn);
    } finally {
      entry.users--;
      if (entry.users === 0) this.locks.delete(key);
    }
  }

  isLocked(key: string): boolean {
    return this.locks.get(key)?.mutex.locked ?? false;
  }
}

/** Counting semaphore with a FIFO wait queue. */
export class Semaphore {
  private available: number;
  private readonly waiters: (() => void)[] = [];

  constructor(permits: number) {
    this.available = permits;
  }

  /** Number of callers waiting for a permit. */
  get waiting(): number {
    return this.waiters.length;
  }

  async run<T>(fn: () => Promise<T>, onQueued?: (position: number) => void): Promise<T> {
    if (this.available > 0) {
      this.available--;
    } else {
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        onQueued?.(this.waiters.length);
      });
    }
    try {
      return await fn();
    } finally {
      const next = this.waiters.shift();
      if (next) next();
      else this.available++;
    }
  }
}

/**
 * Collapses concurrent calls with the same key into one execution; every
 * caller gets the same result or error.
 */
export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  has(key: string): boolean {
    return this.inflight.has(key);
  }

  keys(): string[] {
    return [...this.inflight.keys()];
  }

  do(key: string, fn: () => Promise<T>): Promise<T> {
    const existing = this.inflight.get(key);
    if (existing) return existing;
    const p = (async () => {
      try {
        return await fn();
      } finally {
        this.inflight.delete(key);
      }
    })();
    this.inflight.set(key, p);
    return p;
  }
}
