// Interactive exec over the WebSocket, end to end: one real microVM behind a real daemon
// (unix socket and TCP + token), the typed client, and the `vessel exec -i/-t` CLI (under
// `script` for a real pty). Backpressure: exec-stream-backpressure.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { VesselClient, openExecStream, type ExecStream } from '../../src/client/index.js';
import { defaultConfig } from '../../src/core/config.js';
import { isVesselError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { Daemon } from '../../src/daemon/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';

const TOKEN = 'exec-stream-test-token-0123456789';
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/vessel.js');

const why = await vmSkipReason(['/usr/bin/script']);

/** Resolves with everything `s` wrote once `pattern` matches it. */
function waitOutput(s: Readable, pattern: RegExp, timeoutMs = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => {
      s.off('data', onData);
      reject(new Error(`output did not match ${pattern} in time; got ${JSON.stringify(text)}`));
    }, timeoutMs);
    const onData = (d: Buffer): void => {
      text += d.toString();
      if (!pattern.test(text)) return;
      clearTimeout(timer);
      s.off('data', onData);
      resolve(text);
    };
    s.on('data', onData);
  });
}

async function collect(s: Readable): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts).toString();
}

async function run(stream: ExecStream): Promise<{ out: string; err: string; code: number | null }> {
  const [out, err, status] = await Promise.all([
    collect(stream.stdout),
    collect(stream.stderr),
    stream.result,
  ]);
  return { out, err, code: status.code };
}

