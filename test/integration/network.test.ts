// User-mode networking end to end: a real daemon inside a network namespace this test
// creates (and deletes), real VMs under QEMU (TCG) with the guest program configuring the NIC,
// published TCP and UDP ports reached from inside the namespace, egress and isolation,
// `--network none`, and a taken host port.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isVesselError } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import {
  addOutsideWorld,
  netnsSkipReason,
  type OutsideWorld,
  startNetnsDaemon,
  waitForState,
  type NetnsDaemon,
  until,
} from '../helpers/netns.js';

const why = await netnsSkipReason();

const INDEX = '<h1>served from a vessel microVM</h1>\n';
const HTTP_PORT = 18080;
const UDP_PORT = 15353;
const LOOPBACK_PORT = 17777;

/** A static UDP echo server for the guest (busybox's nc has no UDP here). */
const UDP_ECHO_RS = `
use std::net::UdpSocket;
fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(5353);
    let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = s.recv_from(&mut buf).expect("recv");
        let mut out = b"echo:".to_vec();
        out.extend_from_slice(&buf[..n]);
        let _ = s.send_to(&out, from);
    }
}
`;

async function buildUdpEcho(dir: string): Promise<Buffer | string> {
  const rustc = path.join(os.homedir(), '.cargo/bin/rustc');
  const src = path.join(dir, 'udp_echo.rs');
  const out = path.join(dir, 'udp-echo');
  await fs.writeFile(src, UDP_ECHO_RS);
  for (const bin of [rustc, 'rustc']) {
    try {
      await run(bin, ['-O', '-C', 'target-feature=+crt-static', '-o', out, src], {
        timeoutMs: 120_000,
      });
      return await fs.readFile(out);
    } catch {
      // try the next one
    }
  }
  return 'rustc is not available to build the guest UDP echo server';
}

