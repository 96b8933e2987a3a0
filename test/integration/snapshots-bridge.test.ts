// Forks of one memory snapshot in bridge mode, inside a network namespace this test
// creates: each fork resumes with the source's memory (which holds the source's address,
// MAC and hostname), is told its own identity (RECONFIGURE), and answers on its own address.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Instance } from '../../src/client/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import {
  bridgeSkipReason,
  startNetnsDaemon,
  until,
  waitForState,
  type NetnsDaemon,
} from '../helpers/netns.js';

const why = await bridgeSkipReason();

const SUBNET = '10.79.0.0/24';

describe('forks of a memory snapshot in bridge mode', { skip: why, timeout: 300_000 }, () => {
  let d: NetnsDaemon;
  const tmp = path.join(os.tmpdir(), `vessel-snap-bridge-${process.pid}`);
  const exec = (id: string, script: string) =>
    d.client.execInstance(id, { argv: ['/bin/sh', '-c', script] });
  const httpGet = (id: string, host: string, file: string) =>
    exec(id, `printf 'GET /${file} HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 ${host} 80`);

  before(async () => {
    await fs.mkdir(tmp, { recursive: true });
    d = await startNetnsDaemon({
      config: { network: { subnet: SUBNET, tap_pool_size: 2, default_mode: 'bridge' } },
    });
    const spec = await busyboxImage();
    spec.layers.push([{ path: 'www', type: 'dir' }]);
    const archive = path.join(tmp, 'image.tar');
    await writeDockerArchive(archive, spec, 'snapnet/busybox:1');
    const image = (await d.client.importImage(createReadStream(archive))).name;
    await until('image ready', 120_000, async () =>
      (await d.client.getImage(image)).status === 'ready' ? true : undefined,
    );
    await d.client.createInstance({
      image,
      name: 'web',
      cmd: ['busybox', 'httpd', '-f', '-p', '80', '-h', '/www'],
      network: { mode: 'bridge', name: 'grp' },
      memory_mib: 160,
    });
  });

  after(async () => {
    try {
      await d?.close();
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  });

  test('two forks get their own MAC, address and hostname, and both answer', async () => {
    const c = d.client;
    const web = await waitForState(c, 'web', 'Running');
    assert.equal((await exec('web', 'hostname > /www/who')).exit_code, 0);
    const snap = await c.createSnapshot('web', { kind: 'Standby', name: 'base' });
    const forks: Instance[] = [];
    for (const name of ['n1', 'n2']) forks.push(await c.forkSnapshot(snap.id, { name }));
    const [n1, n2] = forks as [Instance, Instance];
    const ips = [web, n1, n2].map((i) => i.network.ip);
    const macs = [web, n1, n2].map((i) => i.network.mac);
    assert.equal(new Set(ips).size, 3, `addresses ${ips.join(' ')}`);
    assert.equal(new Set(macs).size, 3, `MACs ${macs.join(' ')}`);
    for (const f of [n1, n2]) {
      assert.equal(f.state, 'Running');
      assert.equal(f.network.group, 'grp');
      const ip = f.network.ip!;
      // Inside: the new address (the old one gone), the new MAC, hostname and /etc/hosts.
      const seen = await exec(
        f.id,
        'hostname; busybox ip -4 addr show; busybox ip link show; cat /etc/hosts',
      );
      assert.equal(seen.exit_code, 0, seen.stderr);
      assert.match(seen.stdout, new RegExp(`^${f.name}\\n`));
      assert.match(seen.stdout, new RegExp(`inet ${ip.replace(/\./g, '\\.')}/24 `));
      assert.doesNotMatch(
        seen.stdout,
        new RegExp(`inet ${web.network.ip!.replace(/\./g, '\\.')}/`),
      );
      assert.match(seen.stdout, new RegExp(`link/ether ${f.network.mac!}`));
      assert.match(seen.stdout, new RegExp(`${ip.replace(/\./g, '\\.')}\\s+${f.name}`));
      assert.equal((await exec(f.id, 'hostname > /www/who')).exit_code, 0);
      assert.equal(
        (await exec(f.id, 'busybox ip route')).stdout.includes('default via 10.79.0.1'),
        true,
      );
    }
    // Each answers on its own address with its own hostname (the httpd came along in memory);
    // the source is untouched.
    for (const [probe, target, name] of [
      ['web', n1.network.ip!, 'n1'],
      ['n1', n2.network.ip!, 'n2'],
      ['n2', web.network.ip!, 'web'],
    ] as const) {
      const r = await until(`${probe} → ${name}`, 30_000, async () => {
        const got = await httpGet(probe, target, 'who');
        return /^HTTP\/1\.[01] 200/.test(got.stdout) ? got.stdout : undefined;
      });
      assert.ok(r.endsWith(`${name}\n`), r);
    }
  });

  test('a fork of a Standby instance is no longer refused in bridge mode: its own address', async () => {
    const c = d.client;
    await c.instanceAction('n1', 'standby');
    const n3 = await c.forkInstance('n1', { name: 'n3', target_state: 'Running' });
    assert.equal(n3.state, 'Running');
    assert.notEqual(n3.network.ip, null);
    assert.notEqual(n3.network.mac, (await c.getInstance('n1')).network.mac);
    const seen = await exec(n3.id, 'hostname; busybox ip -4 addr show');
    assert.match(seen.stdout, /^n3\n/);
    assert.match(seen.stdout, new RegExp(`inet ${n3.network.ip!.replace(/\./g, '\\.')}/24 `));
    // The source comes back with its own (kept) address, and both answer.
    const n1 = await c.instanceAction('n1', 'restore');
    assert.notEqual(n1.network.ip, n3.network.ip);
    await exec(n3.id, 'hostname > /www/who');
    const r = await until('n1 → n3', 30_000, async () => {
      const got = await httpGet('n1', n3.network.ip!, 'who');
      return /^HTTP\/1\.[01] 200/.test(got.stdout) ? got.stdout : undefined;
    });
    assert.ok(r.endsWith('n3\n'), r);
  });
});
