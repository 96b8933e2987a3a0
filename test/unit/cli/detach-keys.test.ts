import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { detachFilter, parseDetachKeys } from '../../../src/cli/exec-attach.js';
import { parseSignal } from '../../../src/cli/commands/session.js';

test('detach keys in docker notation', () => {
  assert.deepEqual([...parseDetachKeys('ctrl-p,ctrl-q')], [0x10, 0x11]);
  assert.deepEqual([...parseDetachKeys('ctrl-a,x')], [0x01, 0x78]);
  assert.deepEqual([...parseDetachKeys('ctrl-@,ctrl-[')], [0x00, 0x1b]);
  assert.throws(() => parseDetachKeys('ctrl-1'), /not a control key/);
  assert.throws(() => parseDetachKeys('shift-a'), /not a key/);
});

async function filtered(chunks: number[][]): Promise<{ out: number[]; detached: number }> {
  let detached = 0;
  const f = detachFilter(Buffer.from([0x10, 0x11]), () => detached++);
  const out: number[] = [];
  f.on('data', (b: Buffer) => out.push(...b));
  await new Promise<void>((resolve) => {
    Readable.from(chunks.map((c) => Buffer.from(c)))
      .pipe(f)
      .on('finish', resolve);
  });
  return { out, detached };
}

test('the detach sequence is taken out of stdin, across chunks, and nothing else is', async () => {
  assert.deepEqual(await filtered([[0x61, 0x10, 0x11, 0x62]]), { out: [0x61], detached: 1 });
  assert.deepEqual(await filtered([[0x61, 0x10], [0x11]]), { out: [0x61], detached: 1 });
  // A broken sequence is sent as typed, ctrl-p included.
  assert.deepEqual(await filtered([[0x10, 0x62, 0x10, 0x10, 0x11]]), {
    out: [0x10, 0x62, 0x10],
    detached: 1,
  });
  assert.deepEqual(await filtered([[0x61, 0x10]]), { out: [0x61, 0x10], detached: 0 });
  assert.deepEqual(await filtered([[0x00, 0xff, 0x10, 0x0a]]), {
    out: [0x00, 0xff, 0x10, 0x0a],
    detached: 0,
  });
});

test('signals by number or name', () => {
  assert.equal(parseSignal('9'), 9);
  assert.equal(parseSignal('TERM'), 15);
  assert.equal(parseSignal('sigint'), 2);
  assert.throws(() => parseSignal('65'), /not a signal/);
  assert.throws(() => parseSignal('NOPE'), /not a signal/);
});
