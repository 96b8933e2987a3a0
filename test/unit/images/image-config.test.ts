// The image config blob: what Vessel keeps of it (entrypoint, cmd, env, ...)
// and the diff_ids that later verify unpacked layers.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import { parseEnv, parseImageConfig } from '../../../src/images/image-config.js';

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const blob = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

describe('parseEnv', () => {
  test('splits at the first =, keeps empty values, drops entries with an empty name', () => {
    assert.deepEqual(parseEnv(['A=1', 'B=x=y', 'C', 'D=', '=dropped', 'PATH=/usr/bin:/bin']), {
      A: '1',
      B: 'x=y',
      C: '',
      D: '',
      PATH: '/usr/bin:/bin',
    });
  });

  test('a later entry overrides an earlier one', () => {
    assert.deepEqual(parseEnv(['A=1', 'A=2']), { A: '2' });
  });

  test('empty list', () => {
    assert.deepEqual(parseEnv([]), {});
  });
});

describe('parseImageConfig', () => {
  test('extracts the runtime config, sorted exposed ports and diff_ids', () => {
    const parsed = parseImageConfig(
      blob({
        architecture: 'amd64',
        os: 'linux',
        config: {
          Entrypoint: ['/docker-entrypoint.sh'],
          Cmd: ['nginx', '-g', 'daemon off;'],
          Env: ['PATH=/usr/bin', 'NGINX_VERSION=1.27'],
          WorkingDir: '/srv',
          User: '101:101',
          ExposedPorts: { '80/tcp': {}, '443/tcp': {}, '1000/udp': {} },
        },
        rootfs: { type: 'layers', diff_ids: [d('1'), d('2')] },
      }),
      'cfg',
    );
    assert.deepEqual(parsed, {
      runtime: {
        entrypoint: ['/docker-entrypoint.sh'],
        cmd: ['nginx', '-g', 'daemon off;'],
        env: { PATH: '/usr/bin', NGINX_VERSION: '1.27' },
        working_dir: '/srv',
        user: '101:101',
        exposed_ports: ['1000/udp', '443/tcp', '80/tcp'],
      },
      diffIds: [d('1'), d('2')],
      os: 'linux',
      architecture: 'amd64',
    });
  });

  test('a missing config object gives empty defaults', () => {
    const parsed = parseImageConfig(blob({ rootfs: { diff_ids: [d('3')] } }), 'cfg');
    assert.deepEqual(parsed.runtime, {
      entrypoint: null,
      cmd: null,
      env: {},
      working_dir: null,
      user: null,
      exposed_ports: [],
    });
    assert.deepEqual(parsed.diffIds, [d('3')]);
    assert.equal(parsed.os, undefined);
    assert.equal(parsed.architecture, undefined);
  });

  test('empty strings and wrongly typed fields become null', () => {
    const parsed = parseImageConfig(
      blob({ config: { WorkingDir: '', User: '', Cmd: ['sh', 1], Entrypoint: 'sh', Env: 'A=1' } }),
      'cfg',
    );
    assert.equal(parsed.runtime.working_dir, null);
    assert.equal(parsed.runtime.user, null);
    assert.equal(parsed.runtime.cmd, null);
    assert.equal(parsed.runtime.entrypoint, null);
    assert.deepEqual(parsed.runtime.env, {});
    assert.deepEqual(parsed.diffIds, []);
  });

  test('a bad diff_id is registry_protocol naming it', () => {
    assert.throws(
      () => parseImageConfig(blob({ rootfs: { diff_ids: [d('1'), 'sha256:../../x'] } }), 'cfg'),
      (err) =>
        isVesselError(err, 'registry_protocol') &&
        err.message === 'cfg: diff_id "sha256:../../x" is not a sha256 digest',
    );
  });

  test('invalid JSON is registry_protocol', () => {
    assert.throws(
      () => parseImageConfig(Buffer.from('{"config":'), 'cfg'),
      (err) =>
        isVesselError(err, 'registry_protocol') &&
        /cfg: image config is not valid JSON/.test(err.message),
    );
  });

  test('JSON that is not an object (null) is registry_protocol, not a TypeError', () => {
    assert.throws(
      () => parseImageConfig(Buffer.from('null'), 'cfg'),
      (err) => isVesselError(err, 'registry_protocol'),
    );
  });
});
