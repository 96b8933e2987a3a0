// WWW-Authenticate parsing, and the registry client's challenge flow and status
// mapping against a real HTTP server on 127.0.0.1 (a stand-in token service and
// registry endpoint; the real registry is exercised by the integration tests).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { isVesselError, type ErrorCode } from '../../../src/core/errors.js';
import {
  isNotFoundResponse,
  parseChallenge,
  RegistryClient,
  registryErrorCodes,
} from '../../../src/images/registry-client.js';

describe('parseChallenge', () => {
  test('Bearer with realm, service and scope', () => {
    assert.deepEqual(
      parseChallenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
      ),
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/alpine:pull',
        },
      },
    );
  });

  test('commas inside quotes, spaces around separators, mixed-case names', () => {
    assert.deepEqual(
      parseChallenge(
        '  BEARER Realm = "https://a/t" , scope="repository:a/b:pull,push",Service=reg',
      ),
      {
        scheme: 'bearer',
        params: { realm: 'https://a/t', scope: 'repository:a/b:pull,push', service: 'reg' },
      },
    );
  });

  test('escaped quotes and backslashes inside a quoted value', () => {
    assert.deepEqual(parseChallenge('Bearer realm="a\\"b\\\\c",error="x"')?.params, {
      realm: 'a"b\\c',
      error: 'x',
    });
  });

  test('Basic realm', () => {
    assert.deepEqual(parseChallenge('Basic realm="Registry Realm"'), {
      scheme: 'basic',
      params: { realm: 'Registry Realm' },
    });
  });

  test('garbage gives undefined or no params', () => {
    assert.equal(parseChallenge(''), undefined);
    assert.equal(parseChallenge('   '), undefined);
    assert.equal(parseChallenge('"quoted"'), undefined);
    assert.equal(parseChallenge('123 realm="x"'), undefined);
    assert.deepEqual(parseChallenge('Bearer'), { scheme: 'bearer', params: {} });
    assert.deepEqual(parseChallenge('Bearer !!!'), { scheme: 'bearer', params: {} });
  });
});

interface Seen {
  readonly path: string;
  readonly query: URLSearchParams;
  readonly authorization: string | undefined;
  readonly accept: string | undefined;
}

const MANIFEST = Buffer.from(
  JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json' }),
);
const MANIFEST_DIGEST = `sha256:${createHash('sha256').update(MANIFEST).digest('hex')}`;
const OTHER_DIGEST = `sha256:${'0'.repeat(64)}`;
const TOKEN = 'tok-123';
const USER = 'alice';
const PASS = 'pa:ss';
const BLOB = Buffer.from('blob bytes');

