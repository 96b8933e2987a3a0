import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { toCreateRequest, toPatch } from '../../../src/api/instance-request.js';
import { checkUnsupported } from '../../../src/api/unsupported.js';
import { CREATE_UNSUPPORTED } from '../../../src/api/instance-request.js';

const NOW = Date.parse('2030-01-01T00:00:00Z');

describe('hypeman request bodies → instance requests', () => {
  test('a hypeman create body', () => {
    const body = {
      name: 'web-1',
      image: 'docker.io/library/nginx:latest',
      size: '2GB',
      overlay_size: '20GB',
      disk_io_bps: '100MB/s',
      vcpus: 2,
      env: { PORT: '3000', NODE_ENV: 'production' },
      tags: { team: 'web' },
      ttl: '24h',
      network: { enabled: true, egress: { enabled: false } },
      hypervisor: 'qemu-microvm' as const,
      skip_guest_agent: false,
      entrypoint: ['/docker-entrypoint.sh'],
      cmd: ['nginx', '-g', 'daemon off;'],
      devices: [],
      restart_policy: { policy: 'never' },
    };
    checkUnsupported(body, CREATE_UNSUPPORTED);
    assert.equal('devices' in body, false, 'no-op values are dropped');
    assert.deepEqual(toCreateRequest(body, NOW), {
      image: 'docker.io/library/nginx:latest',
      name: 'web-1',
      cmd: ['nginx', '-g', 'daemon off;'],
      entrypoint: ['/docker-entrypoint.sh'],
      env: ['PORT=3000', 'NODE_ENV=production'],
      vcpus: 2,
      memory_mib: 2048,
      disk_bytes: 20 * 1024 ** 3,
      disk_io_bps: 100 * 1024 ** 2,
      network: { enabled: true },
      tags: { team: 'web' },
      ttl_ms: 86_400_000,
    });
  });

  test("Vessel's own body is unchanged", () => {
    const body = {
      image: 'alpine',
      env: ['A=1'],
      memory_mib: 256,
      disk_bytes: 1 << 30,
      network: { mode: 'user' as const, egress: true },
      ports: [{ host_port: 8080, guest_port: 80 }],
    };
    assert.deepEqual(toCreateRequest(body, NOW), body);
  });

  test('expires_at is normalised; ttl 0 is no expiry', () => {
    assert.deepEqual(
      toCreateRequest({ image: 'a', expires_at: '2030-01-02T02:00:00+02:00' }, NOW),
      {
        image: 'a',
        expires_at: '2030-01-02T00:00:00.000Z',
      },
    );
    assert.deepEqual(toCreateRequest({ image: 'a', ttl: '0s' }, NOW), { image: 'a', ttl_ms: 0 });
  });

  test('PATCH: env as a map or a list, ttl relative to now, "0s" clears', () => {
    assert.deepEqual(toPatch({ env: { A: 'x=y' }, ttl: '90m' }, NOW), {
      env: { A: 'x=y' },
      expires_at: '2030-01-01T01:30:00.000Z',
    });
    assert.deepEqual(toPatch({ env: ['B=2'], ttl: '0s' }, NOW), {
      env: { B: '2' },
      expires_at: null,
    });
    assert.deepEqual(toPatch({ tags: {} }, NOW), { tags: {} });
  });

  test('disk_io_bps: a rate of at least 1MB/s, "/s" optional; anything else is invalid', () => {
    assert.equal(
      toCreateRequest({ image: 'x', disk_io_bps: '2MB' }, NOW).disk_io_bps,
      2 * 1024 ** 2,
    );
    assert.equal(toCreateRequest({ image: 'x', disk_io_bps: '1GB/s' }, NOW).disk_io_bps, 1024 ** 3);
    for (const bad of ['10KB/s', 'fast', '-1MB/s']) {
      assert.throws(
        () => toCreateRequest({ image: 'x', disk_io_bps: bad }, NOW),
        (e: unknown) => (e as { code?: string }).code === 'invalid_argument',
        bad,
      );
    }
  });
});
