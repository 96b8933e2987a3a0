// Guest sessions on a real microVM through a real daemon process: commands that outlive
// their client, with output kept in the guest agent's ring. Detach and reattach (nothing
// missed), two attachers, input to one, the ring's bound, binary bytes, exit codes, the
// CLI, standby/restore and a kill -9 of the daemon, each followed by a reattach.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { SessionStream, VesselClient } from '../../src/client/index.js';
import { isVesselError } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { MAIN_JS, seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const why = await vmSkipReason();

/** Prints 1, 2, 3, … one line every 100 ms. */
const COUNTER = ['/bin/sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done'];

/** Read `stream` until `done(text so far)` holds; the bytes read. */
async function readUntil(
  stream: Readable,
  done: (text: string) => boolean,
  ms = 30_000,
): Promise<Buffer> {
  const parts: Buffer[] = [];
  const timer = setTimeout(() => stream.destroy(new Error(`no match within ${ms} ms`)), ms);
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      parts.push(chunk);
      if (done(Buffer.concat(parts).toString('utf8'))) break;
    }
  } finally {
    clearTimeout(timer);
  }
  const out = Buffer.concat(parts);
  assert.ok(done(out.toString('utf8')), `stream ended before the match: ${out.toString()}`);
  return out;
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) parts.push(chunk);
  return Buffer.concat(parts);
}

/** The counter's complete lines as numbers (a partial last line is left out). */
function numbers(text: string): number[] {
  const lines = text.split('\n');
  lines.pop();
  return lines.filter((l) => l !== '').map(Number);
}

function consecutive(ns: number[]): void {
  for (let i = 1; i < ns.length; i++)
    assert.equal(ns[i], ns[i - 1]! + 1, `a gap or repeat after ${ns[i - 1]}: ${ns.join(',')}`);
}

async function detach(s: SessionStream): Promise<void> {
  s.close();
  await s.result.catch(() => undefined);
}

