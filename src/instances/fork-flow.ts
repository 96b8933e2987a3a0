/**
 * Fork as the hypeman API asks for it: from a Running source when
 * `from_running` is set (standby, fork, restore the source), and into a
 * chosen `target_state` (default: the source's state at fork time). The
 * single-step fork (`fork.ts`) needs a Stopped or Standby source and leaves
 * the fork in that state; this flow walks the other hops with the manager's
 * own operations.
 */
import { VesselError } from '../core/errors.js';
import type { InstanceState } from './state.js';
import type { Instance } from './types.js';

export type ForkTarget = 'Stopped' | 'Standby' | 'Running';

export interface ForkFlowRequest {
  readonly name?: string;
  readonly from_running?: boolean;
  readonly target_state?: ForkTarget;
}

/** The manager operations the flow needs. */
export interface ForkOps {
  get(id: string): Instance;
  fork(id: string, req: { name?: string }): Promise<Instance>;
  standby(id: string): Promise<Instance>;
  restore(id: string): Promise<Instance>;
  start(id: string): Promise<Instance>;
  stop(id: string): Promise<Instance>;
  waitRunning(id: string): Promise<void>;
}

const LIVE: ReadonlySet<InstanceState> = new Set(['Running', 'Paused']);

export async function forkFlow(
  ops: ForkOps,
  idOrName: string,
  req: ForkFlowRequest,
): Promise<Instance> {
  const src = ops.get(idOrName);
  const sourceState = src.state;
  const live = LIVE.has(sourceState);
  if (live && !req.from_running) {
    throw new VesselError(
      'conflict',
      `instance "${src.name}" is ${sourceState}; fork needs it Stopped or Standby, or from_running: true`,
      { details: { instance: src.name, state: sourceState } },
    );
  }
  if (live) await ops.standby(src.id);
  let forked: Instance;
  try {
    forked = await ops.fork(src.id, req.name === undefined ? {} : { name: req.name });
  } catch (err) {
    if (live) await ops.restore(src.id).catch(() => undefined);
    throw err;
  }
  if (live) await ops.restore(src.id);
  const target: ForkTarget =
    req.target_state ?? (live ? 'Running' : sourceState === 'Standby' ? 'Standby' : 'Stopped');
  return settle(ops, forked, target);
}

/** Walk a fresh fork (Stopped or Standby) to `target`. */
async function settle(ops: ForkOps, fork: Instance, target: ForkTarget): Promise<Instance> {
  if (fork.state === target) return fork;
  if (fork.state === 'Standby') {
    return target === 'Running' ? ops.restore(fork.id) : ops.stop(fork.id);
  }
  // Stopped → Running, or → Standby by way of a boot.
  const started = await ops.start(fork.id);
  if (target === 'Running') return started;
  await ops.waitRunning(fork.id);
  return ops.standby(fork.id);
}
