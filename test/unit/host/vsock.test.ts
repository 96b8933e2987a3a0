// The vsock doctor check: the probe against real paths (a missing path, a regular
// file, a character device that opens read-write), and the judgement, which always
// says the agent channel is virtio-serial.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { vsockCheck } from '../../../src/host/checks.js';
import { inspectVhostVsock } from '../../../src/host/vsock.js';

describe('vsock check', () => {
  test('probe: missing, not a character device, usable', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-vsock-'));
    try {
      assert.deepEqual(await inspectVhostVsock(path.join(dir, 'vhost-vsock')), { present: false });
      const file = path.join(dir, 'file');
      await fs.writeFile(file, '');
      assert.deepEqual(await inspectVhostVsock(file), {
        present: true,
        problem: `${file} is not a character device`,
      });
      // /dev/null stands in for a character device that opens read-write.
      assert.deepEqual(await inspectVhostVsock('/dev/null'), { present: true });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  test('judgement: always ok, always names virtio-serial as the channel', () => {
    const absent = vsockCheck({ present: false });
    assert.equal(absent.status, 'ok');
    assert.equal(absent.id, 'vsock');
    assert.match(absent.detail, /^\/dev\/vhost-vsock does not exist/);
    assert.match(absent.detail, /not needed: Vessel uses a virtio-serial port/);
    const broken = vsockCheck({ present: true, problem: '/dev/vhost-vsock cannot be opened' });
    assert.equal(broken.status, 'ok');
    assert.match(broken.detail, /^\/dev\/vhost-vsock cannot be opened; not needed: /);
    const usable = vsockCheck({ present: true });
    assert.equal(usable.status, 'ok');
    assert.match(
      usable.detail,
      /usable, but QEMU offers no hybrid vsock: Vessel uses a virtio-serial/,
    );
    for (const c of [absent, broken, usable]) assert.equal(c.fix, undefined);
  });

  test('this host: the probe agrees with the device node', async () => {
    const state = await inspectVhostVsock();
    const check = vsockCheck(state);
    console.log(`# this host: ${check.detail}`);
    let exists = true;
    try {
      await fs.access('/dev/vhost-vsock');
    } catch {
      exists = false;
    }
    assert.equal(state.present, exists);
  });
});
