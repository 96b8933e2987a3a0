// The SDK facade (packages/sdk) against a real daemon and real microVMs: Sandbox.create waits
// for Running, commands keep bytes exact, files through the files API, lifecycle and the events
// iterator, and TCP with a bearer token. The packed package: sdk-package.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  Sandbox,
  Vessel,
  isVesselError,
  type LifecycleEvent,
} from '../../packages/sdk/src/index.js';
import { defaultConfig } from '../../src/core/config.js';
import { silentLogger } from '../../src/core/logger.js';
import { Daemon } from '../../src/daemon/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { seedKernel } from '../helpers/vm-daemon.js';

const TOKEN = 'sdk-test-token-0123456789abcdef';
const why = await vmSkipReason();

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Every byte value, then pseudo-random bytes: 300 000 bytes that are not UTF-8. */
function binary(size = 300_000): Buffer {
  const b = Buffer.alloc(size);
  let x = 12345;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = i < 256 ? i : x >>> 24;
  }
  return b;
}

async function drain(s: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c);
  return Buffer.concat(parts);
}

describe('SDK: a real daemon and microVM', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let daemon: Daemon;
  let vessel: Vessel;
  let image: string;
  let sandbox: Sandbox;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-sdk-'));
    await seedKernel(dir);
    const config = defaultConfig(dir);
    daemon = new Daemon({
      config: {
        ...config,
        api: { tokens: [TOKEN], tcp: { host: '127.0.0.1', port: 0 } },
        dns: { ...config.dns, enabled: false },
      },
      logger: silentLogger(),
    });
    await daemon.start();
    vessel = new Vessel({ dataDir: dir });
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'sdk/busybox:1');
    image = (await vessel.api.importImage(createReadStream(archive))).name;
    sandbox = await Sandbox.create({
      vessel,
      image,
      name: 'sdk',
      memoryMib: 256,
      network: { mode: 'none' },
    });
  });

  after(async () => {
    for (const i of (await vessel?.api.listInstances().catch(() => [])) ?? [])
      await vessel.api.deleteInstance(i.id).catch(() => undefined);
    await vessel?.close();
    await daemon?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('create resolves once Running; connect and list find the sandbox', async () => {
    assert.equal(sandbox.state, 'Running');
    assert.equal(sandbox.name, 'sdk');
    assert.equal(sandbox.info.network.mode, 'none');
    const again = await Sandbox.connect('sdk', { vessel });
    assert.equal(again.id, sandbox.id);
    assert.equal(await again.isRunning(), true);
    const all = await Sandbox.list({ dataDir: dir });
    assert.deepEqual(
      all.map((i) => i.id),
      [sandbox.id],
    );
    await assert.rejects(Sandbox.connect('no-such-sandbox', { vessel }), (err) =>
      isVesselError(err, 'not_found'),
    );
  });

  test('run: binary output byte for byte, stderr apart, the exit code, text callbacks', async () => {
    const data = binary();
    const r = await sandbox.commands.run(['/bin/sh', '-c', 'cat; echo oops >&2; exit 3'], {
      stdin: data,
    });
    assert.equal(r.exitCode, 3);
    assert.equal(sha256(r.stdoutBytes), sha256(data));
    assert.equal(r.stderr, 'oops\n');
    const raw = await sandbox.commands.run("printf '\\000\\377\\200\\n'");
    assert.equal(raw.stdoutBytes.toString('hex'), '00ff800a');
    const seen: string[] = [];
    const text = await sandbox.commands.run('echo héllo; echo wörld >&2', {
      env: { GREETING: 'x' },
      cwd: '/tmp',
      onStdout: (t) => seen.push(`out:${t}`),
      onStderr: (t) => seen.push(`err:${t}`),
    });
    assert.equal(text.exitCode, 0);
    assert.deepEqual([text.stdout, text.stderr], ['héllo\n', 'wörld\n']);
    assert.deepEqual(seen.sort(), ['err:wörld\n', 'out:héllo\n']);
    const env = await sandbox.commands.run('echo $GREETING $PWD', {
      env: { GREETING: 'hi' },
      cwd: '/tmp',
    });
    assert.equal(env.stdout, 'hi /tmp\n');
  });

  test('start: async iterable streams, stdin as a stream, kill, wait', async () => {
    const h = await sandbox.commands.start(['cat'], { stdin: true });
    const out = drain(h.stdout);
    await new Promise<void>((resolve) => h.stdin.write('one\n', () => resolve()));
    h.stdin.end('two\n');
    assert.equal((await out).toString(), 'one\ntwo\n');
    assert.deepEqual(await h.wait(), { exitCode: 0, signal: null });

    const fed = await sandbox.commands.run(['wc', '-c'], {
      stdin: Readable.from([Buffer.alloc(70_000, 1), Buffer.alloc(30_000, 2)]),
    });
    assert.equal(fed.stdout.trim(), '100000');

    const sleeper = await sandbox.commands.start(['sh', '-c', 'echo ready; exec sleep 600']);
    const it = sleeper.stdout[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    const first = (await it.next()) as IteratorResult<Buffer, undefined>;
    assert.equal(first.value?.toString('utf8'), 'ready\n');
    sleeper.kill(15);
    const exit = await sleeper.wait();
    assert.equal(exit.signal, 15);
    assert.equal(exit.exitCode, 143);
  });

  test('errors: timeoutMs kills the command; a missing program is not_found', async () => {
    const t0 = Date.now();
    await assert.rejects(sandbox.commands.run('sleep 600', { timeoutMs: 1500 }), (err) =>
      isVesselError(err, 'timeout'),
    );
    assert.ok(Date.now() - t0 < 30_000);
    await assert.rejects(sandbox.commands.run(['/no/such/program']), (err) => {
      assert.ok(isVesselError(err, 'not_found'), String(err));
      assert.match(err.message, /\/no\/such\/program/);
      return true;
    });
  });

  test('files (files API): binary write and read are byte exact; list; remove; clear errors', async () => {
    const data = binary(200_000);
    await sandbox.files.write('/tmp/deep/dir/blob.bin', data);
    assert.equal(
      sha256(await sandbox.files.read('/tmp/deep/dir/blob.bin', { format: 'bytes' })),
      sha256(data),
    );
    const streamed = await drain(
      await sandbox.files.read('/tmp/deep/dir/blob.bin', { format: 'stream' }),
    );
    assert.equal(sha256(streamed), sha256(data));
    await sandbox.files.write('/tmp/deep/a b.txt', 'text ✓\n');
    assert.equal(await sandbox.files.read('/tmp/deep/a b.txt'), 'text ✓\n');
    const entries = await sandbox.files.list('/tmp/deep');
    assert.deepEqual(entries.map((e) => `${e.type}:${e.name}:${e.path}`).sort(), [
      'dir:dir:/tmp/deep/dir',
      'file:a b.txt:/tmp/deep/a b.txt',
    ]);
    await assert.rejects(sandbox.files.read('/tmp/none'), (err) => isVesselError(err, 'not_found'));
    await assert.rejects(sandbox.files.read('/tmp/deep'), (err) =>
      isVesselError(err, 'invalid_argument'),
    );
    await assert.rejects(
      drain(await sandbox.files.read('/tmp/none', { format: 'stream' })),
      (err) => isVesselError(err, 'not_found'),
    );
    await assert.rejects(sandbox.files.list('/tmp/deep/a b.txt'), (err) =>
      isVesselError(err, 'invalid_argument'),
    );
    assert.equal(entries.find((e) => e.name === 'a b.txt')?.size, Buffer.byteLength('text ✓\n'));
    await sandbox.files.write('/tmp/deep/x.sh', '#!/bin/sh\n', { mode: 0o750 });
    assert.equal(
      (await sandbox.files.list('/tmp/deep')).find((e) => e.name === 'x.sh')?.mode,
      0o750,
    );
    await sandbox.files.remove('/tmp/deep', { recursive: true });
    await assert.rejects(sandbox.files.list('/tmp/deep'), (err) => isVesselError(err, 'not_found'));
  });

  test(
    'standby and restore keep a live process; the events iterator sees each hop',
    { timeout: 240_000 },
    async () => {
      const pid = (
        await sandbox.commands.run('sleep 100000 >/dev/null 2>&1 & echo $!')
      ).stdout.trim();
      const ac = new AbortController();
      const seen: LifecycleEvent[] = [];
      const watching = (async () => {
        for await (const e of sandbox.events({ types: ['state'], signal: ac.signal })) {
          seen.push(e);
          if (e.new_state === 'Running' && seen.some((s) => s.new_state === 'Standby')) return;
        }
      })();
      // The stream is open once the daemon answers; an event shows it.
      await new Promise((r) => setTimeout(r, 500));
      assert.equal((await sandbox.standby()).state, 'Standby');
      assert.equal(sandbox.state, 'Standby');
      await assert.rejects(sandbox.commands.run('true'), (err) => isVesselError(err, 'conflict'));
      assert.equal((await sandbox.restore()).state, 'Running');
      await watching;
      ac.abort();
      assert.ok(
        seen.some((e) => e.new_state === 'Standby'),
        JSON.stringify(seen),
      );
      assert.equal(seen.at(-1)?.new_state, 'Running');
      assert.equal((await sandbox.commands.run(`kill -0 ${pid} && echo alive`)).stdout, 'alive\n');
    },
  );

  test('TCP with a bearer token (options or VESSEL_HOST/VESSEL_TOKEN); clear errors without', async () => {
    const port = daemon.tcpAddress()?.port;
    assert.ok(port);
    const tcp = new Vessel({ env: { VESSEL_HOST: `127.0.0.1:${port}`, VESSEL_TOKEN: TOKEN } });
    try {
      const remote = await Sandbox.connect('sdk', { vessel: tcp });
      const data = binary(100_000);
      const r = await remote.commands.run(['cat'], { stdin: data });
      assert.equal(sha256(r.stdoutBytes), sha256(data));
      const seen = tcp.events({ instance: 'sdk' });
      await seen.return();
    } finally {
      await tcp.close();
    }
    const wrong = new Vessel({
      baseUrl: `http://127.0.0.1:${port}`,
      token: 'wrong-token-wrong-token',
    });
    await assert.rejects(wrong.health(), (err) => isVesselError(err, 'unauthorized'));
    await wrong.close();
    assert.throws(
      () => new Vessel({ baseUrl: `http://127.0.0.1:${port}`, env: {} }),
      (err) => isVesselError(err, 'invalid_argument') && /token/.test(err.message),
    );
  });

  test('stop, start and delete', { timeout: 240_000 }, async () => {
    assert.equal((await sandbox.kill()).state, 'Stopped');
    assert.equal(await sandbox.isRunning(), false);
    assert.equal((await sandbox.start()).state, 'Running');
    assert.equal((await sandbox.commands.run('echo back')).stdout, 'back\n');
    await sandbox.delete();
    assert.equal(await sandbox.isRunning(), false);
    await assert.rejects(sandbox.getInfo(), (err) => isVesselError(err, 'not_found'));
  });
});
