/**
 * A synchronous in-process fan-out: `publish` calls every listener in
 * subscription order before it returns, so a subscriber that subscribed
 * before re-checking state can never miss a later change. A throwing
 * listener is isolated from the others and from the publisher.
 */
export class Topic<T> {
  private readonly listeners = new Set<(event: T) => void>();
  private readonly onListenerError: (err: unknown) => void;

  constructor(options: { onListenerError?: (err: unknown) => void } = {}) {
    this.onListenerError = options.onListenerError ?? (() => undefined);
  }

  /** Returns the unsubscribe function; calling it twice is harmless. */
  subscribe(listener: (event: T) => void): () => void {
    const wrapped = (e: T): void => listener(e);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  publish(event: T): void {
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch (err) {
        this.onListenerError(err);
      }
    }
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }
}
