// The client's node:http transport against real sockets: a unix socket and TCP on port 0.
// Errors map to VesselError as before (the server's code, `internal` otherwise,
// `daemon_unreachable` for connection failures), bodies stream both ways, SSE parses.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { VesselClient } from '../../../src/client/index.js';
import { VesselError } from '../../../src/core/errors.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A server whose handler each test sets; counts connections and requests per socket. */
class Stub {
  handler: Handler = (_req, res) => res.end('{}');
  connections = 0;
  readonly server = http.createServer((req, res) => {
    const s = req.socket as Socket & { requests?: number };
    s.requests = (s.requests ?? 0) + 1;
    this.handler(req, res);
  });
  constructor() {
    this.server.on('connection', () => this.connections++);
  }
  listen(where: string | number): Promise<void> {
    return new Promise((resolve) => this.server.listen(where, resolve));
  }
  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function readAll(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function isVessel(code: string, message?: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof VesselError, `not a VesselError: ${String(err)}`);
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  };
}

describe('client transport over a unix socket', () => {
  let dir: string;
  let socketPath: string;
  const stub = new Stub();
  let client: VesselClient;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-transport-'));
    socketPath = path.join(dir, 'vessel.sock');
    await stub.listen(socketPath);
    client = new VesselClient({ socketPath });
  });
  after(async () => {
    await client.close();
    await stub.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('JSON in and out; kept-alive socket reused', async () => {
    let seen: { method?: string; url?: string; type?: string; length?: string; body?: string } = {};
    stub.handler = (req, res) => {
      void readAll(req).then((b) => {
        seen = {
          method: req.method!,
          url: req.url!,
          type: req.headers['content-type']!,
          length: req.headers['content-length']!,
          body: b.toString(),
        };
        json(res, 201, { name: 'alpine:3.20', status: 'pending' });
      });
    };
    const before = stub.connections;
    const img = await client.pullImage('alpine:3.20');
    assert.equal(img.name, 'alpine:3.20');
    assert.deepEqual(seen, {
      method: 'POST',
      url: '/images',
      type: 'application/json',
      length: String(Buffer.byteLength('{"name":"alpine:3.20"}')),
      body: '{"name":"alpine:3.20"}',
    });
    await client.gcImages(); // a POST without a body goes out with length 0, not chunked
    assert.equal(seen.length, '0');
    assert.equal(stub.connections - before, 1, 'one connection for both requests');
  });

  test('204 resolves with undefined', async () => {
    stub.handler = (_req, res) => {
      res.statusCode = 204;
      res.end();
    };
    assert.equal(await client.deleteImage('x'), undefined);
  });

  test("an error body becomes a VesselError with the server's code and the status", async () => {
    stub.handler = (_req, res) =>
      json(res, 404, { code: 'image_not_found', message: 'image "x" not found' });
    await assert.rejects(client.getImage('x'), (err) => {
      isVessel('image_not_found', /image "x" not found/)(err);
      assert.equal((err as VesselError).details?.status, 404);
      return true;
    });
  });

  test('an unknown code or a body that is not JSON becomes internal', async () => {
    stub.handler = (_req, res) => json(res, 409, { code: 'no_such_code', message: 'odd' });
    await assert.rejects(client.listImages(), isVessel('internal', /odd/));
    stub.handler = (_req, res) => {
      res.statusCode = 502;
      res.end('<html>bad gateway</html>');
    };
    await assert.rejects(client.listImages(), isVessel('internal', /HTTP 502 from GET \/images/));
  });

  test('a kept-alive socket closed by the daemon: a GET is sent again, a POST is not', async () => {
    // The race of a daemon closing an idle socket as the next request goes out.
    stub.handler = (req, res) => {
      if ((req.socket as Socket & { requests?: number }).requests! > 1) req.socket.destroy();
      else json(res, 200, []);
    };
    await client.listImages(); // leaves a free socket in the pool
    assert.deepEqual(await client.listImages(), []);
    await client.listImages();
    await assert.rejects(client.pullImage('a'), isVessel('daemon_unreachable', /ECONNRESET/));
  });

  test('the request body streams, chunked; an early answer stops the upload', async () => {
    stub.handler = (req, res) => {
      void readAll(req).then((b) =>
        json(res, 200, { name: req.url, size: b.length, te: req.headers['transfer-encoding'] }),
      );
    };
    const parts = [Buffer.alloc(70_000, 1), Buffer.alloc(5, 2)];
    const img = (await client.importImage(Readable.from(parts), 'x:1')) as unknown as {
      name: string;
      size: number;
      te: string;
    };
    assert.deepEqual(img, { name: '/images/import?name=x%3A1', size: 70_005, te: 'chunked' });

    stub.handler = (_req, res) =>
      json(res, 400, { code: 'invalid_argument', message: 'not an archive' });
    const endless = new Readable({ read: () => endless.push(Buffer.alloc(16_384)) });
    await assert.rejects(client.importImage(endless), isVessel('invalid_argument'));
    await new Promise<void>((resolve) =>
      endless.destroyed ? resolve() : endless.once('close', resolve),
    );
  });

  test('an error of the upload stream is passed on as it is', async () => {
    stub.handler = (req, res) =>
      void readAll(req).then(
        () => json(res, 200, {}),
        () => {},
      );
    const boom = new Error('disk gone');
    const broken = new Readable({ read: () => broken.destroy(boom) });
    await assert.rejects(client.importImage(broken), (err) => err === boom);
  });

  test('SSE: events across chunk boundaries, then the end of the stream', async () => {
    stub.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(': hi\n\nevent: status\ndata: {"name":"a","sta');
      setImmediate(() => {
        res.write('tus":"pulling"}\n\nevent: progress\ndata: {"digest":"d","current":1}\n\n');
        res.end('event: deleted\ndata: {"name":"a"}\n\n');
      });
    };
    const got = [];
    for await (const e of client.imageEvents('a')) got.push(e);
    assert.deepEqual(got, [
      { type: 'status', image: { name: 'a', status: 'pulling' } },
      { type: 'progress', layer: { digest: 'd', current: 1 } },
      { type: 'deleted', name: 'a' },
    ]);
  });

  test('SSE: an abort ends the stream with the signal reason', async () => {
    stub.handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"seq":1}\n\n'); // and never ends
    };
    const ac = new AbortController();
    const seen: unknown[] = [];
    await assert.rejects(
      (async () => {
        for await (const e of client.events({}, ac.signal)) {
          seen.push(e);
          ac.abort();
        }
      })(),
      (err: Error) => err.name === 'AbortError',
    );
    assert.deepEqual(seen, [{ seq: 1 }]);
  });

  test('silence past the timeout is daemon_unreachable, before and within the body', async () => {
    const quiet = new VesselClient({ socketPath, timeoutMs: 100 });
    try {
      stub.handler = () => {}; // never answers
      await assert.rejects(quiet.listImages(), isVessel('daemon_unreachable', /sent nothing/));
      stub.handler = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('[');
      };
      await assert.rejects(quiet.listImages(), isVessel('daemon_unreachable', /sent nothing/));
    } finally {
      await quiet.close();
    }
  });
});

