// The lifecycle bus: bounded per-subscriber queues that drop and count, never block.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { LifecycleBus } from '../../../src/events/bus.js';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('LifecycleBus', () => {
  test('each subscriber sees its events in publish order, one at a time', async () => {
    const bus = new LifecycleBus<number>({ bufferSize: 100 });
    const seen: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    bus.subscribe(async (e) => {
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await tick();
      seen.push(e);
      inFlight -= 1;
    });
    for (let i = 0; i < 50; i++) bus.publish(i);
    while (seen.length < 50) await tick();
    assert.deepEqual(
      seen,
      Array.from({ length: 50 }, (_, i) => i),
    );
    assert.equal(maxInFlight, 1, 'the handler never runs twice at once');
  });

  test('publish returns before any handler runs (it never waits for a consumer)', () => {
    const bus = new LifecycleBus<string>({ bufferSize: 4 });
    const seen: string[] = [];
    bus.subscribe((e) => void seen.push(e));
    bus.publish('a');
    assert.deepEqual(seen, [], 'delivery is asynchronous');
  });

  test('a full queue drops the new event and counts it, per subscriber and in total', async () => {
    const drops: string[] = [];
    const bus = new LifecycleBus<number>({ bufferSize: 3, onDrop: (s) => drops.push(s) });
    const gate = deferred();
    const slowSeen: number[] = [];
    const slow = bus.subscribe(
      async (e) => {
        await gate.promise;
        slowSeen.push(e);
      },
      { name: 'slow' },
    );
    // The first event is taken by the handler at once (microtask), so the queue holds 3 more.
    bus.publish(0);
    await tick();
    for (let i = 1; i <= 10; i++) bus.publish(i);
    assert.equal(slow.depth, 3);
    assert.equal(slow.dropped, 7);
    assert.equal(bus.stats().dropped, 7);
    assert.equal(bus.stats().maxQueueDepth, 3);
    assert.deepEqual(drops, Array(7).fill('slow'));
    gate.resolve();
    while (slowSeen.length < 4) await tick();
    assert.deepEqual(slowSeen, [0, 1, 2, 3], 'the oldest events are kept, the overflow dropped');
  });

  test('a slow subscriber does not delay a fast one', async () => {
    const bus = new LifecycleBus<number>({ bufferSize: 2 });
    const gate = deferred();
    bus.subscribe(() => gate.promise, { name: 'stuck' });
    const fast: number[] = [];
    bus.subscribe((e) => void fast.push(e), { name: 'fast' });
    for (let i = 0; i < 100; i++) {
      bus.publish(i);
      await tick();
    }
    assert.equal(fast.length, 100, 'the fast subscriber got everything');
    assert.ok(bus.stats().dropped >= 97, 'the stuck one dropped, and only it');
    gate.resolve();
  });

  test('filters apply at publish time; close stops delivery and drops the queue', async () => {
    const bus = new LifecycleBus<number>({ bufferSize: 10 });
    const even: number[] = [];
    const sub = bus.subscribe((e) => void even.push(e), { filter: (e) => e % 2 === 0 });
    for (let i = 0; i < 6; i++) bus.publish(i);
    await tick();
    assert.deepEqual(even, [0, 2, 4]);
    sub.close();
    sub.close();
    bus.publish(8);
    await tick();
    assert.deepEqual(even, [0, 2, 4]);
    assert.equal(bus.stats().subscribers, 0);
  });

  test('a throwing handler or filter is reported and does not stop the bus', async () => {
    const errors: string[] = [];
    const bus = new LifecycleBus<number>({
      bufferSize: 10,
      onHandlerError: (_err, s) => errors.push(s),
    });
    const seen: number[] = [];
    bus.subscribe(
      (e) => {
        if (e === 1) throw new Error('boom');
        seen.push(e);
      },
      { name: 'h' },
    );
    bus.subscribe(() => undefined, {
      name: 'f',
      filter: () => {
        throw new Error('bad filter');
      },
    });
    for (let i = 0; i < 3; i++) bus.publish(i);
    await tick();
    assert.deepEqual(seen, [0, 2]);
    assert.deepEqual(errors.sort(), ['f', 'f', 'f', 'h']);
  });

  test('buffer sizes are validated', () => {
    assert.throws(() => new LifecycleBus({ bufferSize: 0 }), /≥ 1/);
    const bus = new LifecycleBus<number>({ bufferSize: 1 });
    assert.throws(() => bus.subscribe(() => undefined, { bufferSize: 1.5 }), /≥ 1/);
  });
});
