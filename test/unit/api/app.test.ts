// The HTTP API through app.inject(): a real ImageManager on a temp dir with a
// real SQLite store; only the host probe is a fixed report.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApp, type ApiDeps } from '../../../src/api/app.js';
import { silentLogger } from '../../../src/core/logger.js';
import type { HostReport } from '../../../src/host/index.js';
import { makeImageEnv, makeInstanceManager, type ImageEnv } from '../../helpers/image-env.js';

const TOKEN = 'unit-test-token-0123456789';
const VERSION = '9.9.9-test';

const REPORT: HostReport = {
  resources: {
    cpus: 4,
    memory_bytes: 8 * 1024 ** 3,
    memory_free_bytes: 4 * 1024 ** 3,
    disk: { path: '/data', total_bytes: 100e9, free_bytes: 50e9 },
    arch: 'x86_64',
    kernel: '6.1.0-test',
  },
  accelerators: {
    kvm: { usable: false, reason: 'no /dev/kvm', device_present: false },
    tcg: true,
  },
  hypervisors: [{ name: 'qemu', path: '/usr/bin/qemu-system-x86_64', version: '8.2.0' }],
  checks: [{ id: 'kvm', title: 'KVM', status: 'warn', detail: 'absent', fix: 'enable KVM' }],
};

function errorOf(res: LightMyRequestResponse): { code: string; message: string } {
  assert.match(String(res.headers['content-type']), /application\/json/);
  return res.json();
}

