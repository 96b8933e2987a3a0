/**
 * Instance expiry (TTL): an instance with `expires_at` is deleted when that
 * time comes. One timer for the nearest expiry, re-armed whenever an expiry
 * may have changed (create, fork, PATCH, delete) and at daemon start, where
 * rows that expired while no daemon ran are deleted first. The time lives on
 * the row, so expiry survives daemon restarts.
 */
import { VesselError, errorMessage } from '../core/errors.js';
import type { Logger } from '../core/logger.js';

/** `setTimeout` cannot wait longer than this (about 24.8 days); longer waits re-arm. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** After a failed expiry, try again this much later. */
export const RETRY_MS = 10_000;

export interface ExpiryDeps {
  /** The row that expires first, if any. */
  readonly next: () => { id: string; name: string; expires_at: string } | undefined;
  /** Publish the expire event and delete the instance. */
  readonly expire: (id: string) => Promise<void>;
  readonly logger: Logger;
  readonly now?: () => number;
}

/**
 * The expiry of a new instance from its request: `ttl_ms` from `createdAt`
 * (0: never), or an absolute `expires_at`. Null: no expiry.
 */
export function expiryFor(
  req: { ttl_ms?: number; expires_at?: string },
  createdAt: number,
): string | null {
  if (req.ttl_ms !== undefined) {
    return req.ttl_ms > 0 ? new Date(createdAt + req.ttl_ms).toISOString() : null;
  }
  return req.expires_at ?? null;
}

/** Check an absolute expiry from a request: a valid time in the future; returns it in ISO form. */
export function checkExpiresAt(value: string, now: number, field = 'expires_at'): string {
  const t = Date.parse(value);
  if (Number.isNaN(t)) {
    throw new VesselError('invalid_argument', `${field} "${value}" is not a date-time`, {
      details: { field },
    });
  }
  if (t <= now) {
    throw new VesselError('invalid_argument', `${field} ${value} is not in the future`, {
      details: { field },
    });
  }
  return new Date(t).toISOString();
}

/** The one expiry timer of an instance manager. */
export class ExpiryTimer {
  private readonly deps: ExpiryDeps;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(deps: ExpiryDeps) {
    this.deps = deps;
  }

  private now(): number {
    return this.deps.now?.() ?? Date.now();
  }

  /** Daemon start: delete what expired meanwhile, then arm for the next. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.fire();
  }

  /** Stop for good (daemon shutdown). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** An expiry may have changed: aim the timer at the nearest one. */
  rearm(): void {
    if (this.stopped || this.running) return; // a running pass re-arms when it ends
    clearTimeout(this.timer);
    this.timer = undefined;
    const next = this.deps.next();
    if (!next) return;
    const wait = Math.min(MAX_TIMER_MS, Math.max(0, Date.parse(next.expires_at) - this.now()));
    this.arm(wait);
  }

  private arm(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.fire(), ms);
    this.timer.unref();
  }

  /** Delete every instance whose time has come, one at a time, then re-arm. */
  private fire(): Promise<void> {
    if (this.running) return this.running;
    this.timer = undefined;
    // `then` runs after this assignment even when the pass finishes synchronously.
    this.running = this.pass().then((again) => {
      this.running = undefined;
      if (again) this.rearm();
    });
    return this.running;
  }

  /** One pass; resolves with whether to re-arm (false: stopped, or a retry is armed). */
  private async pass(): Promise<boolean> {
    let last: string | undefined;
    for (;;) {
      if (this.stopped) return false;
      const next = this.deps.next();
      if (!next || Date.parse(next.expires_at) > this.now()) return true;
      try {
        if (next.id === last)
          throw new VesselError('internal', `instance "${next.name}" is still there`);
        last = next.id;
        await this.deps.expire(next.id);
      } catch (err) {
        this.deps.logger.warn(
          { instance: next.name, err: errorMessage(err) },
          'deleting an expired instance failed; retrying',
        );
        if (!this.stopped) this.arm(RETRY_MS);
        return false;
      }
    }
  }
}
