import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { INSTANCE_STATES, assertTransition, canTransition } from '../../../src/instances/state.js';
import { isVesselError } from '../../../src/core/errors.js';

describe('instance state transitions', () => {
  test('the boot path and the standby path are single hops', () => {
    for (const [a, b] of [
      ['Created', 'Initializing'],
      ['Initializing', 'Running'],
      ['Running', 'Paused'],
      ['Paused', 'Standby'],
      ['Standby', 'Paused'],
      ['Paused', 'Running'],
      ['Running', 'Stopped'],
      ['Stopped', 'Initializing'],
    ] as const) {
      assert.ok(canTransition(a, b), `${a} → ${b}`);
    }
  });

  test('multi-hop jumps and impossible moves are refused with a conflict naming both states', () => {
    for (const [a, b] of [
      ['Created', 'Running'],
      ['Running', 'Standby'],
      ['Standby', 'Running'],
      ['Stopped', 'Running'],
      ['Stopped', 'Paused'],
      ['Shutdown', 'Running'],
    ] as const) {
      assert.equal(canTransition(a, b), false, `${a} → ${b}`);
      assert.throws(
        () => assertTransition('web', a, b),
        (e) =>
          isVesselError(e, 'conflict') &&
          e.message.includes(`from ${a} to ${b}`) &&
          e.message.includes('"web"'),
      );
    }
  });

  test('no state transitions to itself and Unknown can always be left', () => {
    for (const s of INSTANCE_STATES) {
      assert.equal(canTransition(s, s), false, s);
      if (s !== 'Unknown') assert.ok(canTransition(s, 'Unknown'));
    }
  });
});