describe('client transport: connection failures and TCP', () => {
  test('no socket: daemon_unreachable naming the socket and the errno', async () => {
    const socketPath = path.join(os.tmpdir(), `vessel-missing-${process.pid}.sock`);
    const c = new VesselClient({ socketPath });
    await assert.rejects(
      c.health(),
      isVessel('daemon_unreachable', new RegExp(`${socketPath}.*ENOENT`)),
    );
    await c.close();
  });

  test('TCP with a bearer token and a path prefix', async () => {
    const stub = new Stub();
    let auth: string | undefined;
    let url: string | undefined;
    stub.handler = (req, res) => {
      auth = req.headers.authorization;
      url = req.url;
      json(res, 200, { status: 'ok', version: 't', uptime_seconds: 0 });
    };
    await stub.listen(0);
    const { port } = stub.server.address() as AddressInfo;
    const c = new VesselClient({ baseUrl: `http://127.0.0.1:${port}/api/`, token: 'secret' });
    try {
      assert.equal((await c.health()).status, 'ok');
      assert.equal(auth, 'Bearer secret');
      assert.equal(url, '/api/health');
    } finally {
      await c.close();
      await stub.close();
    }
    const refused = new VesselClient({ baseUrl: `http://127.0.0.1:${port}`, token: 'x' });
    await assert.rejects(refused.health(), isVessel('daemon_unreachable', /ECONNREFUSED/));
    await refused.close();
  });

  test('a base URL that is not http(s) is invalid_argument', () => {
    assert.throws(() => new VesselClient({ baseUrl: 'ftp://x' }), isVessel('invalid_argument'));
    assert.throws(() => new VesselClient({}), isVessel('invalid_argument'));
  });
});