describe('API routes', () => {
  let env: ImageEnv;
  let app: FastifyInstance;
  let secured: FastifyInstance;
  const probeCalls: { dataDir: string; refreshKvm?: boolean }[] = [];

  before(async () => {
    env = await makeImageEnv();
    const deps: ApiDeps = {
      images: env.manager,
      instances: makeInstanceManager(env),
      metrics: env.metrics,
      logger: silentLogger(),
      version: VERSION,
      dataDir: env.dir,
      probeHost: (options) => {
        probeCalls.push(options);
        return Promise.resolve(REPORT);
      },
    };
    app = await buildApp(deps);
    secured = await buildApp(deps, { tokens: [TOKEN] });
  });
  after(async () => {
    await app?.close();
    await secured?.close();
    await env?.close();
  });

  const postImage = (payload: string, contentType = 'application/json') =>
    app.inject({
      method: 'POST',
      url: '/images',
      payload,
      headers: { 'content-type': contentType },
    });

  test('GET /health', async () => {
    const res = await app.inject({ method: 'GET', url: '/health' });
    assert.equal(res.statusCode, 200);
    const body = res.json<{ status: string; version: string; uptime_seconds: number }>();
    assert.equal(body.status, 'ok');
    assert.equal(body.version, VERSION);
    assert.equal(typeof body.uptime_seconds, 'number');
    assert.ok(body.uptime_seconds >= 0);
  });

  test('GET /resources passes the probe through and adds the image summary', async () => {
    probeCalls.length = 0;
    const res = await app.inject({ method: 'GET', url: '/resources' });
    assert.equal(res.statusCode, 200);
    const body = res.json<Record<string, unknown>>();
    assert.deepEqual(body.host, REPORT.resources);
    assert.deepEqual(body.accelerators, REPORT.accelerators);
    assert.deepEqual(body.hypervisors, REPORT.hypervisors);
    assert.deepEqual(body.checks, REPORT.checks);
    assert.equal(typeof body.images, 'object');
    const refreshed = await app.inject({ method: 'GET', url: '/resources?refresh=true' });
    assert.equal(refreshed.statusCode, 200);
    assert.deepEqual(probeCalls, [
      { dataDir: env.dir, refreshKvm: false },
      { dataDir: env.dir, refreshKvm: true },
    ]);
  });

  test('GET /resources with a bad query is 400 invalid_argument', async () => {
    for (const url of ['/resources?refresh=maybe', '/resources?other=1']) {
      const res = await app.inject({ method: 'GET', url });
      assert.equal(res.statusCode, 400, url);
      assert.equal(errorOf(res).code, 'invalid_argument', url);
    }
  });

  test('POST /images with a malformed body is 400 invalid_argument', async () => {
    const cases: [string, string][] = [
      ['missing name', '{}'],
      ['name is a number', '{"name": 5}'],
      ['empty name', '{"name": ""}'],
      ['extra property', '{"name": "alpine", "tag": "x"}'],
      ['invalid JSON', '{"name": '],
      ['not an object', '"alpine"'],
    ];
    for (const [why, payload] of cases) {
      const res = await postImage(payload);
      assert.equal(res.statusCode, 400, `${why}: ${res.body}`);
      const err = errorOf(res);
      assert.equal(err.code, 'invalid_argument', why);
      assert.ok(err.message.length > 0, why);
    }
  });

  test('POST /images with a non-JSON content type is a 4xx, not a 500', async () => {
    const res = await postImage('name=alpine', 'text/plain');
    assert.ok(res.statusCode >= 400 && res.statusCode < 500, `got ${res.statusCode}`);
    assert.equal(errorOf(res).code, 'invalid_argument');
  });

  test('POST /images with an invalid reference is 400 invalid_reference naming it', async () => {
    const res = await postImage(JSON.stringify({ name: 'UPPER/Case' }));
    assert.equal(res.statusCode, 400);
    const err = errorOf(res);
    assert.equal(err.code, 'invalid_reference');
    assert.match(err.message, /"UPPER\/Case"/);
  });

  test('POST /images accepts a pull (202, normalised name) that then fails with the registry error', async () => {
    // Port 1 on loopback refuses connections at once: a fast, real failure.
    const res = await postImage(JSON.stringify({ name: '127.0.0.1:1/nothing/here' }));
    assert.equal(res.statusCode, 202, res.body);
    const image = res.json<{ name: string; status: string; source: string }>();
    assert.equal(image.name, '127.0.0.1:1/nothing/here:latest');
    assert.equal(image.source, 'registry');
    assert.ok(['pending', 'pulling', 'failed'].includes(image.status), image.status);
    await env.manager.drain();

    const encoded = encodeURIComponent('127.0.0.1:1/nothing/here');
    const got = await app.inject({ method: 'GET', url: `/images/${encoded}` });
    assert.equal(got.statusCode, 200);
    const failed = got.json<{ name: string; status: string; error_code: string }>();
    assert.equal(failed.name, '127.0.0.1:1/nothing/here:latest');
    assert.equal(failed.status, 'failed');
    assert.equal(failed.error_code, 'registry_unavailable');

    const list = await app.inject({ method: 'GET', url: '/images' });
    assert.deepEqual(
      list.json<{ name: string }[]>().map((i) => i.name),
      ['127.0.0.1:1/nothing/here:latest'],
    );

    const del = await app.inject({ method: 'DELETE', url: `/images/${encoded}` });
    assert.equal(del.statusCode, 204);
    assert.equal(del.body, '');
    const gone = await app.inject({ method: 'GET', url: `/images/${encoded}` });
    assert.equal(gone.statusCode, 404);
  });

  test('GET and DELETE of an unknown image are 404 image_not_found', async () => {
    const name = encodeURIComponent('ghcr.io/nobody/nothing:1');
    for (const method of ['GET', 'DELETE'] as const) {
      const res = await app.inject({ method, url: `/images/${name}` });
      assert.equal(res.statusCode, 404, method);
      const err = errorOf(res);
      assert.equal(err.code, 'image_not_found', method);
      assert.match(err.message, /ghcr\.io\/nobody\/nothing:1/);
    }
    const byDigest = await app.inject({ method: 'GET', url: `/images/sha256:${'f'.repeat(64)}` });
    assert.equal(byDigest.statusCode, 404);
    assert.equal(errorOf(byDigest).code, 'image_not_found');
  });

  test('GET of an unparsable image name is 400 invalid_reference', async () => {
    const res = await app.inject({
      method: 'GET',
      url: `/images/${encodeURIComponent('Bad Name')}`,
    });
    assert.equal(res.statusCode, 400);
    assert.equal(errorOf(res).code, 'invalid_reference');
  });

  test('an unknown route is 404 not_found naming method and path', async () => {
    const res = await app.inject({ method: 'GET', url: '/nope?x=1' });
    assert.equal(res.statusCode, 404);
    const err = errorOf(res);
    assert.equal(err.code, 'not_found');
    assert.equal(err.message, 'no route for GET /nope');
    const put = await app.inject({ method: 'PUT', url: '/images' });
    assert.equal(put.statusCode, 404);
    assert.equal(errorOf(put).code, 'not_found');
  });

  test('bearer auth: missing, wrong and right tokens', async () => {
    const missing = await secured.inject({ method: 'GET', url: '/health' });
    assert.equal(missing.statusCode, 401);
    assert.equal(missing.headers['www-authenticate'], 'Bearer realm="vessel"');
    assert.equal(errorOf(missing).code, 'unauthorized');
    assert.match(errorOf(missing).message, /missing bearer token/);

    for (const authorization of [`Bearer ${TOKEN}x`, 'Bearer short', `Basic ${TOKEN}`, TOKEN]) {
      const res = await secured.inject({
        method: 'GET',
        url: '/health',
        headers: { authorization },
      });
      assert.equal(res.statusCode, 401, authorization);
      assert.equal(errorOf(res).code, 'unauthorized');
    }

    const ok = await secured.inject({
      method: 'GET',
      url: '/health',
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(ok.statusCode, 200);
    const lower = await secured.inject({
      method: 'GET',
      url: '/health',
      headers: { authorization: `bearer ${TOKEN}` },
    });
    assert.equal(lower.statusCode, 200, 'the scheme is case-insensitive');

    const unknownRoute = await secured.inject({ method: 'GET', url: '/nope' });
    assert.equal(unknownRoute.statusCode, 401, 'no route discovery without a token');
    const spec = await secured.inject({ method: 'GET', url: '/openapi.json' });
    assert.equal(spec.statusCode, 401);
  });

  test('the unix-socket app (no tokens) does not ask for one', async () => {
    const res = await app.inject({
      method: 'GET',
      url: '/health',
      headers: { authorization: 'Bearer junk' },
    });
    assert.equal(res.statusCode, 200);
  });

  test('/openapi.json is OpenAPI 3.1 with Image and Error schemas', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    assert.equal(res.statusCode, 200);
    const spec = res.json<{
      openapi: string;
      info: { version: string };
      components: { schemas: Record<string, { type?: string; properties?: object }> };
      paths: Record<string, unknown>;
    }>();
    assert.equal(spec.openapi, '3.1.0');
    assert.equal(spec.info.version, VERSION);
    assert.equal(spec.components.schemas.Image?.type, 'object');
    assert.ok(spec.components.schemas.Image?.properties);
    assert.equal(spec.components.schemas.Error?.type, 'object');
    assert.ok(spec.paths['/images/{name}'], 'path params are written as {name}');
    assert.equal(spec.paths['/openapi.json'], undefined, 'hidden routes stay hidden');
  });

  test('every operation has a unique operationId and a 4xx response referencing Error', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    const spec = res.json<{
      paths: Record<
        string,
        Record<
          string,
          {
            operationId?: string;
            responses: Record<string, { content?: Record<string, { schema?: { $ref?: string } }> }>;
          }
        >
      >;
    }>();
    const ids: string[] = [];
    const problems: string[] = [];
    for (const [url, ops] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const where = `${method.toUpperCase()} ${url}`;
        if (!op.operationId) problems.push(`${where}: no operationId`);
        else ids.push(op.operationId);
        const errorRef = Object.entries(op.responses).some(
          ([status, r]) =>
            status.startsWith('4') &&
            r.content?.['application/json']?.schema?.$ref === '#/components/schemas/Error',
        );
        if (!errorRef) problems.push(`${where}: no 4xx response referencing Error`);
      }
    }
    assert.ok(ids.length >= 9, `found ${ids.length} operations`);
    assert.deepEqual(problems, []);
    assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
  });
});
