// waitForState as a consumer of the lifecycle bus, and the snapshot restore checks.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LifecycleBus } from '../../../src/events/bus.js';
import { waitForState, type LifecycleEvent } from '../../../src/instances/lifecycle.js';
import { checkRestorable, type SnapshotMeta } from '../../../src/instances/snapshot.js';
import type { InstanceState } from '../../../src/instances/state.js';

function harness(initial: InstanceState | undefined) {
  const bus = new LifecycleBus<LifecycleEvent>({ bufferSize: 8 });
  let state = initial;
  let reads = 0;
  let seq = 0;
  return {
    bus,
    deps: (pollMs = 60_000) => ({
      bus,
      read: () => {
        reads += 1;
        return state;
      },
      pollMs,
    }),
    get reads() {
      return reads;
    },
    /** Change the state; `publish: false` models an event lost to a full queue. */
    set(id: string, to: InstanceState | undefined, publish = true) {
      const from = state ?? null;
      state = to;
      if (!publish) return;
      bus.publish({
        seq: ++seq,
        type: to === undefined ? 'delete' : 'state',
        instance_id: id,
        instance_name: id,
        old_state: from,
        new_state: to ?? null,
        time: new Date().toISOString(),
        state_error: null,
      });
    },
  };
}

describe('waitForState', () => {
  test('returns at once when the instance is already there', async () => {
    const h = harness('Running');
    assert.deepEqual(await waitForState(h.deps(), 'a', 'a', 'Running', 1000), {
      state: 'Running',
      timed_out: false,
    });
    assert.equal(h.bus.stats().subscribers, 0, 'the subscription is closed');
  });

  test('wakes on the bus event for its instance, not on other instances', async () => {
    const h = harness('Initializing');
    const t0 = performance.now();
    const p = waitForState(h.deps(), 'a', 'a', 'Running', 5000);
    h.set('b', 'Running'); // another instance: the filter keeps it out
    await new Promise((r) => setTimeout(r, 20));
    h.set('a', 'Running');
    assert.deepEqual(await p, { state: 'Running', timed_out: false });
    assert.ok(performance.now() - t0 < 1000, 'woken by the event, not the timeout');
  });

  test('times out with the current state and timed_out: true', async () => {
    const h = harness('Initializing');
    assert.deepEqual(await waitForState(h.deps(), 'a', 'a', 'Running', 50), {
      state: 'Initializing',
      timed_out: true,
    });
    assert.equal(h.bus.stats().subscribers, 0);
  });

  test('the slow poll finds a change whose event was lost', async () => {
    const h = harness('Initializing');
    const p = waitForState(h.deps(30), 'a', 'a', 'Running', 5000);
    h.set('a', 'Running', false);
    assert.deepEqual(await p, { state: 'Running', timed_out: false });
    assert.ok(h.reads >= 2, 'found by a re-read');
  });

  test('a delete while waiting rejects with not_found', async () => {
    const h = harness('Initializing');
    const p = waitForState(h.deps(), 'a', 'web', 'Running', 5000);
    h.set('a', undefined);
    await assert.rejects(p, (err: Error & { code?: string }) => {
      assert.equal(err.code, 'not_found');
      assert.match(err.message, /"web" was deleted while waiting for Running/);
      return true;
    });
  });
});

describe('checkRestorable', () => {
  const meta: SnapshotMeta = {
    version: 1,
    hypervisor: 'qemu',
    vmm_version: '7.2.22',
    kernel: 'debian-cloud-6.1/6.1.0-56-cloud-amd64',
    accel: 'tcg',
    vcpus: 1,
    memory_mib: 256,
    state_bytes: 1,
    created_at: '2026-11-22T00:00:00Z',
  };
  const same = {
    hypervisor: 'qemu',
    vmm_version: '7.2.22',
    kernel: meta.kernel,
    accel: 'tcg',
    vcpus: 1,
    memory_mib: 256,
  };

  test('the same setup restores', () => {
    assert.doesNotThrow(() => checkRestorable('web', meta, same));
  });

  test('a different VMM version or kernel is refused with both versions named', () => {
    assert.throws(
      () => checkRestorable('web', meta, { ...same, vmm_version: '8.0.0' }),
      (err: Error & { code?: string }) =>
        err.code === 'conflict' && /VMM version 7\.2\.22 → 8\.0\.0/.test(err.message),
    );
    assert.throws(
      () => checkRestorable('web', meta, { ...same, kernel: 'debian-cloud-6.1/6.1.0-99' }),
      /kernel debian-cloud-6\.1\/6\.1\.0-56-cloud-amd64 → debian-cloud-6\.1\/6\.1\.0-99/,
    );
  });
});