describe('exec stream: a real microVM through the daemon', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let daemon: Daemon;
  let client: VesselClient;
  const archive = path.join(os.tmpdir(), `vessel-exec-ws-${process.pid}.tar`);
  const exec = (argv: string[], extra: Partial<Parameters<VesselClient['execStream']>[1]> = {}) =>
    client.execStream('shell', { argv, ...extra });

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-exec-ws-'));
    daemon = new Daemon({
      config: {
        ...defaultConfig(dir),
        api: { tokens: [TOKEN], tcp: { host: '127.0.0.1', port: 0 } },
      },
      logger: silentLogger(),
    });
    await daemon.start();
    client = new VesselClient({ socketPath: daemon.paths.socket });
    await writeDockerArchive(archive, await busyboxImage(), 'execws/busybox:1');
    const img = await client.importImage(createReadStream(archive));
    for await (const e of client.imageEvents(img.name))
      if (e.type === 'status' && e.image.status === 'failed') assert.fail(e.image.error ?? '');
    const inst = await client.createInstance({
      image: img.name,
      name: 'shell',
      cmd: ['/bin/sh', '-c', 'while true; do sleep 1; done'],
      network: { enabled: false },
    });
    await client.waitInstance(inst.id, 'Running', 120);
    assert.equal((await client.getInstance('shell')).state, 'Running');
  });

  after(async () => {
    await client?.deleteInstance('shell').catch(() => undefined);
    await client?.close();
    await daemon?.stop();
    await fs.rm(dir, { recursive: true, force: true });
    await fs.rm(archive, { force: true });
  });

  test('tty: stty size is the requested size, and resize changes it', async () => {
    const s = await exec(['sh', '-c', 'stty size; read x; stty size'], {
      tty: true,
      rows: 30,
      cols: 100,
      stdin: true,
    });
    // Two listeners on the same output: one for the whole transcript, one to know when to resize.
    const all = waitOutput(s.stdout, /50 132\r\n/);
    await waitOutput(s.stdout, /30 100\r\n/);
    s.resize(50, 132);
    s.stdin.write('\n');
    assert.match(await all, /^30 100\r\n[\s\S]*50 132\r\n$/);
    assert.equal((await s.result).code, 0);
  });

  test('stdin streams to cat in chunks; EOF ends it with exit code 0', async () => {
    const s = await exec(['cat'], { stdin: true });
    const big = '0123456789abcdef'.repeat(12 * 1024); // 192 KiB: several messages
    s.stdin.write('hello ');
    s.stdin.write('world\n');
    s.stdin.end(big);
    const r = await run(s);
    assert.equal(r.out, `hello world\n${big}`);
    assert.equal(r.code, 0);
  });

  test('exit codes, signals, and stderr apart from stdout without a tty', async () => {
    assert.equal((await run(await exec(['sh', '-c', 'exit 7']))).code, 7);
    const r = await run(await exec(['sh', '-c', 'echo out; echo err >&2']));
    assert.deepEqual([r.out, r.err], ['out\n', 'err\n']);
    const sleeper = await exec(['sh', '-c', 'echo ready; exec sleep 600']);
    await waitOutput(sleeper.stdout, /ready/);
    sleeper.signal(15);
    // The guest reports a signal death as the signal and the shell's code (128 + n).
    assert.equal((await sleeper.result).signal, 15);
  });

  test('a missing program is a not_found error naming it', async () => {
    const s = await exec(['/no/such/program']);
    await assert.rejects(s.result, (err) => {
      assert.ok(isVesselError(err, 'not_found'), String(err));
      assert.match(err.message, /\/no\/such\/program/);
      return true;
    });
  });

  test('closing the socket mid-command kills the guest process', async () => {
    const s = await exec(['sh', '-c', 'echo $$; exec sleep 4242']);
    const pid = Number(/(\d+)/.exec(await waitOutput(s.stdout, /\d+\n/))?.[1]);
    assert.ok(pid > 1);
    const alive = `[ -d /proc/${pid} ] && ! grep -q '^State:.*Z' /proc/${pid}/status`;
    assert.equal((await run(await exec(['sh', '-c', alive]))).code, 0, 'running before');
    s.close();
    await assert.rejects(s.result, (err) => isVesselError(err, 'daemon_unreachable'));
    // The kill travels daemon → guest; give it up to 10 s (a zombie counts as gone).
    const gone = `i=0; while [ $i -lt 100 ]; do ${alive} || exit 0; sleep 0.1; i=$((i+1)); done; exit 1`;
    assert.equal((await run(await exec(['sh', '-c', gone]))).code, 0, 'gone after close');
  });

  test('an unknown instance is not_found; TCP needs the token', async () => {
    const missing = await client.execStream('no-such-instance', { argv: ['true'] });
    await assert.rejects(missing.result, (err) => isVesselError(err, 'not_found'));
    const tcp = daemon.tcpAddress();
    assert.ok(tcp);
    const baseUrl = `http://127.0.0.1:${tcp.port}`;
    await assert.rejects(openExecStream({ baseUrl }, 'shell', { argv: ['true'] }), (err) =>
      isVesselError(err, 'unauthorized'),
    );
    const r = await run(
      await openExecStream({ baseUrl, token: TOKEN }, 'shell', { argv: ['echo', 'over tcp'] }),
    );
    assert.deepEqual([r.out, r.code], ['over tcp\n', 0]);
  });

  test('the CLI: vessel exec -i streams piped stdin and exits with the command’s code', async () => {
    const cli = (args: string[], input: string) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = spawn(process.execPath, [BIN, ...args], {
          env: { ...process.env, VESSEL_DATA_DIR: dir },
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', (code) => resolve({ code, out, err }));
        child.stdin.end(input);
      });
    const cat = await cli(['exec', '-i', 'shell', 'cat'], 'line one\nline two\n');
    assert.equal(cat.code, 0, cat.err);
    assert.equal(cat.out, 'line one\nline two\n');
    const seven = await cli(['exec', '-i', 'shell', 'sh', '-c', 'wc -l; exit 5'], 'a\nb\nc\n');
    assert.equal(seven.code, 5, seven.err);
    assert.match(seven.out, /^\s*3\n$/);
    const none = await cli(['exec', '-i', 'no-such-instance', 'true'], '');
    assert.equal(none.code, 4, 'not found → exit code 4');
    assert.match(none.err, /no-such-instance/);
  });

  test('exec -i of 64 MiB exits when the command does, not after the 30 s close timeout', async () => {
    // Stdin backpressure pauses the daemon's socket; it used to be closed still paused when
    // the command ended, and the client then waited 30 s for the close (seen 1 run in 3).
    const child = spawn(
      process.execPath,
      [BIN, 'exec', '-i', 'shell', 'sh', '-c', 'cat >/dev/null; echo left'],
      { env: { ...process.env, VESSEL_DATA_DIR: dir } },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin.on('error', () => undefined); // the daemon may stop reading: EPIPE is expected
    child.stdin.end(Buffer.alloc(64 << 20));
    const t0 = Date.now();
    const [code] = (await once(child, 'close')) as [number | null];
    const took = Date.now() - t0;
    assert.equal(code, 0);
    assert.equal(out, 'left\n');
    assert.ok(took < 15_000, `exec -i took ${took} ms to exit`);
  });

  test('the CLI forwards SIGINT to the command (first signal), which decides the exit code', async () => {
    const child = spawn(
      process.execPath,
      [
        BIN,
        'exec',
        '-i',
        'shell',
        'sh',
        '-c',
        'trap "echo got INT; exit 9" INT; echo ready; while :; do sleep 1; done',
      ],
      { env: { ...process.env, VESSEL_DATA_DIR: dir } },
    );
    // A loop, not `cat`: a signal that lands while sh forks a child can miss the child, but the
    // shell's own trap still runs once that child (a 1 s sleep) ends.
    const closed = once(child, 'close') as Promise<[number | null]>;
    const out = waitOutput(child.stdout, /got INT/);
    await waitOutput(child.stdout, /ready/);
    child.kill('SIGINT');
    assert.match(await out, /got INT/);
    child.stdin.end();
    const [code] = await closed;
    assert.equal(code, 9);
  });

  test('the CLI under a real pty (script): -it sizes the tty, raw mode passes keys, the terminal is restored', async () => {
    const guestCmd = `sh -c 'stty size; read line; echo "got:$line"; exit 3'`;
    const inner = `stty rows 33 cols 111; ${process.execPath} ${BIN} exec -it shell ${guestCmd}; echo "rc=$?"; stty -a`;
    const child = spawn('script', ['-qec', inner, '/dev/null'], {
      env: { ...process.env, VESSEL_DATA_DIR: dir, SHELL: '/bin/sh' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const closed = once(child, 'close');
    try {
      await waitOutput(child.stdout, /33 111/);
      child.stdin.write('abc\r');
      await waitOutput(child.stdout, /rc=\d+[\s\S]*\n.*icanon/);
    } finally {
      child.stdin.end();
      child.kill();
      await closed;
    }
    assert.match(out, /33 111/);
    assert.match(out, /got:abc/);
    assert.match(out, /rc=3/);
    const settings = out.slice(out.indexOf('rc=3'));
    assert.match(settings, /(^|\s)icanon(\s|$)/m, 'canonical mode restored');
    assert.match(settings, /(^|\s)echo(\s|$)/m, 'echo restored');
  });

  test('a stopped instance: a conflict error, then close 4409', async () => {
    await client.stopInstance('shell', 5);
    const ws = new WebSocket('ws://vessel/instances/shell/exec', {
      createConnection: () => net.connect(daemon.paths.socket),
    });
    const texts: Record<string, unknown>[] = [];
    ws.on('open', () => ws.send(JSON.stringify({ type: 'exec', argv: ['true'] })));
    ws.on('message', (d: Buffer) =>
      texts.push(JSON.parse(d.toString()) as Record<string, unknown>),
    );
    const [code] = (await once(ws, 'close')) as [number];
    assert.equal(code, 4409);
    assert.equal(texts[0]?.code, 'conflict');
    assert.match(String(texts[0]?.message), /"shell" is Stopped; exec needs it Running/);
  });
});
