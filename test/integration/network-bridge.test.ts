// Bridge (TAP) networking end to end: a real daemon inside a network namespace this test
// creates, a second namespace joined by a veth pair acting as "the internet" (reachable
// from guests only through the daemon namespace's NAT), real VMs under QEMU (TCG).
// Proves: NAT egress, isolation by default and sharing within a network group, a
// published port served by the guest's httpd, no guest access to the host, and 50
// create/delete cycles leaving no TAP, address, nft element or row behind.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/core/process.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import {
  createNetns,
  startNetnsDaemon,
  waitForState,
  type Netns,
  type NetnsDaemon,
  until,
  bridgeSkipReason,
} from '../helpers/netns.js';
import { startDaemon } from '../helpers/vm-daemon.js';

const why = await bridgeSkipReason();

const INDEX = '<h1>bridge mode guest</h1>\n';
const OUTSIDE = 'hello from the outside namespace\n';
const HTTP_PORT = 18081;
const HOST_LISTEN_PORT = 17778;
const SUBNET = '10.77.0.0/24';
const GATEWAY = '10.77.0.1';
const INET_IP = '198.18.0.2';

describe('bridge networking in a network namespace', { skip: why }, () => {
  let d: NetnsDaemon;
  let inet: Netns;
  let image: string;
  let listener: ChildProcess | undefined;
  let daemonLog = '';
  /** The restart test stopped `d` itself (its client is closed). */
  let restarted = false;
  const tmp = path.join(os.tmpdir(), `vessel-bridge-test-${process.pid}`);
  const exec = (id: string, script: string) =>
    d.client.execInstance(id, { argv: ['/bin/sh', '-c', script] });
  const inNs = (file: string, args: string[]) => d.ns.exec(file, args, { allowFailure: true });
  // busybox wget segfaults in the guest (static NSS lookups); a raw request through nc does not.
  const httpGet = (id: string, host: string, port = 80, wait = 10) =>
    exec(id, `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w ${wait} ${host} ${port}`);

  before(async () => {
    await fs.mkdir(path.join(tmp, 'www'), { recursive: true });
    await fs.writeFile(path.join(tmp, 'www', 'index.html'), OUTSIDE);
    d = await startNetnsDaemon({
      config: { network: { subnet: SUBNET, tap_pool_size: 2, default_mode: 'auto' } },
    });
    d.child.stderr?.on(
      'data',
      (b: Buffer) => (daemonLog = (daemonLog + b.toString()).slice(-20_000)),
    );
    // "The internet": a second namespace, reachable from the daemon's over a veth pair.
    // It has no route to the guest subnet, so only NATed guest traffic gets answers.
    inet = await createNetns();
    await run('ip', [
      '-n',
      d.ns.name,
      'link',
      'add',
      'vup',
      'type',
      'veth',
      'peer',
      'name',
      'vinet',
      'netns',
      inet.name,
    ]);
    await run('ip', ['-n', d.ns.name, 'addr', 'add', '198.18.0.1/24', 'dev', 'vup']);
    await run('ip', ['-n', d.ns.name, 'link', 'set', 'vup', 'up']);
    await run('ip', ['-n', inet.name, 'addr', 'add', `${INET_IP}/24`, 'dev', 'vinet']);
    await run('ip', ['-n', inet.name, 'link', 'set', 'vinet', 'up']);
    spawn(
      'ip',
      [
        'netns',
        'exec',
        inet.name,
        'busybox',
        'httpd',
        '-f',
        '-p',
        `${INET_IP}:8000`,
        '-h',
        path.join(tmp, 'www'),
      ],
      { stdio: 'ignore' },
    );
    // A service on every address of the daemon's namespace (the gateway included).
    listener = spawn(
      'ip',
      [
        'netns',
        'exec',
        d.ns.name,
        process.execPath,
        '-e',
        `require('net').createServer((s) => s.end('host-service\\n')).listen(${HOST_LISTEN_PORT}, '0.0.0.0')`,
      ],
      { stdio: 'ignore' },
    );

    const spec = await busyboxImage();
    spec.layers.push([
      { path: 'www', type: 'dir' },
      { path: 'www/index.html', content: INDEX },
    ]);
    const archive = path.join(tmp, 'image.tar');
    await writeDockerArchive(archive, spec, 'net/busybox:bridge');
    image = (await d.client.importImage(createReadStream(archive))).name;
    await until('image ready', 120_000, async () =>
      (await d.client.getImage(image)).status === 'ready' ? true : undefined,
    );
    const httpd = ['busybox', 'httpd', '-f', '-p', '80', '-h', '/www'];
    await d.client.createInstance({
      image,
      name: 'web',
      cmd: httpd,
      ports: [{ host_port: HTTP_PORT, guest_port: 80 }],
      network: { egress: true },
    });
    await d.client.createInstance({
      image,
      name: 'g1',
      cmd: ['sleep', '100000'],
      network: { name: 'grp' },
    });
    await d.client.createInstance({
      image,
      name: 'g2',
      cmd: httpd,
      network: { mode: 'bridge', name: 'grp' },
    });
  });

  after(async () => {
    listener?.kill('SIGKILL');
    try {
      if (restarted) {
        await d.ns.destroy();
        await fs.rm(d.dataDir, { recursive: true, force: true });
      } else {
        await d?.close();
      }
    } finally {
      await inet?.destroy();
      await fs.rm(tmp, { recursive: true, force: true });
    }
  });

  test('a published port serves the guest httpd; the view and ps show bridge mode', async () => {
    const web = await waitForState(d.client, 'web', 'Running');
    assert.equal(web.network.mode, 'bridge');
    assert.equal(web.network.gateway, GATEWAY);
    assert.match(web.network.ip ?? '', /^10\.77\.0\.\d+$/);
    assert.equal(web.network.egress, true);
    assert.deepEqual(web.ports, [
      { host_ip: '127.0.0.1', host_port: HTTP_PORT, guest_port: 80, protocol: 'tcp' },
    ]);
    const page = await until('an HTTP answer through the published port', 60_000, async () => {
      const r = await inNs('busybox', ['wget', '-qO-', `http://127.0.0.1:${HTTP_PORT}/`]);
      return r.code === 0 ? r.stdout : undefined;
    });
    assert.equal(page, INDEX);
    const addr = await exec('web', 'busybox ip -4 addr show');
    assert.match(addr.stdout, new RegExp(`inet ${web.network.ip?.replace(/\./g, '\\.')}/24 `));
    const ps = await d.cli(['ps']);
    assert.match(ps.stdout, new RegExp(`\\sweb\\s.*127\\.0\\.0\\.1:${HTTP_PORT}->80/tcp`));
  });

  test('NAT egress: the guest reaches a server only routable from the daemon namespace', async () => {
    await waitForState(d.client, 'web', 'Running');
    const r = await httpGet('web', INET_IP, 8000);
    assert.match(r.stdout, /^HTTP\/1\.[01] 200/);
    assert.ok(r.stdout.endsWith(OUTSIDE), r.stdout);
    // Without egress the same request is dropped (g1 has no egress).
    await waitForState(d.client, 'g1', 'Running');
    const denied = await httpGet('g1', INET_IP, 8000, 5);
    assert.doesNotMatch(denied.stdout, /HTTP/);
  });

  test('guests cannot reach the host: a listening service on the gateway is unreachable', async () => {
    await waitForState(d.client, 'web', 'Running');
    // The service answers inside the namespace ...
    const local = await inNs('busybox', ['nc', '-w', '3', GATEWAY, String(HOST_LISTEN_PORT)]);
    assert.equal(local.stdout, 'host-service\n');
    // ... but not to a guest, even one with egress.
    const r = await exec('web', `busybox nc -w 3 ${GATEWAY} ${HOST_LISTEN_PORT} </dev/null`);
    assert.notEqual(r.exit_code, 0);
    assert.doesNotMatch(r.stdout, /host-service/);
    const other = await exec('web', `busybox nc -w 3 198.18.0.1 ${HOST_LISTEN_PORT} </dev/null`);
    assert.doesNotMatch(other.stdout, /host-service/, 'nor through another host address');
  });

  test('isolated by default; members of one network group reach each other', async () => {
    const g2 = await waitForState(d.client, 'g2', 'Running');
    const web = await waitForState(d.client, 'web', 'Running');
    await waitForState(d.client, 'g1', 'Running');
    assert.equal(g2.network.group, 'grp');
    const same = await httpGet('g1', g2.network.ip ?? '');
    assert.ok(same.stdout.endsWith(INDEX), `g1 -> g2: ${same.stdout}${same.stderr}`);
    const cross = await httpGet('web', g2.network.ip ?? '', 80, 5);
    assert.doesNotMatch(cross.stdout, /HTTP/, 'an ungrouped guest cannot reach a grouped one');
    const back = await httpGet('g2', web.network.ip ?? '', 80, 5);
    assert.doesNotMatch(back.stdout, /HTTP/, 'nor the other way');
  });

  test('a stopped instance gives its address back; start takes one again and serves again', async () => {
    await d.client.stopInstance('web', 10);
    const stopped = await d.client.getInstance('web');
    assert.equal(stopped.network.ip ?? null, null, 'no address while no VM runs');
    await d.client.startInstance('web');
    const again = await waitForState(d.client, 'web', 'Running');
    assert.match(again.network.ip ?? '', /^10\.77\.0\.\d+$/);
    const addr = await exec('web', 'busybox ip -4 addr show');
    assert.match(addr.stdout, new RegExp(`inet ${again.network.ip?.replace(/\./g, '\\.')}/24 `));
    const page = await until('the published port after a restart', 60_000, async () => {
      const r = await inNs('busybox', ['wget', '-qO-', `http://127.0.0.1:${HTTP_PORT}/`]);
      return r.code === 0 ? r.stdout : undefined;
    });
    assert.equal(page, INDEX);
  });

  test('50 create/delete cycles leave no TAP beyond the pool, no element, no row', async () => {
    const t0 = Date.now();
    for (let i = 0; i < 50; i++) {
      try {
        const inst = await d.client.createInstance({
          image,
          name: `cyc${i}`,
          cmd: ['sleep', '1000'],
          network: { mode: 'bridge', egress: i % 2 === 0, ...(i % 3 === 0 ? { name: 'grp' } : {}) },
        });
        assert.equal(inst.network.mode, 'bridge');
        await d.client.deleteInstance(inst.id);
      } catch (err) {
        await new Promise((r) => setTimeout(r, 1000)); // the daemon's log lines arrive late
        throw new Error(`cycle ${i} failed: ${String(err)}\ndaemon log:\n${daemonLog}`, {
          cause: err,
        });
      }
    }
    const ms = Date.now() - t0;
    const left = await until('the TAPs settle', 60_000, async () => {
      const links = (await inNs('ip', ['-o', 'link', 'show'])).stdout;
      const taps = [...links.matchAll(/^\d+: (v[tp][0-9a-f]+)[:@]/gm)].map((m) => m[1]);
      const attached = taps.filter((t) => t?.startsWith('vt'));
      const pooled = taps.filter((t) => t?.startsWith('vp'));
      return attached.length === 3 && pooled.length === 2 ? { attached, pooled } : undefined;
    });
    assert.equal(left.attached.length, 3, 'only web, g1 and g2 hold TAPs');
    const names = (await d.client.listInstances()).map((i) => i.name).sort();
    assert.deepEqual(names, ['g1', 'g2', 'web']);
    const egress = (await inNs('nft', ['list', 'set', 'inet', 'vessel', 'egress'])).stdout;
    const ips = [...egress.matchAll(/10\.77\.0\.\d+/g)].map((m) => m[0]);
    const web = await d.client.getInstance('web');
    assert.deepEqual(ips, [web.network.ip], 'only web has egress');
    const peers = (await inNs('nft', ['list', 'set', 'bridge', 'vessel', 'peers'])).stdout;
    assert.equal([...peers.matchAll(/"vt[0-9a-f]+" \. "vt[0-9a-f]+"/g)].length, 2, 'only g1<->g2');
    const addrs = (await inNs('ip', ['-4', '-o', 'addr', 'show'])).stdout;
    assert.equal([...addrs.matchAll(/inet 10\.77\./g)].length, 1, 'only the gateway on the bridge');
    console.log(`# 50 bridge-mode create/delete cycles: ${ms} ms`);
  });

  test('a restarted daemon re-attaches running VMs; the last stop removes the bridge and rules', async () => {
    const web = await d.client.getInstance('web');
    restarted = true;
    await d.stop(); // SIGTERM: the VMs keep running, the network stays for them
    const d2 = await startDaemon(d.dataDir, { netns: d.ns.name });
    try {
      assert.equal((await d2.client.getInstance('web')).state, 'Running');
      const page = await until('the published port after the restart', 60_000, async () => {
        const r = await inNs('busybox', ['wget', '-qO-', `http://127.0.0.1:${HTTP_PORT}/`]);
        return r.code === 0 ? r.stdout : undefined;
      });
      assert.equal(page, INDEX);
      const g2 = await d2.client.getInstance('g2');
      const same = await d2.client.execInstance('g1', {
        argv: [
          '/bin/sh',
          '-c',
          `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 10 ${g2.network.ip} 80`,
        ],
      });
      assert.ok(same.stdout.endsWith(INDEX), `group peers after the restart: ${same.stdout}`);
      const egress = (await inNs('nft', ['list', 'set', 'inet', 'vessel', 'egress'])).stdout;
      assert.deepEqual(
        [...egress.matchAll(/10\.77\.0\.\d+/g)].map((m) => m[0]),
        [web.network.ip],
      );
      const links = (await inNs('ip', ['-o', 'link', 'show'])).stdout;
      assert.equal([...links.matchAll(/^\d+: vt[0-9a-f]+/gm)].length, 3, 'the same three TAPs');
      for (const name of ['web', 'g1', 'g2']) await d2.client.deleteInstance(name);
    } finally {
      await d2.stop();
    }
    // No VM was left on the bridge: the daemon removed what it created.
    assert.notEqual((await inNs('ip', ['link', 'show', 'dev', 'vessel0'])).code, 0);
    const tables = (await inNs('nft', ['list', 'tables'])).stdout;
    // The egress guard (vessel_guard) stays: it keeps user-mode VMs off the host, bridge or not.
    assert.doesNotMatch(tables.replace(/^table inet vessel_guard$/m, ''), /vessel/);
    const links = (await inNs('ip', ['-o', 'link', 'show'])).stdout;
    assert.doesNotMatch(links, /^\d+: v[tp][0-9a-f]+/m);
  });
});
