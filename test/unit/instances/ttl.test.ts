// The expiry timer with fake timers: one timer for the nearest expiry, re-armed on changes,
// what expired while no daemon ran goes at start, long waits are chunked, failures retried.
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '../../../src/core/logger.js';
import {
  ExpiryTimer,
  MAX_TIMER_MS,
  RETRY_MS,
  checkExpiresAt,
  expiryFor,
} from '../../../src/instances/ttl.js';

const T0 = Date.parse('2030-01-01T00:00:00Z');

function world() {
  let now = T0;
  const rows = new Map<string, string>(); // id → expires_at
  const expired: string[] = [];
  let failNext = 0;
  const timer = new ExpiryTimer({
    next: () => {
      const [id, at] = [...rows].sort((a, b) => a[1].localeCompare(b[1]))[0] ?? [];
      return id === undefined ? undefined : { id, name: id, expires_at: at! };
    },
    expire: (id) => {
      if (failNext > 0) {
        failNext--;
        return Promise.reject(new Error('disk on fire'));
      }
      expired.push(id);
      rows.delete(id);
      return Promise.resolve();
    },
    logger: silentLogger(),
    now: () => now,
  });
  return {
    timer,
    rows,
    expired,
    set: (id: string, inMs: number) => rows.set(id, new Date(T0 + inMs).toISOString()),
    /** Move the clock and the fake timers together. */
    async tick(ms: number) {
      now += ms;
      mock.timers.tick(ms);
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    },
    failNext: (n: number) => (failNext = n),
  };
}

describe('ExpiryTimer', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout'] }));
  afterEach(() => mock.timers.reset());

  test('start deletes what already expired, then fires at the next expiry', async () => {
    const w = world();
    w.set('past', -1000);
    w.set('soon', 5000);
    w.set('later', 60_000);
    await w.timer.start();
    assert.deepEqual(w.expired, ['past']);
    await w.tick(4999);
    assert.deepEqual(w.expired, ['past']);
    await w.tick(1);
    assert.deepEqual(w.expired, ['past', 'soon']);
    await w.tick(55_000);
    assert.deepEqual(w.expired, ['past', 'soon', 'later']);
    w.timer.stop();
  });

  test('rearm follows changes: a new nearer expiry, a removed one', async () => {
    const w = world();
    w.set('a', 60_000);
    await w.timer.start();
    w.set('b', 1000);
    w.timer.rearm();
    await w.tick(1000);
    assert.deepEqual(w.expired, ['b']);
    w.rows.delete('a');
    w.timer.rearm();
    await w.tick(120_000);
    assert.deepEqual(w.expired, ['b']);
    w.timer.stop();
  });

  test('expiries further away than setTimeout allows are waited for in chunks', async () => {
    const w = world();
    w.set('far', MAX_TIMER_MS + 10_000);
    await w.timer.start();
    await w.tick(MAX_TIMER_MS);
    assert.deepEqual(w.expired, []);
    await w.tick(10_000);
    assert.deepEqual(w.expired, ['far']);
    w.timer.stop();
  });

  test('a failed delete is retried later; stop cancels', async () => {
    const w = world();
    w.set('x', 100);
    w.failNext(1);
    await w.timer.start();
    await w.tick(100);
    assert.deepEqual(w.expired, []);
    await w.tick(RETRY_MS);
    assert.deepEqual(w.expired, ['x']);
    w.set('y', RETRY_MS + 200);
    w.timer.rearm();
    w.timer.stop();
    await w.tick(10 * RETRY_MS);
    assert.deepEqual(w.expired, ['x']);
  });
});

describe('expiry from a request', () => {
  test('ttl from creation, 0 for never, or an absolute time', () => {
    assert.equal(expiryFor({ ttl_ms: 90_000 }, T0), '2030-01-01T00:01:30.000Z');
    assert.equal(expiryFor({ ttl_ms: 0 }, T0), null);
    assert.equal(
      expiryFor({ expires_at: '2031-01-01T00:00:00.000Z' }, T0),
      '2031-01-01T00:00:00.000Z',
    );
    assert.equal(expiryFor({}, T0), null);
  });

  test('expires_at must be a date-time in the future; it is normalised to UTC', () => {
    assert.equal(checkExpiresAt('2030-01-01T02:00:00+02:00', T0 - 1), '2030-01-01T00:00:00.000Z');
    assert.throws(() => checkExpiresAt('2029-12-31T23:59:59Z', T0), /not in the future/);
    assert.throws(() => checkExpiresAt('tomorrow', T0), /not a date-time/);
  });
});
