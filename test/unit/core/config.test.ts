// Configuration: defaults < config file < environment < flags, validated with
// errors that name the offending key.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  DEFAULT_DATA_DIR,
  configFromEnv,
  defaultConfig,
  loadConfig,
  validateConfig,
} from '../../../src/core/config.js';
import { isVesselError } from '../../../src/core/errors.js';

const TOKEN = 'abcdefghijklmnop-token';

function rejectsConfig(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err) => {
    assert.ok(isVesselError(err, 'invalid_config'), `expected invalid_config, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('config', () => {
  let dir: string;
  let n = 0;
  const file = async (content: unknown): Promise<string> => {
    const f = path.join(dir, `config-${n++}.json`);
    await fs.writeFile(f, typeof content === 'string' ? content : JSON.stringify(content));
    return f;
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-config-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('defaults (no file in the data dir) are valid', () => {
    const data = path.join(dir, 'empty-data');
    const cfg = loadConfig({ env: { VESSEL_DATA_DIR: data } });
    assert.deepEqual(cfg, defaultConfig(data));
    assert.equal(cfg.log_level, 'info');
    assert.deepEqual(cfg.api, { tokens: [] });
    assert.equal(cfg.images.format, 'auto');
    assert.equal(cfg.images.max_concurrent_downloads, 4);
    assert.ok(
      cfg.images.max_concurrent_conversions >= 1 && cfg.images.max_concurrent_conversions <= 4,
    );
    assert.deepEqual(cfg.images.insecure_registries, []);
    assert.equal(defaultConfig().data_dir, DEFAULT_DATA_DIR);
  });

  test('environment overrides', () => {
    const cfg = loadConfig({
      env: {
        VESSEL_DATA_DIR: path.join(dir, 'env-data'),
        VESSEL_API_TCP: '127.0.0.1:7420',
        VESSEL_API_TOKENS: `${TOKEN},,${TOKEN}2`,
        VESSEL_IMAGE_FORMAT: 'ext4',
        VESSEL_LOG_LEVEL: 'debug',
        VESSEL_INSECURE_REGISTRIES: 'reg.lan:5000,other.lan',
      },
    });
    assert.equal(cfg.data_dir, path.join(dir, 'env-data'));
    assert.deepEqual(cfg.api.tcp, { host: '127.0.0.1', port: 7420 });
    assert.deepEqual(cfg.api.tokens, [TOKEN, `${TOKEN}2`]);
    assert.equal(cfg.images.format, 'ext4');
    assert.equal(cfg.log_level, 'debug');
    assert.deepEqual(cfg.images.insecure_registries, ['reg.lan:5000', 'other.lan']);
  });

  test('VESSEL_API_TCP splits host and port at the last colon (IPv6 host)', () => {
    assert.deepEqual(configFromEnv({ VESSEL_API_TCP: '[::1]:7420' }).api?.tcp, {
      host: '[::1]',
      port: 7420,
    });
  });

  test('a bad VESSEL_API_TCP is invalid_config quoting the value', () => {
    for (const bad of ['7420', 'localhost', 'host:port', ':7420']) {
      rejectsConfig(
        () => configFromEnv({ VESSEL_API_TCP: bad }),
        new RegExp(`VESSEL_API_TCP must be host:port, got "${bad}"`),
      );
    }
    rejectsConfig(
      () =>
        loadConfig({
          env: {
            VESSEL_DATA_DIR: dir,
            VESSEL_API_TCP: '127.0.0.1:70000',
            VESSEL_API_TOKENS: TOKEN,
          },
        }),
      /api\.tcp\.port/,
    );
  });

  test('a bad VESSEL_IMAGE_FORMAT is invalid_config naming images.format', () => {
    rejectsConfig(
      () => loadConfig({ env: { VESSEL_DATA_DIR: dir, VESSEL_IMAGE_FORMAT: 'btrfs' } }),
      /images\.format/,
    );
  });

  test('a config file named by VESSEL_CONFIG is merged over the defaults', async () => {
    const f = await file({
      log_level: 'warn',
      images: { format: 'erofs', max_concurrent_downloads: 8 },
    });
    const cfg = loadConfig({ env: { VESSEL_CONFIG: f, VESSEL_DATA_DIR: dir } });
    assert.equal(cfg.log_level, 'warn');
    assert.equal(cfg.images.format, 'erofs');
    assert.equal(cfg.images.max_concurrent_downloads, 8);
    assert.equal(
      cfg.images.max_unpacked_bytes,
      defaultConfig().images.max_unpacked_bytes,
      'untouched keys keep defaults',
    );
    assert.equal(cfg.data_dir, dir);
  });

  test('<data_dir>/config.json is read when present', async () => {
    const data = await fs.mkdtemp(path.join(dir, 'data-'));
    await fs.writeFile(path.join(data, 'config.json'), JSON.stringify({ log_level: 'error' }));
    assert.equal(loadConfig({ env: { VESSEL_DATA_DIR: data } }).log_level, 'error');
  });

  test('a missing VESSEL_CONFIG file is an error (it was asked for explicitly)', () => {
    const missing = path.join(dir, 'nope.json');
    rejectsConfig(
      () => loadConfig({ env: { VESSEL_CONFIG: missing } }),
      new RegExp(`cannot read config file ${missing}`),
    );
  });

  test('invalid JSON in the file is invalid_config naming the file', async () => {
    const f = await file('{"log_level": ');
    rejectsConfig(
      () => loadConfig({ env: { VESSEL_CONFIG: f } }),
      new RegExp(`config file ${f} is not valid JSON`),
    );
  });

  test('an unknown nested key in the file is invalid_config naming its path', async () => {
    const f = await file({ images: { formt: 'ext4' } });
    rejectsConfig(() => loadConfig({ env: { VESSEL_CONFIG: f } }), /images\.formt/);
    const g = await file({ api: { token: [TOKEN] } });
    rejectsConfig(() => loadConfig({ env: { VESSEL_CONFIG: g } }), /api\.token\b/);
  });

  test('an unknown top-level key in the file is invalid_config naming it', async () => {
    // A typo such as "data_dri" must not be silently ignored.
    const f = await file({ data_dri: '/srv/vessel' });
    rejectsConfig(() => loadConfig({ env: { VESSEL_CONFIG: f } }), /data_dri/);
  });

  test('a file that is not a JSON object is invalid_config', async () => {
    const f = await file('null');
    rejectsConfig(
      () => loadConfig({ env: { VESSEL_CONFIG: f } }),
      new RegExp(f.replaceAll('.', '\\.')),
    );
  });

  test('a wrongly typed value names its key path', async () => {
    const f = await file({ images: { max_concurrent_downloads: 0 } });
    rejectsConfig(
      () => loadConfig({ env: { VESSEL_CONFIG: f } }),
      /images\.max_concurrent_downloads/,
    );
  });

  test('instances.lifecycle_event_buffer_size: defaults to 256, must be 1..65536', async () => {
    assert.equal(
      loadConfig({ env: { VESSEL_DATA_DIR: dir } }).instances.lifecycle_event_buffer_size,
      256,
    );
    const ok = await file({ instances: { lifecycle_event_buffer_size: 16 } });
    const cfg = loadConfig({ env: { VESSEL_CONFIG: ok } });
    assert.equal(cfg.instances.lifecycle_event_buffer_size, 16);
    assert.equal(cfg.instances.boot_timeout_seconds, 120, 'the other keys keep their defaults');
    for (const bad of [0, -1, 1.5, 70000, '256']) {
      const f = await file({ instances: { lifecycle_event_buffer_size: bad } });
      rejectsConfig(
        () => loadConfig({ env: { VESSEL_CONFIG: f } }),
        /instances\.lifecycle_event_buffer_size/,
      );
    }
  });

  test('network: defaults, partial overrides, and bad subnets, bridges and modes named', async () => {
    const def = loadConfig({ env: { VESSEL_DATA_DIR: dir } }).network;
    assert.deepEqual(def, {
      bridge: 'vessel0',
      subnet: '10.88.0.0/16',
      tap_pool_size: 4,
      default_mode: 'auto',
    });
    const ok = await file({ network: { subnet: '172.31.8.0/22' } });
    const cfg = loadConfig({ env: { VESSEL_CONFIG: ok } }).network;
    assert.equal(cfg.subnet, '172.31.8.0/22');
    assert.equal(cfg.bridge, 'vessel0', 'the other keys keep their defaults');
    for (const [bad, key] of [
      [{ subnet: '10.88.0.1/16' }, /network\.subnet "10\.88\.0\.1\/16"/],
      [{ subnet: '10.88.0.0/31' }, /network\.subnet/],
      [{ subnet: '10.888.0.0/16' }, /network\.subnet/],
      [{ bridge: 'a-very-long-bridge-name' }, /network\.bridge/],
      [{ bridge: 'br 0' }, /network\.bridge/],
      [{ default_mode: 'tap' }, /network\.default_mode/],
      [{ tap_pool_size: -1 }, /network\.tap_pool_size/],
    ] as const) {
      const f = await file({ network: bad });
      rejectsConfig(() => loadConfig({ env: { VESSEL_CONFIG: f } }), key);
    }
  });

  test('tcp without tokens is refused', () => {
    rejectsConfig(
      () => loadConfig({ env: { VESSEL_DATA_DIR: dir, VESSEL_API_TCP: '127.0.0.1:7420' } }),
      /api\.tcp is set but api\.tokens is empty/,
    );
  });

  test('a token shorter than 16 characters is refused', () => {
    rejectsConfig(
      () =>
        loadConfig({
          env: {
            VESSEL_DATA_DIR: dir,
            VESSEL_API_TCP: '127.0.0.1:7420',
            VESSEL_API_TOKENS: 'short',
          },
        }),
      /api\.tokens\.0/,
    );
  });

  test('flags beat environment beat file', async () => {
    const f = await file({
      log_level: 'warn',
      images: { format: 'erofs', max_concurrent_downloads: 8, max_concurrent_conversions: 2 },
    });
    const env = {
      VESSEL_CONFIG: f,
      VESSEL_DATA_DIR: dir,
      VESSEL_LOG_LEVEL: 'debug',
      VESSEL_IMAGE_FORMAT: 'ext4',
    };
    const viaEnv = loadConfig({ env });
    assert.equal(viaEnv.log_level, 'debug', 'env beats file');
    assert.equal(viaEnv.images.format, 'ext4', 'env beats file');
    assert.equal(viaEnv.images.max_concurrent_downloads, 8, 'file beats defaults');

    const flagDir = path.join(dir, 'flag-data');
    const viaFlags = loadConfig({
      env,
      flags: { log_level: 'trace', data_dir: flagDir, images: { format: 'auto' } },
    });
    assert.equal(viaFlags.log_level, 'trace');
    assert.equal(viaFlags.images.format, 'auto');
    assert.equal(viaFlags.data_dir, flagDir);
    assert.equal(viaFlags.images.max_concurrent_downloads, 8, 'a flag for one key keeps the rest');
    assert.equal(viaFlags.images.max_concurrent_conversions, 2);
  });

  test('validateConfig accepts the defaults and reports the root for a non-object', () => {
    assert.deepEqual(validateConfig(defaultConfig('/x')), defaultConfig('/x'));
    rejectsConfig(() => validateConfig(null, 'test'), /^test: \(root\)/);
  });
});
