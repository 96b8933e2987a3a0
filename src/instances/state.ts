import { VesselError } from '../core/errors.js';
import { INSTANCE_STATE_NAMES } from '../core/wire.js';

/** Instance states, named as in the hypeman API. */
export const INSTANCE_STATES = INSTANCE_STATE_NAMES;

export type InstanceState = (typeof INSTANCE_STATES)[number];

/**
 * The single-hop transition table. Multi-hop flows (Running → Paused →
 * Standby, Standby → Paused → Running) are orchestrated by the manager one
 * hop at a time, so every hop is checked here.
 *
 * - Created → Initializing: the VMM process started, the guest is booting.
 * - Initializing → Running: program-start and agent-ready markers seen.
 * - Initializing/Running/Paused → Shutdown: the guest powered off, the VMM still exits.
 * - any live state → Stopped: the VMM process is gone.
 * - Stopped → Initializing: start again (the writable disk persists).
 * - Paused ↔ Running; Paused → Standby (snapshot written, VMM stopped);
 *   Standby → Paused (VMM restored from the snapshot, still paused).
 * - Unknown: the state could not be derived (state_error says why); any
 *   observation moves it on.
 */
const TABLE: Record<InstanceState, readonly InstanceState[]> = {
  Created: ['Initializing', 'Stopped', 'Unknown'],
  Initializing: ['Running', 'Shutdown', 'Stopped', 'Unknown'],
  Running: ['Paused', 'Shutdown', 'Stopped', 'Unknown'],
  Paused: ['Running', 'Standby', 'Shutdown', 'Stopped', 'Unknown'],
  Shutdown: ['Stopped', 'Unknown'],
  Stopped: ['Initializing', 'Unknown'],
  Standby: ['Paused', 'Stopped', 'Unknown'],
  Unknown: ['Created', 'Initializing', 'Running', 'Paused', 'Shutdown', 'Stopped', 'Standby'],
};

export function canTransition(from: InstanceState, to: InstanceState): boolean {
  return TABLE[from].includes(to);
}

/** Throws a `conflict` error (HTTP 409) naming the instance and both states. */
export function assertTransition(instance: string, from: InstanceState, to: InstanceState): void {
  if (!canTransition(from, to)) {
    throw new VesselError(
      'conflict',
      `instance "${instance}" cannot go from ${from} to ${to} (allowed from ${from}: ${TABLE[from].join(', ') || 'none'})`,
      { details: { instance, from, to } },
    );
  }
}

/** States in which a VMM process exists. */
export const VMM_ACTIVE: ReadonlySet<InstanceState> = new Set([
  'Initializing',
  'Running',
  'Paused',
  'Shutdown',
]);