describe('guest sessions on a real microVM', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let d: SpawnedDaemon;
  let c: VesselClient;
  let id: string;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-sessions-'));
    await seedKernel(dir);
    d = await startDaemon(dir);
    c = d.client;
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'sessions/busybox:1');
    const image = (await c.importImage(createReadStream(archive))).name;
    const inst = await c.createInstance({
      image,
      name: 'sbox',
      cmd: ['/bin/sh', '-c', 'while :; do sleep 1; done'],
      memory_mib: 256,
      network: { mode: 'none' },
    });
    id = inst.id;
    const r = await c.waitInstance(id, 'Running', 180);
    assert.equal(r.timed_out, false);
  });

  after(async () => {
    if (d) {
      await d.client.deleteInstance('sbox').catch(() => undefined);
      await d.stop();
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  test(
    'detach, wait, reattach from where it left: the missed output, then live, no gap',
    { timeout: 120_000 },
    async () => {
      const s = await c.startSession(id, { name: 'counter', command: COUNTER });
      assert.equal(s.state, 'running');
      assert.ok(s.pid > 1);
      const first = await c.attachSession(id, 'counter', { input: false });
      assert.equal(first.attached.from, 0);
      const seen = await readUntil(first.stdout, (t) => numbers(t).length >= 5);
      await detach(first);
      // The session runs on with nobody attached.
      await new Promise((r) => setTimeout(r, 1500));
      const before = numbers(seen.toString());
      const offset = seen.length - (seen.length - seen.lastIndexOf('\n') - 1);
      const second = await c.attachSession(id, 'counter', { input: false, from: offset });
      assert.equal(second.attached.from, offset, 'nothing was dropped');
      const missedAt = second.attached.end;
      assert.ok(missedAt > offset + 20, 'output went on while detached');
      // Read past what was kept while detached, into live output.
      const more = await readUntil(
        second.stdout,
        (t) => Buffer.byteLength(t) > missedAt - offset + 30,
      );
      await detach(second);
      const after = numbers(more.toString());
      assert.equal(after[0], before.at(-1)! + 1, 'continues with the next line');
      consecutive([...before, ...after]);
      // The detach reaches the guest just after the socket closed.
      let info = await c.getSession(id, 'counter');
      for (let i = 0; info.attached > 0 && i < 50; i++) {
        await new Promise((r) => setTimeout(r, 100));
        info = await c.getSession(id, 'counter');
      }
      assert.equal(info.state, 'running');
      assert.equal(info.attached, 0, 'a detached client is no longer counted');
      assert.equal(info.output_start, 0);
    },
  );

  test('two attachers at once see the same bytes', { timeout: 120_000 }, async () => {
    const [a, b] = await Promise.all([
      c.attachSession(id, 'counter', { input: false, from: 0 }),
      c.attachSession(id, 'counter', { input: false, from: 0 }),
    ]);
    assert.equal((await c.getSession(id, 'counter')).attached, 2);
    const target = Math.max(a.attached.end, b.attached.end) + 50;
    const [ta, tb] = await Promise.all([
      readUntil(a.stdout, (t) => Buffer.byteLength(t) >= target),
      readUntil(b.stdout, (t) => Buffer.byteLength(t) >= target),
    ]);
    await Promise.all([detach(a), detach(b)]);
    assert.deepEqual(ta.subarray(0, target), tb.subarray(0, target));
    consecutive(numbers(ta.subarray(0, target).toString()));
  });

  test(
    'input: a tty session answers the first attacher; a second one is read-only',
    { timeout: 120_000 },
    async () => {
      await c.startSession(id, { name: 'shell', command: ['/bin/sh'], tty: true });
      const owner = await c.attachSession(id, 'shell', { input: true });
      const watcher = await c.attachSession(id, 'shell', { input: true });
      assert.equal(owner.attached.input, true);
      assert.equal(owner.attached.tty, true);
      assert.equal(watcher.attached.input, false, 'single input: the first attacher holds it');
      const watched = readUntil(watcher.stdout, (t) => t.includes('42'));
      owner.stdin.write('echo $((6*7))\n');
      await readUntil(owner.stdout, (t) => t.includes('42'));
      await watched;
      // Input of a read-only attacher goes nowhere.
      watcher.stdin.write('echo never-$((1+1))\n');
      await new Promise((r) => setTimeout(r, 500));
      owner.stdin.write('exit 7\n');
      const end = await owner.result;
      assert.equal(end.code, 7);
      assert.equal(end.running, false);
      await detach(watcher);
      const log = (await readAll(await c.sessionLogs(id, 'shell'))).toString();
      assert.ok(!log.includes('never-2'), 'the read-only attacher typed nothing');
      const s = await c.getSession(id, 'shell');
      assert.equal(s.state, 'exited');
      assert.equal(s.exit_code, 7, 'the exit code is kept');
      // Attaching to an ended session replays its output and ends with its code.
      const late = await c.attachSession(id, 'shell', { input: true });
      assert.equal(late.attached.running, false);
      const [replayed, lateEnd] = await Promise.all([readAll(late.stdout), late.result]);
      assert.match(replayed.toString(), /42/);
      assert.equal(lateEnd.code, 7);
    },
  );

  test(
    'the ring keeps exactly its bound: the newest bytes, binary safe',
    { timeout: 120_000 },
    async () => {
      // 100,000 random bytes through a 16 KiB ring; the guest keeps a copy to compare with.
      await c.startSession(id, {
        name: 'bytes',
        command: ['/bin/sh', '-c', 'head -c 100000 /dev/urandom > /tmp/r; cat /tmp/r'],
        buffer_bytes: 16384,
      });
      let s = await c.getSession(id, 'bytes');
      for (let i = 0; s.state === 'running' && i < 100; i++) {
        await new Promise((r) => setTimeout(r, 100));
        s = await c.getSession(id, 'bytes');
      }
      assert.equal(s.state, 'exited');
      assert.equal(s.exit_code, 0);
      assert.equal(s.output_end, 100000);
      assert.equal(s.output_start, 100000 - 16384, 'the ring wrapped at its bound');
      const kept = await readAll(await c.sessionLogs(id, 'bytes'));
      const whole = await readAll(await c.readInstanceFile(id, '/tmp/r'));
      assert.equal(kept.length, 16384);
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      assert.equal(sha(kept), sha(whole.subarray(100000 - 16384)));
      // An offset that was dropped starts at the oldest byte kept, and says so.
      const a = await c.attachSession(id, 'bytes', { from: 10, input: false });
      assert.equal(a.attached.from, 100000 - 16384);
      assert.equal(sha(await readAll(a.stdout)), sha(kept));
    },
  );

  test(
    'rm: an ended session goes, a running one needs force; unknown names are 404',
    { timeout: 120_000 },
    async () => {
      await c.startSession(id, { name: 'sleeper', command: ['sleep', '600'] });
      await assert.rejects(c.deleteSession(id, 'sleeper'), (e) => isVesselError(e, 'conflict'));
      await c.deleteSession(id, 'sleeper', { force: true });
      await c.deleteSession(id, 'bytes');
      const names = (await c.listSessions(id)).map((s) => s.name);
      assert.ok(!names.includes('sleeper') && !names.includes('bytes'), names.join(','));
      await assert.rejects(c.getSession(id, 'sleeper'), (e) => isVesselError(e, 'not_found'));
      await assert.rejects(c.attachSession(id, 'nope'), (e) => isVesselError(e, 'not_found'));
      await assert.rejects(c.startSession(id, { name: 'counter', command: ['true'] }), (e) =>
        isVesselError(e, 'already_exists'),
      );
      await assert.rejects(c.startSession(id, { command: ['/no/such/program'] }), (e) =>
        isVesselError(e, 'not_found'),
      );
    },
  );

  test('the CLI: start, ls, logs, kill, rm', { timeout: 120_000 }, async () => {
    const started = await d.cli([
      'session',
      'start',
      'sbox',
      '--name',
      'cli',
      '--',
      'sh',
      '-c',
      'echo out; echo err >&2; sleep 600',
    ]);
    assert.equal(started.code, 0, started.stderr);
    assert.equal(started.stdout, 'cli\n');
    const ls = await d.cli(['session', 'ls', 'sbox']);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^cli\s+running\s+\d+\s+sh -c/m);
    let logs = await d.cli(['session', 'logs', 'sbox', 'cli']);
    for (let i = 0; logs.stdout.length < 8 && i < 50; i++) {
      await new Promise((r) => setTimeout(r, 100));
      logs = await d.cli(['session', 'logs', 'sbox', 'cli']);
    }
    assert.equal(logs.code, 0, logs.stderr);
    assert.deepEqual(logs.stdout.split('\n').sort(), ['', 'err', 'out']);
    const killed = await d.cli(['session', 'kill', '-s', 'TERM', 'sbox', 'cli']);
    assert.equal(killed.code, 0, killed.stderr);
    // logs -f ends when the session does.
    const follow = await d.cli(['session', 'logs', '-f', 'sbox', 'cli'], 30_000);
    assert.equal(follow.code, 0, follow.stderr);
    const json = await d.cli(['--json', 'session', 'ls', 'sbox']);
    const cli = (JSON.parse(json.stdout) as { name: string; exit_code: number }[]).find(
      (s) => s.name === 'cli',
    );
    assert.equal(cli?.exit_code, 143, 'SIGTERM: 128 + 15');
    // attach -i with piped binary stdin: every byte arrives (ctrl-p ctrl-q included: detach
    // keys are for a terminal), the session's exit code is the CLI's.
    const input = Buffer.concat([Buffer.from([0x10, 0x11, 0, 0xff]), randomBytes(300_000)]);
    const inFile = path.join(dir, 'stdin.bin');
    await fs.writeFile(inFile, input);
    await c.startSession(id, {
      name: 'sink',
      command: ['/bin/sh', '-c', 'cat > /tmp/in; busybox sha256sum < /tmp/in; exit 4'],
    });
    const fed = await run(
      '/bin/sh',
      [
        '-c',
        '"$0" "$1" --data-dir "$2" session attach -i sbox sink < "$3"',
        process.execPath,
        MAIN_JS,
        dir,
        inFile,
      ],
      { allowFailure: true, timeoutMs: 60_000 },
    );
    assert.equal(fed.code, 4, fed.stderr);
    assert.equal(
      fed.stdout.trim().split(/\s+/)[0],
      createHash('sha256').update(input).digest('hex'),
    );
    const rm = await d.cli(['session', 'rm', 'sbox', 'cli']);
    assert.equal(rm.code, 0, rm.stderr);
    const missing = await d.cli(['session', 'logs', 'sbox', 'cli']);
    assert.equal(missing.code, 4, 'not found');
    assert.match(missing.stderr, /no session "cli"/);
  });

  test(
    'standby then restore: the same process and buffer; reattach and it goes on',
    { timeout: 120_000 },
    async () => {
      const before = await c.getSession(id, 'counter');
      await c.instanceAction(id, 'standby');
      await c.instanceAction(id, 'restore');
      const after = await c.getSession(id, 'counter');
      assert.equal(after.pid, before.pid, 'the same process');
      assert.equal(after.state, 'running');
      assert.ok(after.output_end >= before.output_end);
      const a = await c.attachSession(id, 'counter', { input: false, from: 0 });
      const text = await readUntil(a.stdout, (t) => Buffer.byteLength(t) > after.output_end + 30);
      await detach(a);
      consecutive(numbers(text.toString()));
    },
  );

  test(
    'kill -9 of the daemon: the next one re-adopts the VM and the session is still there',
    { timeout: 120_000 },
    async () => {
      const before = await c.getSession(id, 'counter');
      await d.kill9();
      d = await startDaemon(dir);
      c = d.client;
      const r = await c.waitInstance(id, 'Running', 60);
      assert.equal(r.timed_out, false);
      const after = await c.getSession(id, 'counter');
      assert.equal(after.pid, before.pid);
      assert.equal(after.attached, 0, "the old daemon's attachments are gone");
      const a = await c.attachSession(id, 'counter', { input: false, from: 0 });
      const text = await readUntil(a.stdout, (t) => Buffer.byteLength(t) > after.output_end + 30);
      await detach(a);
      const ns = numbers(text.toString());
      assert.equal(ns[0], 1, 'the buffer from the first line');
      consecutive(ns);
    },
  );
});
