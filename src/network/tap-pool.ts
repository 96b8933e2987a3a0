/**
 * A pool of pre-warmed TAP devices: created ahead (`ip tuntap add`, enslaved to the bridge,
 * isolated, down), taken by a booting instance in one rename, refilled in the background.
 * A returned TAP goes back to the pool when it is short, else it is deleted.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../core/logger.js';
import { createTap, deleteLink, renameLink, setIsolated, setLink, type Runner } from './links.js';

export interface TapPoolOptions {
  readonly exec: Runner;
  readonly bridge: string;
  /** How many idle TAPs to keep ready. */
  readonly size: number;
  /** Name prefix of idle TAPs (`vp`); attached ones are renamed by the caller. */
  readonly prefix: string;
  readonly log?: Logger;
}

/** Pool accounting, for metrics, tests and `doctor`. */
export interface TapPoolStats {
  readonly idle: number;
  readonly creating: number;
  readonly target: number;
  /** TAPs created since start (pool hits keep it low). */
  readonly created: number;
  /** Takes served from the pool / that had to create a TAP on the spot. */
  readonly hits: number;
  readonly misses: number;
}

export class TapPool {
  readonly #o: TapPoolOptions;
  readonly #idle: string[] = [];
  #creating = 0;
  #created = 0;
  #hits = 0;
  #misses = 0;
  #closed = false;
  #refill: Promise<void> = Promise.resolve();

  constructor(options: TapPoolOptions) {
    this.#o = options;
  }

  #newName(): string {
    return `${this.#o.prefix}${randomBytes(4).toString('hex')}`;
  }

  async #create(): Promise<string> {
    const name = this.#newName();
    this.#creating++;
    try {
      await createTap(this.#o.exec, name, this.#o.bridge);
      this.#created++;
      return name;
    } finally {
      this.#creating--;
    }
  }

  /** Take over idle TAPs left by a previous daemon (already on the bridge). */
  adopt(names: readonly string[]): void {
    for (const n of names) if (!this.#idle.includes(n)) this.#idle.push(n);
  }

  /** Start filling up to the target in the background; `settled()` awaits it. */
  refill(): void {
    if (this.#closed) return;
    const missing = this.#o.size - this.#idle.length - this.#creating;
    if (missing <= 0) return;
    const jobs = Array.from({ length: missing }, async () => {
      try {
        const name = await this.#create();
        if (this.#closed) await deleteLink(this.#o.exec, name);
        else this.#idle.push(name);
      } catch (err) {
        this.#o.log?.warn({ err }, 'creating a pooled TAP failed');
      }
    });
    this.#refill = Promise.all([this.#refill, ...jobs]).then(() => undefined);
  }

  /** Resolves when the background refills started so far are done. */
  async settled(): Promise<void> {
    await this.#refill;
  }

  /** An idle TAP (created on the spot when the pool is empty); the pool refills. */
  async acquire(): Promise<string> {
    const idle = this.#idle.shift();
    let name: string;
    if (idle !== undefined) {
      this.#hits++;
      name = idle;
    } else {
      this.#misses++;
      name = await this.#create();
    }
    this.refill();
    return name;
  }

  /**
   * Take back a TAP whose VMM is gone (any name, any state): down, isolated, renamed to a
   * pool name and kept when the pool is short; deleted otherwise or when resetting fails.
   */
  async giveBack(name: string): Promise<void> {
    const e = this.#o.exec;
    if (this.#closed || this.#idle.length + this.#creating >= this.#o.size) {
      await deleteLink(e, name);
      return;
    }
    const pooled = this.#newName();
    try {
      await setLink(e, name, 'down');
      await setIsolated(e, name, true);
      await renameLink(e, name, pooled);
      this.#idle.push(pooled);
    } catch (err) {
      this.#o.log?.warn({ err, tap: name }, 'resetting a returned TAP failed; deleting it');
      await deleteLink(e, name);
      this.refill();
    }
  }

  stats(): TapPoolStats {
    return {
      idle: this.#idle.length,
      creating: this.#creating,
      target: this.#o.size,
      created: this.#created,
      hits: this.#hits,
      misses: this.#misses,
    };
  }

  /** Idle TAP names (for tests and re-adoption checks). */
  idleNames(): readonly string[] {
    return [...this.#idle];
  }

  /** Stop refilling and delete every idle TAP. */
  async drain(): Promise<void> {
    this.#closed = true;
    await this.#refill;
    const names = this.#idle.splice(0);
    for (const n of names) await deleteLink(this.#o.exec, n);
  }
}