describe('user-mode networking in a network namespace', { skip: why }, () => {
  let d: NetnsDaemon;
  let image: string;
  let udpEcho: Buffer | string;
  let listener: ChildProcess | undefined;
  let world: OutsideWorld | undefined;
  const tmp = path.join(os.tmpdir(), `vessel-net-test-${process.pid}`);

  const exec = async (id: string, script: string) =>
    d.client.execInstance(id, { argv: ['/bin/sh', '-c', script] });

  before(async () => {
    await fs.mkdir(tmp, { recursive: true });
    udpEcho = await buildUdpEcho(tmp);
    // Root in a namespace could make TAPs; this file tests the rootless fallback.
    d = await startNetnsDaemon({ config: { network: { default_mode: 'user' } } });
    // Egress (passt) needs a route out of the namespace.
    world = await addOutsideWorld(d.ns);
    const spec = await busyboxImage();
    spec.layers.push([
      { path: 'www', type: 'dir' },
      { path: 'www/index.html', content: INDEX },
      ...(typeof udpEcho === 'string'
        ? []
        : [{ path: 'bin/udp-echo', content: udpEcho, mode: 0o755 }]),
    ]);
    const archive = path.join(tmp, 'image.tar');
    await writeDockerArchive(archive, spec, 'net/busybox:1');
    image = (await d.client.importImage(createReadStream(archive))).name;
    await until('image ready', 120_000, async () =>
      (await d.client.getImage(image)).status === 'ready' ? true : undefined,
    );
    // A service on the namespace's loopback: what a guest with egress can reach through 10.0.2.2.
    listener = spawn(
      'ip',
      [
        'netns',
        'exec',
        d.ns.name,
        process.execPath,
        '-e',
        `require('net').createServer((s) => s.end('host-loopback\\n')).listen(${LOOPBACK_PORT}, '127.0.0.1')`,
      ],
      { stdio: 'ignore' },
    );
    // Boot all three VMs at once (TCG boots are slow); the tests then wait for each.
    await d.client.createInstance({
      image,
      name: 'web',
      cmd: ['busybox', 'httpd', '-f', '-p', '80', '-h', '/www'],
      ports: [{ host_port: HTTP_PORT, guest_port: 80 }],
    });
    // UDP forwarding needs egress in user mode (see src/instances/README.md).
    const udp = typeof udpEcho === 'string' ? [] : ['-p', `${UDP_PORT}:5353/udp`];
    const main = typeof udpEcho === 'string' ? ['sleep', '100000'] : ['/bin/udp-echo', '5353'];
    const runs: [string, string[], string[]][] = [
      ['out', ['--egress', ...udp], main],
      ['off', ['--network', 'none'], ['sleep', '100000']],
    ];
    for (const [name, flags, cmd] of runs) {
      const r = await d.cli(['run', '-d', '--name', name, ...flags, image, '--', ...cmd]);
      assert.equal(r.code, 0, r.stderr);
    }
  });

  after(async () => {
    listener?.kill('SIGKILL');
    await d?.close();
    await world?.destroy();
    await fs.rm(tmp, { recursive: true, force: true });
  });

  test('a published TCP port reaches httpd in the guest; the guest has its address, route and hosts', async () => {
    const web = await waitForState(d.client, 'web', 'Running');
    assert.deepEqual(web.network, {
      mode: 'user',
      enabled: true,
      name: 'default',
      ip: '10.0.2.15',
      gateway: '10.0.2.2',
      mac: web.network.mac,
      egress: false,
    });
    assert.match(web.network.mac ?? '', /^52:54:00(:[0-9a-f]{2}){3}$/);
    assert.deepEqual(web.ports, [
      { host_ip: '127.0.0.1', host_port: HTTP_PORT, guest_port: 80, protocol: 'tcp' },
    ]);
    const page = await until('an HTTP answer through the published port', 60_000, async () => {
      const r = await d.ns.exec('busybox', ['wget', '-qO-', `http://127.0.0.1:${HTTP_PORT}/`], {
        allowFailure: true,
      });
      return r.code === 0 ? r.stdout : undefined;
    });
    assert.equal(page, INDEX);

    const addr = await exec('web', 'busybox ip -4 addr show; busybox ip link show');
    assert.match(addr.stdout, /inet 10\.0\.2\.15\/24 /);
    assert.match(addr.stdout, new RegExp(`link/ether ${web.network.mac}`));
    assert.match(addr.stdout, /lo: <LOOPBACK,UP/);
    // Default route: destination 0, gateway 10.0.2.2 (little-endian hex in /proc/net/route).
    const route = await exec('web', 'cat /proc/net/route');
    assert.match(route.stdout, /^\w+\s+00000000\s+0202000A\s+0003\s/m);
    const hosts = await exec('web', 'cat /etc/hosts');
    assert.match(hosts.stdout, /^127\.0\.0\.1\tlocalhost$/m);
    assert.match(hosts.stdout, /^10\.0\.2\.15\tweb$/m);
    // No egress: no nameserver is written (the image has none) ...
    assert.equal((await exec('web', 'test -e /etc/resolv.conf')).exit_code, 1);
    // ... and the gateway does not lead to the host's loopback services.
    const nc = await exec('web', `busybox nc -w 5 10.0.2.2 ${LOOPBACK_PORT} </dev/null`);
    assert.notEqual(nc.exit_code, 0);
    assert.doesNotMatch(nc.stdout, /host-loopback/);

    const ps = await d.cli(['ps']);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(
      ps.stdout,
      new RegExp(`^\\w+\\s+web\\s.*127\\.0\\.0\\.1:${HTTP_PORT}->80/tcp$`, 'm'),
    );
    // vessel-init's own messages are on the console, not in the command's output.
    const con = await fs.readFile(path.join(d.dataDir, 'instances', web.id, 'console.log'), 'utf8');
    assert.match(con, /network: \w+ up \(10\.0\.2\.15\/24\)/);
  });

  test('a published UDP port (with egress) reaches a UDP server in the guest', async (t) => {
    if (typeof udpEcho === 'string') return t.skip(udpEcho);
    const out = await waitForState(d.client, 'out', 'Running');
    assert.deepEqual(out.ports, [
      { host_ip: '127.0.0.1', host_port: UDP_PORT, guest_port: 5353, protocol: 'udp' },
    ]);
    const client = `
      const s = require('dgram').createSocket('udp4');
      let n = 0;
      const send = () => { if (n++ > 40) process.exit(3); s.send('ping', ${UDP_PORT}, '127.0.0.1'); };
      s.on('message', (m) => { console.log(m.toString()); process.exit(0); });
      send(); setInterval(send, 500);`;
    const r = await d.ns.exec(process.execPath, ['-e', client], { timeoutMs: 60_000 });
    assert.equal(r.stdout.trim(), 'echo:ping');
  });

  test('a host port already in use is a port_in_use conflict naming it, and boots nothing', async () => {
    await waitForState(d.client, 'web', 'Running');
    await assert.rejects(
      d.client.createInstance({
        image,
        name: 'clash',
        cmd: ['sleep', '100'],
        ports: [{ host_port: HTTP_PORT, guest_port: 8080 }],
      }),
      (err) =>
        isVesselError(err, 'port_in_use') &&
        err.kind === 'Conflict' &&
        err.message.includes(`127.0.0.1:${HTTP_PORT}/tcp is already in use`),
    );
    const clash = (await d.client.listInstances()).find((i) => i.name === 'clash');
    assert.ok(clash === undefined || clash.pid === null, 'no VM runs for the refused instance');
    // The CLI: exit code 5 (conflict) with the port in the message.
    const r = await d.cli(['run', '-d', '-p', `${HTTP_PORT}:80`, image, '--', 'sleep', '1']);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, new RegExp(`${HTTP_PORT}/tcp is already in use`));
    // UDP without egress is refused up front, naming the port.
    const noEgress = await d.cli(['run', '-d', '-p', '5300:53/udp', image, '--', 'sleep', '1']);
    assert.equal(noEgress.code, 2, noEgress.stderr);
    assert.match(noEgress.stderr, /127\.0\.0\.1:5300->53\/udp\) needs network\.egress/);
    // Bad -p values never reach the daemon.
    const bad = await d.cli(['run', '-d', '-p', '80', image]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /-p "80"/);
  });

  test('--egress: the DNS server is in resolv.conf and the gateway is not the host loopback', async () => {
    const out = await waitForState(d.client, 'out', 'Running');
    assert.equal(out.network.mode, 'user');
    assert.equal(out.network.egress, true);
    const resolv = await exec('out', 'cat /etc/resolv.conf');
    assert.match(resolv.stdout, /^nameserver 10\.0\.2\.3$/m);
    // QEMU's slirp would forward 10.0.2.2 to the host's 127.0.0.1 (here, the namespace's);
    // passt does not, and the egress guard refuses the real 10.0.2.2 too.
    const nc = await exec('out', `busybox nc -w 5 10.0.2.2 ${LOOPBACK_PORT} </dev/null; true`);
    assert.doesNotMatch(nc.stdout, /host-loopback/);
  });

  test('--network none: only lo, no ports', async () => {
    const off = await waitForState(d.client, 'off', 'Running');
    assert.deepEqual(off.network, {
      mode: 'none',
      enabled: false,
      ip: null,
      gateway: null,
      mac: null,
      egress: false,
    });
    assert.deepEqual(off.ports, []);
    const links = await exec('off', 'ls /sys/class/net');
    assert.deepEqual(links.stdout.split(/\s+/).filter(Boolean), ['lo']);
    const lo = await exec('off', 'busybox ip -4 addr show lo');
    assert.match(lo.stdout, /inet 127\.0\.0\.1\/8/);
    const hosts = await exec('off', 'cat /etc/hosts');
    assert.match(hosts.stdout, /^127\.0\.1\.1\toff$/m);
  });
});
