// An image missing from a reachable registry is "not found" everywhere: the
// pull waiter, the image's event stream, `POST /instances` (404) and the CLI
// (exit 4), with a message naming the image and the registry. The registry is
// a real docker-registry: NAME_UNKNOWN for a missing repository,
// MANIFEST_UNKNOWN for a missing tag or digest.
import { buildTestApp } from '../helpers/test-app.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { defaultConfig } from '../../src/core/config.js';
import { isVesselError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { Daemon } from '../../src/daemon/index.js';
import { cli } from '../helpers/cli.js';
import { makeImageEnv, type ImageEnv } from '../helpers/image-env.js';
import { pushLayout, writeOciLayout } from '../helpers/oci-builder.js';
import { missingToolReason } from '../helpers/prereqs.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

const skip = await missingToolReason(['docker-registry', 'skopeo'], 'docker-registry skopeo');

describe('an image missing from a reachable registry', { skip }, () => {
  let registry: TestRegistry;
  let env: ImageEnv;
  let app: FastifyInstance;
  let work: string;
  /** Missing repository, missing tag of an existing one, missing digest. */
  let names: string[];
  const notFound = (name: string): string =>
    `image "${name}" not found in registry ${registry.host}`;

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-notfound-'));
    registry = await startRegistry();
    const layout = path.join(work, 'layout');
    await writeOciLayout(layout, [
      { ref: 'one', image: { layers: [[{ path: 'hello', content: 'hi' }]] } },
    ]);
    await pushLayout(layout, 'one', registry.host, 'exists/app:1');
    names = [
      `${registry.host}/nope:1`,
      `${registry.host}/exists/app:2`,
      `${registry.host}/exists/app@sha256:${'0'.repeat(64)}`,
    ];
    env = await makeImageEnv();
    app = await buildTestApp(env);
  });

  after(async () => {
    await app?.close();
    await env?.close();
    await registry?.stop();
    await fs.rm(work, { recursive: true, force: true });
  });

  test('the pull waiter rejects with manifest_unknown (kind NotFound), and the record keeps it', async () => {
    for (const name of names) {
      await assert.rejects(env.manager.waitForReady(env.manager.pull(name).name), (err) => {
        assert.ok(isVesselError(err, 'manifest_unknown'), `${name}: ${String(err)}`);
        assert.equal(err.kind, 'NotFound');
        assert.equal(err.message, notFound(name));
        return true;
      });
      const rec = env.manager.get(name);
      assert.equal(rec.status, 'failed');
      assert.equal(rec.error_code, 'manifest_unknown');
      assert.equal(rec.error, notFound(name));
    }
  });

  test('the image event stream ends with the failed status and its code', async () => {
    const name = names[0]!;
    const res = await app.inject({
      method: 'GET',
      url: `/images/${encodeURIComponent(name)}/events`,
    });
    assert.equal(res.statusCode, 200);
    const statuses = res.body
      .split('\n\n')
      .filter((block) => block.includes('event: status'))
      .map((block) => {
        const data = block.split('\n').find((l) => l.startsWith('data: '));
        return JSON.parse(data!.slice('data: '.length)) as { status: string; error_code: string };
      });
    assert.deepEqual(
      { status: statuses.at(-1)?.status, code: statuses.at(-1)?.error_code },
      { status: 'failed', code: 'manifest_unknown' },
    );
  });

  test('POST /instances answers 404 manifest_unknown naming the image and registry', async () => {
    const fresh = `${registry.host}/never/pulled:1`;
    // A first create pulls; a second finds the failed record: both are not found.
    for (const name of [fresh, fresh, ...names]) {
      const res = await app.inject({
        method: 'POST',
        url: '/instances',
        payload: { image: name },
      });
      assert.equal(res.statusCode, 404, `${name}: ${res.body}`);
      const body = res.json<{ code: string; message: string }>();
      assert.equal(body.code, 'manifest_unknown', name);
      assert.equal(body.message, notFound(name));
    }
  });
});

describe('the CLI on an image missing from a reachable registry', { skip }, () => {
  let registry: TestRegistry;
  let daemon: Daemon;
  let dir: string;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-notfound-cli-'));
    registry = await startRegistry();
    const config = defaultConfig(dir);
    daemon = new Daemon({
      config: { ...config, dns: { ...config.dns, enabled: false } },
      logger: silentLogger(),
    });
    await daemon.start();
  });

  after(async () => {
    await daemon?.stop();
    await registry?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('vessel run and vessel image pull exit 4 and name the image and registry', async () => {
    const env = { VESSEL_DATA_DIR: dir };
    for (const [args, name] of [
      [['run', `${registry.host}/nope:1`], `${registry.host}/nope:1`],
      [['image', 'pull', `${registry.host}/other:2`], `${registry.host}/other:2`],
    ] as const) {
      const res = await cli([...args], env);
      assert.equal(res.code, 4, `${args.join(' ')}: ${res.stderr}`);
      assert.ok(
        res.stderr.includes(`image "${name}" not found in registry ${registry.host}`),
        res.stderr,
      );
    }
  });
});
