// The daemon as users reach it: unix socket and TCP listeners, the typed
// client, SSE progress, OpenAPI, metrics, single-instance guard — and the real
// `vessel` CLI binary with daemon autostart and graceful shutdown.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { VesselClient, type ImageStreamEvent } from '../../src/client/index.js';
import { defaultConfig } from '../../src/core/config.js';
import { isVesselError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { Daemon } from '../../src/daemon/index.js';
import { pushLayout, writeDockerArchive, writeOciLayout } from '../helpers/oci-builder.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { cli } from '../helpers/cli.js';

const TOKEN = 'test-token-0123456789abcdef';

describe('daemon API', () => {
  let dir: string;
  let daemon: Daemon;
  let client: VesselClient;
  let registry: TestRegistry;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-daemon-'));
    const config = defaultConfig(dir);
    daemon = new Daemon({
      config: { ...config, api: { tokens: [TOKEN], tcp: { host: '127.0.0.1', port: 0 } } },
      logger: silentLogger(),
    });
    await daemon.start();
    client = new VesselClient({ socketPath: daemon.paths.socket });
    registry = await startRegistry();
    const layout = path.join(dir, 'layout');
    await writeOciLayout(layout, [
      {
        ref: 'app',
        image: {
          layers: [[{ path: 'big', size: 3 * 1024 * 1024 }], [{ path: 'hello', content: 'hi' }]],
          config: { Cmd: ['/hello'] },
        },
      },
    ]);
    await pushLayout(layout, 'app', registry.host, 'api/app:1');
  });

  after(async () => {
    await client?.close();
    await daemon?.stop();
    await registry?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('health over the unix socket; the socket is mode 0660 and a PID file names the daemon', async () => {
    const h = await client.health();
    assert.equal(h.status, 'ok');
    assert.equal((await fs.stat(daemon.paths.socket)).mode & 0o777, 0o660);
    assert.equal((await fs.readFile(daemon.paths.pidFile, 'utf8')).trim(), String(process.pid));
  });

  test('a second daemon on the same data directory is refused', async () => {
    const second = new Daemon({ config: defaultConfig(dir), logger: silentLogger() });
    await assert.rejects(second.start(), (err) => isVesselError(err, 'daemon_running'));
    assert.equal((await client.health()).status, 'ok', 'the first daemon is unaffected');
  });

  test('TCP requires a bearer token', async () => {
    const addr = daemon.tcpAddress();
    assert.ok(addr);
    const base = `http://127.0.0.1:${addr.port}`;
    const anon = await fetch(`${base}/health`);
    assert.equal(anon.status, 401);
    assert.equal(((await anon.json()) as { code: string }).code, 'unauthorized');
    const wrong = await fetch(`${base}/health`, {
      headers: { authorization: 'Bearer wrong-token-wrong-token' },
    });
    assert.equal(wrong.status, 401);
    const tcp = new VesselClient({ baseUrl: base, token: TOKEN });
    try {
      assert.equal((await tcp.health()).status, 'ok');
    } finally {
      await tcp.close();
    }
  });

  test('bad input is a 400 with a clear message, unknown routes a 404, never a 500', async () => {
    await assert.rejects(client.pullImage('UPPER/case:tag'), (err) => {
      assert.ok(isVesselError(err, 'invalid_reference'));
      assert.match(err.message, /invalid image reference "UPPER\/case:tag"/);
      return true;
    });
    const raw = new VesselClient({ socketPath: daemon.paths.socket });
    const bad = async (
      method: string,
      url: string,
      body?: string,
      type = 'application/json',
    ): Promise<{ status: number; code: string }> => {
      const res = await fetch(`http://127.0.0.1:${daemon.tcpAddress()!.port}${url}`, {
        method,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          ...(body === undefined ? {} : { 'content-type': type }),
        },
        ...(body === undefined ? {} : { body }),
      });
      return { status: res.status, code: ((await res.json()) as { code: string }).code };
    };
    try {
      assert.deepEqual(await bad('POST', '/images', '{"nme": "x"}'), {
        status: 400,
        code: 'invalid_argument',
      });
      assert.deepEqual(await bad('POST', '/images', '{not json'), {
        status: 400,
        code: 'invalid_argument',
      });
      assert.deepEqual(await bad('POST', '/images', '{"name": 5}'), {
        status: 400,
        code: 'invalid_argument',
      });
      assert.deepEqual(await bad('POST', '/images', '<xml/>', 'application/xml'), {
        status: 415,
        code: 'invalid_argument',
      });
      assert.deepEqual(await bad('GET', '/images/nothing%3Ahere'), {
        status: 404,
        code: 'image_not_found',
      });
      assert.deepEqual(await bad('GET', '/nope'), { status: 404, code: 'not_found' });
      assert.deepEqual(await bad('GET', '/resources?refresh=maybe'), {
        status: 400,
        code: 'invalid_argument',
      });
      assert.deepEqual(await bad('POST', '/images/import', 'not a tar', 'application/x-tar'), {
        status: 400,
        code: 'invalid_argument',
      });
    } finally {
      await raw.close();
    }
  });

  test('pull over the API: status and per-layer progress stream over SSE until ready', async () => {
    const img = await client.pullImage(`${registry.host}/api/app:1`);
    assert.equal(img.name, `${registry.host}/api/app:1`);
    const events: ImageStreamEvent[] = [];
    for await (const e of client.imageEvents(img.name)) events.push(e);
    const statuses = events.flatMap((e) => (e.type === 'status' ? [e.image.status] : []));
    assert.equal(statuses.at(-1), 'ready');
    const progress = events.filter((e) => e.type === 'progress');
    assert.ok(progress.length > 0, 'layer progress was streamed');
    const listed = await client.listImages();
    assert.ok(listed.some((i) => i.name === img.name && i.status === 'ready'));
    const got = await client.getImage(img.digest ?? (await client.getImage(img.name)).digest!);
    assert.equal(got.name, img.name);
  });

  test('import a docker save tarball through the API', async () => {
    const file = path.join(dir, 'save.tar');
    await writeDockerArchive(file, { layers: [[{ path: 'x', content: 'y' }]] }, 'saved/app:3');
    const img = await client.importImage(createReadStream(file));
    for await (const e of client.imageEvents(img.name))
      if (e.type === 'status' && e.image.status === 'failed') assert.fail(e.image.error ?? '');
    assert.equal((await client.getImage('saved/app:3')).status, 'ready');
    await client.deleteImage('saved/app:3');
    await assert.rejects(client.getImage('saved/app:3'), (err) =>
      isVesselError(err, 'image_not_found'),
    );
    const gc = await client.gcImages();
    assert.ok(gc.removed_blobs >= 2, `gc removed ${gc.removed_blobs} blobs`);
  });

  test('resources, metrics and the OpenAPI 3.1 document', async () => {
    const r = await client.resources();
    assert.ok(r.host.cpus >= 1);
    assert.ok(r.checks.some((c) => c.id.includes('qemu') || c.title.includes('QEMU')));
    assert.equal(typeof r.accelerators.kvm.usable, 'boolean');
    const metrics = await client.metrics();
    assert.match(metrics, /vessel_image_jobs_total\{result="ready"\} \d+/);
    assert.match(metrics, /vessel_image_publish_lock_hold_seconds_count \d+/);
    const doc = (await client.openapi()) as {
      openapi: string;
      paths: Record<string, Record<string, { operationId?: string }>>;
      components: { schemas: Record<string, unknown> };
    };
    assert.equal(doc.openapi, '3.1.0');
    for (const p of [
      '/health',
      '/resources',
      '/images',
      '/images/{name}',
      '/images/{name}/events',
      '/images/import',
      '/images/gc',
      '/metrics',
    ]) {
      assert.ok(doc.paths[p], `${p} is documented`);
    }
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const [m, op] of Object.entries(ops))
        assert.ok(op.operationId, `${m.toUpperCase()} ${p} has an operationId`);
    }
    assert.ok(doc.components.schemas.Image && doc.components.schemas.Error);
  });
});

