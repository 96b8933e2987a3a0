// The exec WebSocket route on real listeners (no VM): the upgrade goes through the bearer
// hook, bad requests get an error message and a 44xx close, never a hang; the route is in
// the OpenAPI document next to the non-interactive POST.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import WebSocket from 'ws';
import { buildApp, type ApiDeps } from '../../../src/api/app.js';
import { openExecStream } from '../../../src/client/index.js';
import { isVesselError } from '../../../src/core/errors.js';
import { silentLogger } from '../../../src/core/logger.js';
import { makeImageEnv, makeInstanceManager, type ImageEnv } from '../../helpers/image-env.js';

const TOKEN = 'unit-test-token-exec-0123456789';

interface Transcript {
  texts: Record<string, unknown>[];
  close: { code: number; reason: string };
}

/** Open a raw WebSocket, send `messages`, and record what comes back until the close. */
function converse(
  url: string,
  messages: (string | Buffer)[],
  headers: Record<string, string> = {},
): Promise<Transcript> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    const texts: Record<string, unknown>[] = [];
    ws.on('open', () => {
      for (const m of messages) ws.send(m, { binary: Buffer.isBuffer(m) });
    });
    ws.on('message', (data: Buffer, isBinary) => {
      if (!isBinary) texts.push(JSON.parse(data.toString()) as Record<string, unknown>);
    });
    ws.on('close', (code, reason) =>
      resolve({ texts, close: { code, reason: reason.toString() } }),
    );
    ws.on('error', reject);
  });
}

describe('exec WebSocket route', () => {
  let env: ImageEnv;
  let open: FastifyInstance;
  let secured: FastifyInstance;
  let openUrl: string;
  let securedUrl: string;
  let deps: ApiDeps;

  before(async () => {
    env = await makeImageEnv();
    deps = {
      images: env.manager,
      instances: makeInstanceManager(env),
      metrics: env.metrics,
      logger: silentLogger(),
      version: '0.0.0-test',
      dataDir: env.dir,
      probeHost: () => Promise.reject(new Error('not used')),
    };
    open = await buildApp(deps);
    secured = await buildApp(deps, { tokens: [TOKEN] });
    openUrl = (await open.listen({ host: '127.0.0.1', port: 0 })).replace(/^http/, 'ws');
    securedUrl = (await secured.listen({ host: '127.0.0.1', port: 0 })).replace(/^http/, 'ws');
  });
  after(async () => {
    await open?.close();
    await secured?.close();
    await env?.close();
  });

  test('a plain GET (no upgrade) is a 400 that points to WebSocket and POST', async () => {
    const res = await open.inject({ method: 'GET', url: '/instances/x/exec' });
    assert.equal(res.statusCode, 400);
    const body = res.json<{ code: string; message: string }>();
    assert.equal(body.code, 'invalid_argument');
    assert.match(body.message, /WebSocket endpoint/);
    assert.match(body.message, /POST/);
  });

  test('the upgrade goes through the bearer hook: no token or a wrong one is refused', async () => {
    const base = securedUrl.replace(/^ws/, 'http');
    await assert.rejects(openExecStream({ baseUrl: base }, 'x', { argv: ['true'] }), (err) => {
      assert.ok(isVesselError(err, 'unauthorized'), String(err));
      assert.match(err.message, /missing bearer token/);
      assert.equal(err.details?.status, 401);
      return true;
    });
    await assert.rejects(
      openExecStream({ baseUrl: base, token: 'wrong-wrong-wrong-wrong' }, 'x', { argv: ['true'] }),
      (err) => isVesselError(err, 'unauthorized') && /not valid/.test(err.message),
    );
    // With the token the upgrade succeeds and the request reaches the instance lookup.
    const stream = await openExecStream({ baseUrl: base, token: TOKEN }, 'nope', {
      argv: ['true'],
    });
    await assert.rejects(stream.result, (err) => isVesselError(err, 'not_found'));
  });

  test('a refused upgrade does not leave its socket open (regression: close() hung)', async () => {
    const app = await buildApp(deps, { tokens: [TOKEN] });
    const base = await app.listen({ host: '127.0.0.1', port: 0 });
    await assert.rejects(openExecStream({ baseUrl: base }, 'x', { argv: ['true'] }), (err) =>
      isVesselError(err, 'unauthorized'),
    );
    const connections = (): Promise<number> =>
      new Promise((resolve, reject) =>
        app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
      );
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      app.close().then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 5000))),
    ]);
    clearTimeout(timer);
    assert.equal(closed, true, `close() finished (open connections: ${await connections()})`);
  });

  test('an unknown instance: an error message with not_found, then close 4404', async () => {
    const t = await converse(`${openUrl}/instances/nope/exec`, [
      JSON.stringify({ type: 'exec', argv: ['true'] }),
    ]);
    assert.equal(t.texts.length, 1);
    assert.equal(t.texts[0]?.type, 'error');
    assert.equal(t.texts[0]?.code, 'not_found');
    assert.match(String(t.texts[0]?.message), /nope/);
    assert.deepEqual(t.close, { code: 4404, reason: 'not_found' });
  });

  test('bad requests: an invalid_argument message naming the problem, then close 4400', async () => {
    const url = `${openUrl}/instances/nope/exec`;
    const cases: [(string | Buffer)[], RegExp][] = [
      [[Buffer.from([0, 1, 2])], /first message must be the exec request/],
      [['not json'], /not valid JSON/],
      [['{"type":"resize","rows":1,"cols":1}'], /first message must be the exec request/],
      [['{"type":"exec","argv":[]}'], /request\/argv must NOT have fewer than 1 items/],
      [['{"type":"exec","argv":["sh"],"rows":0}'], /request\/rows must be >= 1/],
      [['{"type":"exec","argv":["sh"],"bogus":1}'], /additional properties/],
    ];
    for (const [messages, why] of cases) {
      const t = await converse(url, messages);
      assert.equal(t.texts[0]?.type, 'error', JSON.stringify(messages));
      assert.equal(t.texts[0]?.code, 'invalid_argument');
      assert.match(String(t.texts[0]?.message), why);
      assert.equal(t.close.code, 4400);
    }
  });

  test('OpenAPI documents the WebSocket GET next to the POST', async () => {
    const doc = (await open.inject({ method: 'GET', url: '/openapi.json' })).json<{
      paths: Record<string, Record<string, { description?: string; operationId?: string }>>;
    }>();
    const ops = doc.paths['/instances/{id}/exec'];
    assert.equal(ops?.post?.operationId, 'execInstance');
    assert.equal(ops?.get?.operationId, 'execInstanceStream');
    assert.match(ops?.get?.description ?? '', /first message is text, the exec request/);
    assert.match(ops?.get?.description ?? '', /close 4000 \+ its HTTP status/);
  });
});
