// Bounded instance logs: copytruncate at the limit keeping one previous part, the limit from
// VESSEL_LOG_MAX_BYTES, and readLog reading across the rotation boundary (whole log, tail
// spanning both parts, a follower whose offset is cut by a rotation). Real files in a temp dir;
// the instance core is reduced to what readLog touches (paths, the event topic, the row).
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync, writeSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Paths } from '../../../src/core/paths.js';
import { StdioKind, encodeStdioHeader } from '../../../src/core/stdio-stream.js';
import type { InstanceCore } from '../../../src/instances/core.js';
import {
  DEFAULT_LOG_MAX_BYTES,
  logMaxBytes,
  rotateIfNeeded,
  rotatedPath,
  rotationGeneration,
} from '../../../src/instances/log-rotate.js';
import { readLog, type LogChunk } from '../../../src/instances/logs.js';

const ID = 'i-rot';
const MAX = 64 * 1024;

let dir: string;
let listener: ((e: unknown) => void) | undefined;
let state = 'Stopped';

function core(): InstanceCore {
  return {
    o: { paths: new Paths(dir) },
    topic: {
      subscribe: (fn: (e: unknown) => void) => {
        listener = fn;
        return () => (listener = undefined);
      },
    },
    repo: { get: () => ({ state }) },
  } as unknown as InstanceCore;
}

const file = (name: string): string => new Paths(dir).instanceFile(ID, name);

/** Append like runtime.ts does: one write, then the rotation check. */
function append(fd: number, name: string, data: Buffer): void {
  writeSync(fd, data);
  rotateIfNeeded(fd, file(name), MAX);
}

async function collect(it: AsyncIterable<LogChunk>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of it) parts.push(c.data);
  return Buffer.concat(parts);
}

/** `count` numbered lines of about 100 bytes. */
const lines = (from: number, count: number): Buffer =>
  Buffer.from(
    Array.from({ length: count }, (_, i) => `line ${from + i} ${'x'.repeat(90)}\n`).join(''),
  );

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-logrot-'));
  await fs.mkdir(path.dirname(file('console.log')), { recursive: true });
  state = 'Stopped';
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('log rotation', () => {
  test('the limit comes from VESSEL_LOG_MAX_BYTES when sane', () => {
    assert.equal(logMaxBytes({}), DEFAULT_LOG_MAX_BYTES);
    assert.equal(logMaxBytes({ VESSEL_LOG_MAX_BYTES: '1048576' }), 1048576);
    assert.equal(logMaxBytes({ VESSEL_LOG_MAX_BYTES: '12' }), DEFAULT_LOG_MAX_BYTES);
    assert.equal(logMaxBytes({ VESSEL_LOG_MAX_BYTES: 'lots' }), DEFAULT_LOG_MAX_BYTES);
  });

  test('a flood keeps at most two parts of about the limit each', async () => {
    const fd = openSync(file('console.log'), 'a');
    try {
      for (let i = 0; i < 100; i++) append(fd, 'console.log', lines(i * 100, 100)); // ~1 MiB
    } finally {
      closeSync(fd);
    }
    const live = (await fs.stat(file('console.log'))).size;
    const prev = (await fs.stat(rotatedPath(file('console.log')))).size;
    assert.ok(live < MAX, `live part ${live}`);
    assert.ok(prev >= MAX && prev < MAX + 10_100, `previous part ${prev}`);
    assert.ok(rotationGeneration(file('console.log')) >= 10);
    const left = await fs.readdir(path.dirname(file('console.log')));
    assert.deepEqual(left.sort(), ['console.log', 'console.log.1']);
  });

  test('readLog returns both parts in order, and a tail spans the boundary', async () => {
    const fd = openSync(file('console.log'), 'a');
    append(fd, 'console.log', lines(0, 700)); // 70 KB: rotated
    append(fd, 'console.log', lines(700, 5));
    closeSync(fd);
    const all = (await collect(readLog(core(), ID, 'console'))).toString();
    assert.equal(all, Buffer.concat([lines(0, 700), lines(700, 5)]).toString());
    const tail = (await collect(readLog(core(), ID, 'console', { tail: 8 }))).toString();
    assert.equal(tail, lines(697, 8).toString());
  });

  test('the framed app log rotates on frame boundaries and reads back whole', async () => {
    const fd = openSync(file('app.stdio'), 'a');
    const want: Buffer[] = [];
    for (let i = 0; i < 100; i++) {
      const data = lines(i * 10, 10);
      want.push(data);
      writeSync(fd, encodeStdioHeader(StdioKind.stdout, data.length));
      append(fd, 'app.stdio', data);
    }
    closeSync(fd);
    assert.ok(rotationGeneration(file('app.stdio')) >= 1);
    // Only the live part and the one before it are kept; both decode as whole frames.
    const got = await collect(readLog(core(), ID, 'app'));
    assert.ok(Buffer.concat(want).toString().endsWith(got.toString()));
    assert.ok(got.length > MAX);
    const tail = (await collect(readLog(core(), ID, 'app', { tail: 3 }))).toString();
    assert.equal(tail, lines(997, 3).toString());
  });

  test('a follower whose offset is cut by a rotation continues in the previous part', async () => {
    state = 'Running';
    const fd = openSync(file('console.log'), 'a');
    append(fd, 'console.log', lines(0, 10));
    const it = readLog(core(), ID, 'console', { follow: true })[Symbol.asyncIterator]();
    const first: IteratorResult<LogChunk> = await it.next();
    assert.ok(!first.done);
    assert.equal(first.value.data.toString(), lines(0, 10).toString());
    const next = it.next(); // waits at the end of the live file
    append(fd, 'console.log', lines(10, 700)); // passes the limit: rotated
    append(fd, 'console.log', lines(710, 3));
    listener?.({ type: 'log', id: ID });
    const got: Buffer[] = [(await next).value!.data];
    state = 'Stopped';
    listener?.({ type: 'state', id: ID, instance: { state: 'Stopped' } });
    for (let r = await it.next(); !r.done; r = await it.next()) got.push(r.value.data);
    closeSync(fd);
    assert.equal(Buffer.concat(got).toString(), lines(10, 703).toString());
  });
});
