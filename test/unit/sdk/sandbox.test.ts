// The SDK facade's own logic against a scripted daemon on a real unix socket: what
// Sandbox.create sends, how it fails fast when the instance stops instead of booting (and
// deletes it), the timeout, and where a Vessel connects by default.
import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Sandbox, Vessel, isVesselError } from '../../../packages/sdk/src/index.js';
import { commandArgv } from '../../../packages/sdk/src/commands.js';

type Scenario = 'boots' | 'stops' | 'slow';

interface Seen {
  method: string;
  url: string;
  body: unknown;
}

const instance = (name: string, state: string) => ({
  id: 'i1',
  name,
  image: 'busybox',
  state,
  network: { mode: 'none' },
});

describe('Sandbox and Vessel against a scripted daemon', () => {
  let dir: string;
  let socket: string;
  let server: http.Server;
  let scenario: Scenario = 'boots';
  let seen: Seen[] = [];
  /** Requests held open (wait, events) until the instance is deleted. */
  let held: http.ServerResponse[] = [];

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-sdk-unit-'));
    socket = path.join(dir, 'vessel.sock');
    server = http.createServer((req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        const text = Buffer.concat(parts).toString();
        const url = new URL(req.url ?? '/', 'http://x');
        seen.push({
          method: req.method ?? '',
          url: url.pathname + url.search,
          body: text ? JSON.parse(text) : undefined,
        });
        const json = (status: number, body: unknown): void => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        };
        const route = `${req.method} ${url.pathname}`;
        if (route === 'GET /health')
          return json(200, { status: 'ok', version: 't', uptime_seconds: 1 });
        if (route === 'POST /instances')
          return json(201, instance((JSON.parse(text) as { name: string }).name, 'Initializing'));
        if (route === 'GET /instances/i1') return json(200, instance('box', 'Running'));
        if (route === 'DELETE /instances/i1') {
          for (const r of held.splice(0))
            if (r.req.url?.includes('/wait'))
              r.writeHead(404).end(JSON.stringify({ code: 'not_found', message: 'deleted' }));
            else r.end();
          res.writeHead(204).end();
          return;
        }
        if (route === 'GET /instances/i1/wait') {
          if (scenario === 'boots') return json(200, { state: 'Running', timed_out: false });
          if (scenario === 'slow') return json(200, { state: 'Initializing', timed_out: true });
          held.push(res); // 'stops': the wait would last until its timeout
          return;
        }
        if (route === 'GET /events') {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write(': open\n\n');
          held.push(res);
          if (scenario === 'stops') {
            const e = {
              seq: 7,
              type: 'state',
              instance_id: 'i1',
              instance_name: 'box',
              old_state: 'Initializing',
              new_state: 'Stopped',
              time: new Date().toISOString(),
              state_error: 'the guest program failed: exec /sbin/nope: not found',
            };
            setTimeout(() => res.write(`event: state\ndata: ${JSON.stringify(e)}\n\n`), 50);
          }
          return;
        }
        json(404, { code: 'not_found', message: `no route ${route}` });
      });
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
  });

  beforeEach(() => {
    seen = [];
    held = [];
    scenario = 'boots';
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('create maps the options to the API request, keeping the sandbox alive by default', async () => {
    const vessel = new Vessel({ socketPath: socket });
    try {
      const sb = await Sandbox.create({
        vessel,
        image: 'busybox',
        name: 'box',
        env: { A: '1', B: 'x=y' },
        memoryMib: 256,
        diskBytes: 1 << 30,
        ports: [{ hostPort: 8080, guestPort: 80 }],
        network: { mode: 'none' },
      });
      assert.equal(sb.state, 'Running');
      const body = seen.find((s) => s.method === 'POST')?.body as Record<string, unknown>;
      assert.deepEqual(body.entrypoint, ['/bin/sh', '-c']);
      assert.match((body.cmd as string[])[0]!, /while :; do sleep/);
      assert.deepEqual(
        { ...body, entrypoint: undefined, cmd: undefined },
        {
          image: 'busybox',
          name: 'box',
          env: ['A=1', 'B=x=y'],
          memory_mib: 256,
          disk_bytes: 1 << 30,
          ports: [{ host_port: 8080, guest_port: 80 }],
          network: { mode: 'none' },
          entrypoint: undefined,
          cmd: undefined,
        },
      );
      assert.ok(seen.some((s) => s.url === '/instances/i1/wait?state=Running&timeout=300'));

      seen = [];
      await Sandbox.create({ vessel, image: 'busybox', name: 'svc', cmd: ['nginx'] });
      const own = seen.find((s) => s.method === 'POST')?.body as Record<string, unknown>;
      assert.deepEqual([own.entrypoint, own.cmd], [undefined, ['nginx']]);
      await assert.rejects(
        Sandbox.create({ vessel, image: 'busybox', keepAlive: true, cmd: ['x'] }),
        (err) => isVesselError(err, 'invalid_argument'),
      );
    } finally {
      await vessel.close();
    }
  });

  test('an instance that stops instead of booting rejects create at once and is deleted', async () => {
    scenario = 'stops';
    const t0 = Date.now();
    await assert.rejects(
      Sandbox.create({ socketPath: socket, image: 'busybox', name: 'box', timeoutMs: 60_000 }),
      (err) => {
        assert.ok(isVesselError(err, 'conflict'), String(err));
        assert.match(err.message, /"box" is Stopped instead of Running: the guest program failed/);
        return true;
      },
    );
    assert.ok(Date.now() - t0 < 10_000);
    assert.ok(seen.some((s) => s.method === 'DELETE' && s.url === '/instances/i1'));
  });

  test('an instance not Running within timeoutMs is a timeout error, and is deleted', async () => {
    scenario = 'slow';
    await assert.rejects(
      Sandbox.create({ socketPath: socket, image: 'busybox', name: 'box', timeoutMs: 2000 }),
      (err) => isVesselError(err, 'timeout') && /Initializing, not Running/.test(err.message),
    );
    assert.ok(seen.some((s) => s.url === '/instances/i1/wait?state=Running&timeout=2'));
    assert.ok(seen.some((s) => s.method === 'DELETE'));
  });

  test('connection defaults: options, then VESSEL_HOST + VESSEL_TOKEN, then VESSEL_DATA_DIR', async () => {
    const byEnv = new Vessel({ env: { VESSEL_DATA_DIR: dir } });
    assert.equal((await byEnv.health()).status, 'ok');
    await byEnv.close();
    // An explicit socket wins over VESSEL_HOST.
    const explicit = new Vessel({ dataDir: dir, env: { VESSEL_HOST: '127.0.0.1:9' } });
    assert.equal((await explicit.health()).status, 'ok');
    await explicit.close();
    assert.throws(
      () => new Vessel({ env: { VESSEL_HOST: '127.0.0.1:9' } }),
      (err) => isVesselError(err, 'invalid_argument') && /VESSEL_TOKEN/.test(err.message),
    );
    const missing = new Vessel({ socketPath: path.join(dir, 'none.sock') });
    await assert.rejects(missing.health(), (err) => isVesselError(err, 'daemon_unreachable'));
    await missing.close();
  });

  test('events: breaking out of the loop or aborting ends the iteration', async () => {
    const vessel = new Vessel({ socketPath: socket });
    scenario = 'stops';
    for await (const e of vessel.events({ instance: 'i1', types: ['state'] })) {
      assert.equal(e.new_state, 'Stopped');
      break;
    }
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    scenario = 'boots';
    const got: unknown[] = [];
    for await (const e of vessel.events({ signal: ac.signal })) got.push(e);
    assert.deepEqual(got, []);
    await vessel.close();
  });

  test('commands: a string runs under /bin/sh -c, an argv as is', () => {
    assert.deepEqual(commandArgv('echo $HOME'), ['/bin/sh', '-c', 'echo $HOME']);
    assert.deepEqual(commandArgv(['ls', '-l']), ['ls', '-l']);
    assert.throws(
      () => commandArgv([]),
      (err) => isVesselError(err, 'invalid_argument'),
    );
  });
});
