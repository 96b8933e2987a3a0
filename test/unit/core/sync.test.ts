// Concurrency primitives. Interleavings are driven by deferred promises, never
// by timers, so every test is deterministic.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KeyedMutex, Mutex, Semaphore, SingleFlight } from '../../../src/core/sync.js';

interface Deferred<T = void> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}
function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Let every queued microtask and promise continuation run. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('Mutex', () => {
  test('is exclusive: a read-modify-write across an await is not lost', async () => {
    const m = new Mutex();
    let counter = 0;
    const inc = () =>
      m.run(async () => {
        const v = counter;
        await settle();
        counter = v + 1;
      });
    await Promise.all(Array.from({ length: 20 }, inc));
    assert.equal(counter, 20);
  });

  test('is FIFO and reports locked while held', async () => {
    const m = new Mutex();
    const order: string[] = [];
    const gate = deferred();
    assert.equal(m.locked, false);
    const first = m.run(async () => {
      order.push('a:start');
      await gate.promise;
      order.push('a:end');
    });
    const rest = ['b', 'c', 'd'].map((k) => m.run(() => void order.push(k)));
    await settle();
    assert.equal(m.locked, true);
    assert.deepEqual(order, ['a:start'], 'nobody runs while the first holds the lock');
    gate.resolve();
    await Promise.all([first, ...rest]);
    assert.deepEqual(order, ['a:start', 'a:end', 'b', 'c', 'd']);
    assert.equal(m.locked, false);
  });

  test('a throwing holder releases the lock and its caller gets the error', async () => {
    const m = new Mutex();
    const failed = m.run(() => {
      throw new Error('boom');
    });
    const next = m.run(() => 'next');
    await assert.rejects(failed, /boom/);
    assert.equal(await next, 'next');
  });
});

describe('KeyedMutex', () => {
  const size = (km: KeyedMutex): number => (Reflect.get(km, 'locks') as Map<string, unknown>).size;

  test('serialises the same key and runs different keys concurrently', async () => {
    const km = new KeyedMutex();
    const events: string[] = [];
    const gateA = deferred();
    const a1 = km.run('a', async () => {
      events.push('a1:start');
      await gateA.promise;
      events.push('a1:end');
    });
    const a2 = km.run('a', () => void events.push('a2'));
    const b = km.run('b', () => void events.push('b'));
    await b;
    assert.deepEqual(events, ['a1:start', 'b'], 'key b did not wait for key a');
    assert.equal(km.isLocked('a'), true);
    assert.equal(km.isLocked('b'), false);
    gateA.resolve();
    await Promise.all([a1, a2]);
    assert.deepEqual(events, ['a1:start', 'b', 'a1:end', 'a2']);
  });

  test('forgets keys nobody holds or waits for', async () => {
    const km = new KeyedMutex();
    const gate = deferred();
    const p = km.run('x', () => gate.promise);
    const q = km.run('x', () => undefined);
    await settle();
    assert.equal(size(km), 1);
    gate.resolve();
    await Promise.all([p, q]);
    assert.equal(size(km), 0);
    await assert.rejects(
      km.run('y', () => Promise.reject(new Error('no'))),
      /no/,
    );
    assert.equal(size(km), 0, 'a failure forgets the key too');
    assert.equal(km.isLocked('x'), false);
  });
});

describe('Semaphore', () => {
  test('never runs more than N at once and runs all of them', async () => {
    const sem = new Semaphore(3);
    let inFlight = 0;
    let max = 0;
    const done: number[] = [];
    const task = (i: number) =>
      sem.run(async () => {
        inFlight++;
        max = Math.max(max, inFlight);
        await settle();
        inFlight--;
        done.push(i);
        return i;
      });
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => task(i)));
    assert.equal(max, 3);
    assert.deepEqual(results, [...Array(10).keys()]);
    assert.equal(done.length, 10);
    assert.equal(sem.waiting, 0);
  });

  test('reports queue positions and starts waiters in FIFO order', async () => {
    const sem = new Semaphore(1);
    const gate = deferred();
    const positions: [string, number][] = [];
    const started: string[] = [];
    const holder = sem.run(() => gate.promise);
    const waiters = ['a', 'b', 'c'].map((k) =>
      sem.run(
        () => {
          started.push(k);
          return Promise.resolve();
        },
        (pos) => positions.push([k, pos]),
      ),
    );
    await settle();
    assert.deepEqual(positions, [
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    assert.equal(sem.waiting, 3);
    assert.deepEqual(started, []);
    gate.resolve();
    await Promise.all([holder, ...waiters]);
    assert.deepEqual(started, ['a', 'b', 'c']);
  });

  test('onQueued is not called when a permit is free; a rejection releases the permit', async () => {
    const sem = new Semaphore(1);
    let queued = false;
    await assert.rejects(
      sem.run(
        () => Promise.reject(new Error('fail')),
        () => (queued = true),
      ),
      /fail/,
    );
    assert.equal(queued, false);
    assert.equal(await sem.run(() => Promise.resolve('again')), 'again');
  });
});

describe('SingleFlight', () => {
  test('runs once for concurrent callers, who all get the same result', async () => {
    const sf = new SingleFlight<number>();
    const gate = deferred<number>();
    let calls = 0;
    const fn = () => {
      calls++;
      return gate.promise;
    };
    const a = sf.do('k', fn);
    const b = sf.do('k', fn);
    assert.equal(sf.has('k'), true);
    assert.deepEqual(sf.keys(), ['k']);
    gate.resolve(7);
    assert.deepEqual(await Promise.all([a, b]), [7, 7]);
    assert.equal(calls, 1);
    assert.equal(sf.has('k'), false);
  });

  test('shares a rejection, then runs again after completion', async () => {
    const sf = new SingleFlight<string>();
    const gate = deferred<string>();
    let calls = 0;
    const a = sf.do('k', () => {
      calls++;
      return gate.promise;
    });
    const b = sf.do('k', () => {
      calls++;
      return Promise.resolve('unused');
    });
    gate.reject(new Error('shared'));
    await assert.rejects(a, /shared/);
    await assert.rejects(b, /shared/);
    assert.equal(calls, 1);
    assert.equal(await sf.do('k', () => Promise.resolve(`second ${++calls}`)), 'second 2');
  });

  test('different keys run independently', async () => {
    const sf = new SingleFlight<string>();
    const [x, y] = await Promise.all([
      sf.do('x', () => Promise.resolve('x')),
      sf.do('y', () => Promise.resolve('y')),
    ]);
    assert.deepEqual([x, y], ['x', 'y']);
  });
});
