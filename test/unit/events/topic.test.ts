// The in-process event fan-out.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Topic } from '../../../src/events/topic.js';

describe('Topic', () => {
  test('delivers every event to every listener in subscription order, synchronously', () => {
    const t = new Topic<number>();
    const seen: string[] = [];
    t.subscribe((e) => seen.push(`a${e}`));
    t.subscribe((e) => seen.push(`b${e}`));
    t.publish(1);
    t.publish(2);
    assert.deepEqual(seen, ['a1', 'b1', 'a2', 'b2']);
    assert.equal(t.subscriberCount, 2);
  });

  test('unsubscribe stops delivery, is idempotent and only removes that subscription', () => {
    const t = new Topic<string>();
    const seen: string[] = [];
    const listener = (e: string): void => void seen.push(e);
    const off1 = t.subscribe(listener);
    t.subscribe(listener); // the same function twice is two subscriptions
    t.publish('x');
    off1();
    off1();
    assert.equal(t.subscriberCount, 1);
    t.publish('y');
    assert.deepEqual(seen, ['x', 'x', 'y']);
  });

  test('a listener unsubscribing during publish does not skip the others', () => {
    const t = new Topic<number>();
    const seen: string[] = [];
    const offA = t.subscribe(() => {
      seen.push('a');
      offA();
    });
    t.subscribe(() => seen.push('b'));
    t.publish(1);
    t.publish(2);
    assert.deepEqual(seen, ['a', 'b', 'b']);
  });

  test('a throwing listener does not stop the others and is reported', () => {
    const reported: unknown[] = [];
    const t = new Topic<number>({ onListenerError: (err) => reported.push(err) });
    const seen: number[] = [];
    const boom = new Error('listener bug');
    t.subscribe(() => {
      throw boom;
    });
    t.subscribe((e) => seen.push(e));
    assert.doesNotThrow(() => t.publish(7));
    assert.deepEqual(seen, [7]);
    assert.deepEqual(reported, [boom]);
  });

  test('without an error handler a throwing listener is still isolated from the publisher', () => {
    const t = new Topic<number>();
    let after = 0;
    t.subscribe(() => {
      throw new Error('x');
    });
    t.subscribe(() => after++);
    assert.doesNotThrow(() => t.publish(1));
    assert.equal(after, 1);
  });
});
