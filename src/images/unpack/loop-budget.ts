// Bounds how long synchronous unpack work holds the event loop in one stretch.
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';

/**
 * Longest stretch (ms) of synchronous filesystem work before the unpacker
 * lets timers, I/O and other requests run. Small: a daemon keeps serving its
 * API while it unpacks; a yield costs a few microseconds.
 */
export const MAX_BUSY_MS = 4;

/**
 * Call {@link LoopBudget.pace} between units of work: it yields to the event
 * loop (one macrotask turn) once `budgetMs` has passed since the last yield.
 * Promise continuations alone never let timers or sockets run.
 */
export class LoopBudget {
  private since = performance.now();

  constructor(private readonly budgetMs = MAX_BUSY_MS) {}

  async pace(): Promise<void> {
    if (performance.now() - this.since < this.budgetMs) return;
    await nextTurn();
    this.since = performance.now();
  }
}
