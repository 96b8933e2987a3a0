// The ingress over real sockets: two HTTP servers on 127.0.0.1 stand in for two instances
// (resolveBackend injected), routes persisted in a real SQLite store, listeners on free ports.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { VesselError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { IngressManager, type Backend } from '../../src/ingress/index.js';
import { IngressesRepo, openDatabase, type Db } from '../../src/store/index.js';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

interface Reply {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

function request(
  port: number,
  host: string,
  reqPath = '/',
  options: { method?: string; body?: Buffer } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: reqPath,
        method: options.method ?? 'GET',
        headers: { host },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: Buffer.concat(chunks).toString(),
            headers: res.headers,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A backend that says who it is and echoes what it got; /sha256 hashes the request body. */
function backendServer(name: string, release: Promise<void>): http.Server {
  return http.createServer((req, res) => {
    if (req.url === '/sha256') {
      const h = createHash('sha256');
      let n = 0;
      req.on('data', (c: Buffer) => {
        h.update(c);
        n += c.length;
      });
      req.on('end', () => res.end(JSON.stringify({ sha256: h.digest('hex'), bytes: n })));
      return;
    }
    if (req.url?.startsWith('/big/')) {
      // Deterministic bytes, in 1 MiB writes honouring backpressure.
      let left = Number(req.url.slice(5));
      const chunk = Buffer.alloc(1024 * 1024, 7);
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const pump = (): void => {
        while (left > 0) {
          const c = chunk.subarray(0, Math.min(left, chunk.length));
          left -= c.length;
          if (!res.write(c)) return void res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    if (req.url === '/slow') {
      res.writeHead(200);
      res.write('first;');
      void release.then(() => res.end('last'));
      return;
    }
    res.setHeader('x-backend', name);
    res.end(
      JSON.stringify({
        backend: name,
        url: req.url,
        host: req.headers.host,
        xff: req.headers['x-forwarded-for'],
        xfh: req.headers['x-forwarded-host'],
      }),
    );
  });
}

describe('ingress proxy', () => {
  let dir: string;
  let db: Db;
  let manager: IngressManager;
  let port: number;
  let releaseSlow: () => void;
  const servers: http.Server[] = [];
  const backends = new Map<string, Backend>();
  const known = new Set(['alpha', 'beta', 'down', 'userless']);

  const options = (repoDb: Db) => ({
    repo: new IngressesRepo(repoDb),
    listenHost: '127.0.0.1',
    logger: silentLogger(),
    assertInstance: (id: string) => {
      if (!known.has(id)) throw new VesselError('not_found', `instance "${id}" not found`);
    },
    resolveBackend: (id: string, guestPort: number) => {
      if (!known.has(id)) throw new VesselError('not_found', `instance "${id}" not found`);
      const b = backends.get(id);
      return b && { host: b.host, port: guestPort === 80 ? b.port : guestPort };
    },
  });

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-ingress-'));
    db = openDatabase(path.join(dir, 'vessel.db'));
    const slow = new Promise<void>((r) => (releaseSlow = r));
    for (const name of ['alpha', 'beta']) {
      const s = backendServer(name, slow);
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      servers.push(s);
      backends.set(name, { host: '127.0.0.1', port: (s.address() as net.AddressInfo).port });
    }
    // An instance whose backend refuses connections.
    backends.set('down', { host: '127.0.0.1', port: await freePort() });
    manager = new IngressManager(options(db));
    await manager.init();
    port = await freePort();
  });

  after(async () => {
    releaseSlow?.();
    await manager?.close();
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    db?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('two hostnames route to two backends; Host is kept, X-Forwarded-* are added', async () => {
    await manager.create({
      name: 'a',
      instance: 'alpha',
      hostname: 'alpha.test',
      guest_port: 80,
      host_port: port,
    });
    await manager.create({
      name: 'b',
      instance: 'beta',
      hostname: 'Beta.Test',
      guest_port: 80,
      host_port: port,
    });
    const a = await request(port, 'alpha.test', '/x?y=1');
    assert.equal(a.status, 200);
    const ja = JSON.parse(a.body) as Record<string, string>;
    assert.deepEqual(
      [ja.backend, ja.url, ja.host, ja.xff, ja.xfh],
      ['alpha', '/x?y=1', 'alpha.test', '127.0.0.1', 'alpha.test'],
    );
    const b = await request(port, 'BETA.test:' + port);
    assert.equal(JSON.parse(b.body).backend, 'beta');
    assert.equal(b.headers['x-backend'], 'beta');
  });

  test('a {instance} pattern takes the instance from the label; exact routes still win', async () => {
    await manager.create({
      name: 'apps',
      hostname: '{instance}.apps.test',
      guest_port: 80,
      host_port: port,
    });
    await manager.create({
      name: 'pinned',
      instance: 'alpha',
      hostname: 'beta.apps.test',
      guest_port: 80,
      host_port: port,
    });
    assert.equal(JSON.parse((await request(port, 'alpha.apps.test')).body).backend, 'alpha');
    assert.equal(
      JSON.parse((await request(port, 'beta.apps.test')).body).backend,
      'alpha',
      'exact wins',
    );
    await manager.delete('pinned');
    assert.equal(JSON.parse((await request(port, 'beta.apps.test')).body).backend, 'beta');
  });

  test('unknown host 404; unknown instance, unreachable port and refusing backend 502, each said clearly', async () => {
    const nf = await request(port, 'nobody.test');
    assert.equal(nf.status, 404);
    assert.match(nf.body, new RegExp(`no ingress routes host "nobody.test" on port ${port}`));
    const ghost = await request(port, 'ghost.apps.test');
    assert.equal(ghost.status, 502);
    assert.match(ghost.body, /ingress "apps": instance "ghost" not found/);
    const none = await request(port, 'userless.apps.test');
    assert.equal(none.status, 502);
    assert.match(none.body, /instance "userless" is not reachable on guest port 80/);
    const down = await request(port, 'down.apps.test');
    assert.equal(down.status, 502);
    assert.match(down.body, /backend 127\.0\.0\.1:\d+ of instance "down" failed: ECONNREFUSED/);
  });

  test('bodies stream both ways: 64 MiB up and down, and a response arrives before the backend ends it', async () => {
    const up = randomBytes(64 * 1024 * 1024);
    const r = await request(port, 'alpha.test', '/sha256', { method: 'POST', body: up });
    assert.deepEqual(JSON.parse(r.body), {
      sha256: createHash('sha256').update(up).digest('hex'),
      bytes: up.length,
    });
    const size = 64 * 1024 * 1024 + 3;
    const down = await new Promise<{ n: number; hash: string }>((resolve, reject) => {
      http
        .get(
          {
            host: '127.0.0.1',
            port,
            path: `/big/${size}`,
            headers: { host: 'alpha.test' },
            agent: false,
          },
          (res) => {
            const h = createHash('sha256');
            let n = 0;
            res.on('data', (c: Buffer) => {
              h.update(c);
              n += c.length;
            });
            res.on('end', () => resolve({ n, hash: h.digest('hex') }));
          },
        )
        .on('error', reject);
    });
    assert.equal(down.n, size);
    const expect = createHash('sha256');
    for (let left = size; left > 0; left -= 1024 * 1024)
      expect.update(Buffer.alloc(Math.min(left, 1024 * 1024), 7));
    assert.equal(down.hash, expect.digest('hex'));
    const first = await new Promise<string>((resolve, reject) => {
      http
        .get(
          { host: '127.0.0.1', port, path: '/slow', headers: { host: 'alpha.test' }, agent: false },
          (res) => {
            res.once('data', (c: Buffer) => {
              resolve(c.toString());
              releaseSlow();
              res.resume();
            });
          },
        )
        .on('error', reject);
    });
    assert.equal(first, 'first;');
  });

  test('WebSocket upgrades are passed through', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    wss.on('connection', (ws, req) =>
      ws.on('message', (m: Buffer) => ws.send(`echo:${m.toString()}:${req.headers.host}`)),
    );
    known.add('wsapp');
    backends.set('wsapp', { host: '127.0.0.1', port: (wss.address() as net.AddressInfo).port });
    try {
      await manager.create({
        name: 'ws',
        instance: 'wsapp',
        hostname: 'ws.test',
        guest_port: 80,
        host_port: port,
      });
      const ws = new WebSocket(`ws://127.0.0.1:${port}/chat`, { headers: { host: 'ws.test' } });
      const got = await new Promise<string>((resolve, reject) => {
        ws.on('open', () => ws.send('hi'));
        ws.on('message', (m: Buffer) => resolve(m.toString()));
        ws.on('error', reject);
      });
      ws.close();
      assert.equal(got, 'echo:hi:ws.test');
      const refused = new WebSocket(`ws://127.0.0.1:${port}/`, {
        headers: { host: 'nobody.test' },
      });
      const status = await new Promise<number>((resolve) => {
        refused.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        refused.on('error', () => resolve(-1));
      });
      assert.equal(status, 404);
    } finally {
      await manager.delete('ws');
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    }
  });

  test('bad routes are refused with clear errors and nothing is stored', async () => {
    const code = (c: string) => (err: unknown) => err instanceof VesselError && err.code === c;
    const before = manager.list().length;
    await assert.rejects(
      manager.create({
        name: 'x',
        instance: 'alpha',
        hostname: 'a..b',
        guest_port: 80,
        host_port: port,
      }),
      code('invalid_argument'),
    );
    await assert.rejects(
      manager.create({
        name: 'x',
        instance: 'alpha',
        hostname: '{instance}.p.test',
        guest_port: 80,
        host_port: port,
      }),
      /instance must be \{instance\}/,
    );
    await assert.rejects(
      manager.create({ name: 'x', hostname: 'p.test', guest_port: 80, host_port: port }),
      /needs an instance/,
    );
    await assert.rejects(
      manager.create({
        name: 'x',
        instance: 'nope',
        hostname: 'p.test',
        guest_port: 80,
        host_port: port,
      }),
      code('not_found'),
    );
    await assert.rejects(
      manager.create({
        name: 'a',
        instance: 'alpha',
        hostname: 'p.test',
        guest_port: 80,
        host_port: port,
      }),
      code('already_exists'),
    );
    await assert.rejects(
      manager.create({
        name: 'x',
        instance: 'beta',
        hostname: 'ALPHA.test',
        guest_port: 80,
        host_port: port,
      }),
      /hostname "alpha.test" on port \d+ is already routed by ingress "a"/,
    );
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const takenPort = (taken.address() as net.AddressInfo).port;
    try {
      await assert.rejects(
        manager.create({
          name: 'x',
          instance: 'alpha',
          hostname: 'p.test',
          guest_port: 80,
          host_port: takenPort,
        }),
        code('port_in_use'),
      );
    } finally {
      await new Promise((r) => taken.close(r));
    }
    assert.equal(manager.list().length, before);
  });

  test('routes survive a restart; the last route of a port closes its listener', async () => {
    await manager.close();
    manager = new IngressManager(options(db));
    await manager.init();
    assert.equal(JSON.parse((await request(port, 'alpha.test')).body).backend, 'alpha');
    assert.equal(manager.get('b').hostname, 'beta.test');
    for (const i of manager.list()) await manager.delete(i.id);
    await assert.rejects(
      request(port, 'alpha.test'),
      (err: Error & { code?: string }) => err.code === 'ECONNREFUSED',
    );
    await assert.rejects(
      Promise.resolve().then(() => manager.get('a')),
      (err: unknown) => err instanceof VesselError && err.code === 'not_found',
    );
  });
});
