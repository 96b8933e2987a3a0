import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildGuestConfig, writeConfigDisk } from '../../../src/instances/guest-config.js';
import type { Image } from '../../../src/images/index.js';
import { isVesselError } from '../../../src/core/errors.js';

function image(over: Partial<Image> = {}): Image {
  return {
    name: 'docker.io/library/app:1',
    digest: `sha256:${'a'.repeat(64)}`,
    platform: 'linux/amd64',
    status: 'ready',
    queue_position: null,
    error: null,
    error_code: null,
    source: 'registry',
    format: 'erofs',
    size_bytes: 1,
    entrypoint: ['/entry'],
    cmd: ['--serve'],
    env: { PATH: '/bin', A: '1' },
    working_dir: '/app',
    user: 'app',
    exposed_ports: [],
    layers: [],
    tags: {},
    created_at: '2026-01-01T00:00:00Z',
    updated_at: '2026-01-01T00:00:00Z',
    ...over,
  };
}

describe('guest config', () => {
  test('docker semantics: CMD replaced, entrypoint kept, env overridden by key', () => {
    const c = buildGuestConfig({
      image: image(),
      hostname: 'vm',
      cmd: ['--once'],
      env: ['A=2', 'B=x=y'],
    });
    assert.deepEqual(c.entrypoint, ['/entry']);
    assert.deepEqual(c.cmd, ['--once']);
    assert.deepEqual(c.env, ['PATH=/bin', 'A=2', 'B=x=y']);
    assert.equal(c.workdir, '/app');
    assert.equal(c.user, 'app');
    assert.equal(c.mode, 'exec');
  });

  test('init images boot in systemd mode; images without a command need one', () => {
    assert.equal(
      buildGuestConfig({ image: image({ entrypoint: null, cmd: ['/sbin/init'] }), hostname: 'vm' })
        .mode,
      'systemd',
    );
    assert.throws(
      () => buildGuestConfig({ image: image({ entrypoint: null, cmd: null }), hostname: 'vm' }),
      (e) => isVesselError(e, 'invalid_argument'),
    );
    assert.throws(
      () => buildGuestConfig({ image: image(), hostname: 'vm', env: ['NOEQUALS'] }),
      /KEY=VALUE/,
    );
  });

  test('the config disk is the JSON, NUL-terminated and padded to 4 KiB', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-cfg-'));
    try {
      const c = buildGuestConfig({ image: image(), hostname: 'vm' });
      const file = path.join(dir, 'config.disk');
      await writeConfigDisk(file, c);
      const raw = await fs.readFile(file);
      assert.equal(raw.length % 4096, 0);
      const end = raw.indexOf(0);
      assert.deepEqual(JSON.parse(raw.subarray(0, end).toString()), c);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