describe('vessel CLI', () => {
  let dir: string;
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-cli-'));
  });
  after(async () => {
    const pid = Number(
      (await fs.readFile(path.join(dir, 'vessel.pid'), 'utf8').catch(() => '')).trim(),
    );
    if (pid > 0) process.kill(pid, 'SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('starts the daemon on first use, imports, lists as JSON, and the daemon stops on SIGTERM', async () => {
    const env = { VESSEL_DATA_DIR: dir };
    const ls = await cli(['image', 'ls', '--json'], env);
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(JSON.parse(ls.stdout), []);
    const pid = Number((await fs.readFile(path.join(dir, 'vessel.pid'), 'utf8')).trim());
    assert.ok(pid > 0 && pid !== process.pid, 'a background daemon was started');

    const layout = path.join(dir, 'layout');
    await writeOciLayout(layout, [
      { ref: 'cli', image: { layers: [[{ path: 'f', content: 'cli' }]] } },
    ]);
    const imp = await cli(['image', 'import', layout, '--name', 'cli/test:1'], env);
    assert.equal(imp.code, 0, imp.stderr);
    assert.match(imp.stdout, /docker\.io\/cli\/test:1\s+sha256:[a-f0-9]{64}\s+erofs/);

    const listed = JSON.parse((await cli(['--json', 'image', 'ls'], env)).stdout) as {
      name: string;
      status: string;
    }[];
    assert.deepEqual(
      listed.map((i) => [i.name, i.status]),
      [['docker.io/cli/test:1', 'ready']],
    );

    const missing = await cli(['image', 'inspect', 'no/such:image'], env);
    assert.equal(missing.code, 4, 'not found exits 4');
    assert.match(missing.stderr, /image "no\/such:image" not found/);
    const invalid = await cli(['image', 'pull', 'Bad Ref'], env);
    assert.equal(invalid.code, 2, 'invalid input exits 2');
    const pullMissing = await cli(['image', 'pull', '127.0.0.1:1/none:1'], env);
    assert.equal(pullMissing.code, 3, 'an unreachable registry exits 3');
    assert.match(pullMissing.stderr, /cannot reach registry 127\.0\.0\.1:1/);

    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        process.kill(pid, 0);
        await new Promise((r) => setTimeout(r, 50));
      } catch {
        break;
      }
    }
    assert.throws(() => process.kill(pid, 0), 'daemon exited after SIGTERM');
    await assert.rejects(fs.access(path.join(dir, 'vessel.sock')), 'socket removed on shutdown');
    await assert.rejects(fs.access(path.join(dir, 'vessel.pid')), 'PID file removed on shutdown');
  });
});