describe('RegistryClient against a local HTTP server', () => {
  let server: http.Server;
  let registry: string;
  let seen: Seen[] = [];

  before(async () => {
    server = http.createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      seen.push({
        path: url.pathname,
        query: url.searchParams,
        authorization: req.headers.authorization,
        accept: req.headers.accept,
      });
      const auth = req.headers.authorization;
      const json = (status: number, v: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(v));
      };
      if (url.pathname === '/token') {
        if (url.searchParams.get('scope')?.startsWith('repository:badtoken/')) {
          json(401, { errors: [{ code: 'UNAUTHORIZED' }] });
          return;
        }
        if (
          auth !== undefined &&
          auth !== `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`
        ) {
          json(401, { errors: [{ code: 'UNAUTHORIZED' }] });
          return;
        }
        json(200, { token: TOKEN });
        return;
      }
      const m = /^\/v2\/([a-z]+)\/app\/(manifests|blobs)\/(.+)$/.exec(url.pathname);
      if (!m) {
        json(404, { errors: [{ code: 'NAME_UNKNOWN' }] });
        return;
      }
      const [, repo, kind] = m;
      const challenge = (): void => {
        const { port } = server.address() as AddressInfo;
        res
          .writeHead(401, {
            'www-authenticate': `Bearer realm="http://127.0.0.1:${port}/token",service="fake-registry",scope="repository:${repo}/app:pull"`,
            'content-type': 'application/json',
          })
          .end('{"errors":[{"code":"UNAUTHORIZED"}]}');
      };
      switch (repo ?? '') {
        case 'token':
        case 'badtoken':
          if (auth !== `Bearer ${TOKEN}`) return challenge();
          break;
        case 'deny':
          return challenge();
        case 'basic':
          if (auth !== `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`) {
            res.writeHead(401, { 'www-authenticate': 'Basic realm="fake"' }).end();
            return;
          }
          break;
        case 'missing':
          return json(404, { errors: [{ code: 'MANIFEST_UNKNOWN' }] });
        case 'bare':
          res.writeHead(404).end();
          return;
        case 'coded':
          // Not the status the spec gives, but the error code says what happened.
          return json(400, {
            errors: [{ code: 'NAME_UNKNOWN', message: 'repository name not known' }],
          });
        case 'broken':
          return json(500, { errors: [] });
        case 'teapot':
          return json(418, {});
        default:
          break;
      }
      if (kind === 'blobs') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(BLOB);
        return;
      }
      // Whatever was asked for, the same manifest comes back: a digest
      // request for anything else is a registry lying about content.
      res
        .writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' })
        .end(MANIFEST);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    registry = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const client = (repo: string, withCredentials = false): RegistryClient =>
    new RegistryClient(registry, `${repo}/app`, {
      timeoutMs: 5000,
      ...(withCredentials
        ? { credentials: new Map([[registry, { username: USER, password: PASS }]]) }
        : {}),
    });

  async function rejectsWith(p: Promise<unknown>, code: ErrorCode, pattern: RegExp): Promise<void> {
    await assert.rejects(p, (err) => {
      assert.ok(isVesselError(err, code), `expected ${code}, got ${String(err)}`);
      assert.match(err.message, pattern);
      return true;
    });
  }

  test('anonymous manifest by tag: digest computed from the bytes, Accept lists index types', async () => {
    seen = [];
    const got = await client('open').manifest('v1');
    assert.deepEqual(got.body, MANIFEST);
    assert.equal(got.digest, MANIFEST_DIGEST);
    assert.equal(got.contentType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.path, '/v2/open/app/manifests/v1');
    assert.match(seen[0]?.accept ?? '', /application\/vnd\.oci\.image\.index\.v1\+json/);
    assert.equal(seen[0]?.authorization, undefined);
  });

  test('manifest by matching digest is accepted', async () => {
    const got = await client('open').manifest(MANIFEST_DIGEST);
    assert.equal(got.digest, MANIFEST_DIGEST);
  });

  test('401 Bearer challenge → anonymous token (scope, service) → retry with the token', async () => {
    seen = [];
    const c = client('token');
    const got = await c.manifest('v1');
    assert.equal(got.digest, MANIFEST_DIGEST);
    assert.deepEqual(
      seen.map((s) => s.path),
      ['/v2/token/app/manifests/v1', '/token', '/v2/token/app/manifests/v1'],
    );
    const tokenReq = seen[1]!;
    assert.equal(tokenReq.query.get('scope'), 'repository:token/app:pull');
    assert.equal(tokenReq.query.get('service'), 'fake-registry');
    assert.equal(tokenReq.authorization, undefined, 'no credentials, no Basic header');
    assert.equal(seen[2]?.authorization, `Bearer ${TOKEN}`);

    // The token is kept for the next request of the same client.
    seen = [];
    const stream = await c.blob(`sha256:${'b'.repeat(64)}`);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    assert.deepEqual(Buffer.concat(chunks), BLOB);
    assert.deepEqual(
      seen.map((s) => [s.path, s.authorization]),
      [[`/v2/token/app/blobs/sha256:${'b'.repeat(64)}`, `Bearer ${TOKEN}`]],
    );
  });

  test('with credentials the token request carries Basic user:password', async () => {
    seen = [];
    await client('token', true).manifest('v1');
    const tokenReq = seen.find((s) => s.path === '/token');
    assert.ok(tokenReq);
    assert.equal(
      tokenReq.authorization,
      `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`,
    );
    assert.equal(tokenReq.query.get('scope'), 'repository:token/app:pull');
  });

  test('token service refusing the credentials → registry_unauthorized', async () => {
    await rejectsWith(
      client('badtoken', true).manifest('v1'),
      'registry_unauthorized',
      /refused the credentials for badtoken\/app \(token service answered 401\)/,
    );
  });

  test('401 again after a token → registry_unauthorized, with exactly one token request', async () => {
    seen = [];
    await rejectsWith(
      client('deny').manifest('v1'),
      'registry_unauthorized',
      new RegExp(
        `denied access to ${registry.replaceAll('.', '\\.')}/deny/app \\(no credentials configured\\) \\(HTTP 401\\)`,
      ),
    );
    assert.equal(seen.filter((s) => s.path === '/token').length, 1);
    assert.equal(seen.at(-1)?.authorization, `Bearer ${TOKEN}`);
  });

  test('Basic challenge: retried with credentials, refused without', async () => {
    seen = [];
    const got = await client('basic', true).manifest('v1');
    assert.equal(got.digest, MANIFEST_DIGEST);
    assert.equal(seen.length, 2);
    assert.equal(
      seen[1]?.authorization,
      `Basic ${Buffer.from(`${USER}:${PASS}`).toString('base64')}`,
    );
    await rejectsWith(
      client('basic').manifest('v1'),
      'registry_unauthorized',
      /no credentials configured/,
    );
  });

  test('manifest whose bytes do not match the requested digest → digest_mismatch', async () => {
    await rejectsWith(
      client('open').manifest(OTHER_DIGEST),
      'digest_mismatch',
      new RegExp(
        `@${OTHER_DIGEST}": registry returned a manifest whose digest is ${MANIFEST_DIGEST}`,
      ),
    );
  });

  test('404 → manifest_unknown naming the image', async () => {
    await rejectsWith(
      client('missing').manifest('v9'),
      'manifest_unknown',
      new RegExp(
        `^image "${registry.replaceAll('.', '\\.')}/missing/app:v9" not found in registry ${registry.replaceAll('.', '\\.')}$`,
      ),
    );
  });

  test('an unknown repository (NAME_UNKNOWN) → manifest_unknown naming image and registry', async () => {
    const name = `${registry}/nothing/here:1`;
    await assert.rejects(new RegistryClient(registry, 'nothing/here').manifest('1'), (err) => {
      assert.ok(isVesselError(err, 'manifest_unknown'));
      assert.equal(err.kind, 'NotFound');
      assert.equal(err.message, `image "${name}" not found in registry ${registry}`);
      assert.deepEqual(err.details, { registry, repository: 'nothing/here', status: 404 });
      return true;
    });
  });

  test('a 404 without a body, and a not-found error code under another 4xx, are not found', async () => {
    await rejectsWith(client('bare').manifest('v1'), 'manifest_unknown', /not found in registry/);
    await rejectsWith(client('coded').manifest('v1'), 'manifest_unknown', /not found in registry/);
  });

  test('500 → registry_unavailable', async () => {
    await rejectsWith(client('broken').manifest('v1'), 'registry_unavailable', /answered HTTP 500/);
  });

  test('another 4xx → registry_protocol', async () => {
    await rejectsWith(client('teapot').manifest('v1'), 'registry_protocol', /answered HTTP 418/);
  });

  test('nothing listening → registry_unavailable with the cause kept', async () => {
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(new RegistryClient(`127.0.0.1:${port}`, 'x/app').manifest('v1'), (err) => {
      assert.ok(isVesselError(err, 'registry_unavailable'));
      assert.match(err.message, /cannot reach registry 127\.0\.0\.1:/);
      assert.ok(err.cause instanceof Error);
      return true;
    });
  });
});

describe('registry error classification', () => {
  test('isNotFoundResponse: by status, or by a distribution error code on a 4xx', () => {
    assert.equal(isNotFoundResponse(404, []), true);
    assert.equal(isNotFoundResponse(400, ['MANIFEST_UNKNOWN']), true);
    assert.equal(isNotFoundResponse(403, ['NAME_UNKNOWN']), true);
    assert.equal(isNotFoundResponse(401, ['UNAUTHORIZED']), false);
    assert.equal(isNotFoundResponse(400, ['MANIFEST_INVALID']), false);
    assert.equal(isNotFoundResponse(500, ['BLOB_UNKNOWN']), false, 'a server error stays one');
    assert.equal(isNotFoundResponse(418, []), false);
  });

  test('registryErrorCodes reads the codes and ignores bodies of other shapes', async () => {
    const codes = (body: string | null): Promise<string[]> =>
      registryErrorCodes(new Response(body, { status: 404 }));
    assert.deepEqual(
      await codes('{"errors":[{"code":"NAME_UNKNOWN","message":"x"},{"code":"MANIFEST_UNKNOWN"}]}'),
      ['NAME_UNKNOWN', 'MANIFEST_UNKNOWN'],
    );
    assert.deepEqual(await codes(null), []);
    assert.deepEqual(await codes('not json'), []);
    assert.deepEqual(await codes('{"errors":"NAME_UNKNOWN"}'), []);
    assert.deepEqual(await codes('{"errors":[{"code":7},null,"x"]}'), []);
    const huge = `{"errors":[{"code":"NAME_UNKNOWN","detail":"${'x'.repeat(100 * 1024)}"}]}`;
    assert.deepEqual(await codes(huge), [], 'a body over 64 KiB is not read to its end');
  });
});
