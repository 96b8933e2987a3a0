// The instance network: request → guest config section, host record, VMM NIC; host-port checks
// against real sockets on loopback.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import type { GuestConfig } from '../../../src/instances/guest-config.js';
import {
  assertPortsFree,
  guestDiskConfig,
  macFor,
  networkView,
  normalizePorts,
  resolveNetwork,
  rethrowStartFailure,
  vmNet,
  withNetwork,
} from '../../../src/instances/network.js';

const base: GuestConfig = {
  version: 1,
  mode: 'exec',
  entrypoint: [],
  cmd: ['sh'],
  env: [],
  workdir: '/',
  user: '0:0',
  hostname: 'web',
  root_device_serial: 'vessel-root',
  overlay_device_serial: 'vessel-overlay',
  control_port: 'vessel.control',
};

function stored(req: Parameters<typeof resolveNetwork>[1], id = 'a1b2c3d4e5f60718') {
  return withNetwork(base, resolveNetwork(id, req));
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

describe('resolveNetwork', () => {
  test('enabled: user mode, guest 10.0.2.15/24 via 10.0.2.2, no egress, so no nameserver', () => {
    const r = resolveNetwork('a1b2c3d4e5f60718', { network: { enabled: true } });
    assert.deepEqual(r.guest, {
      interfaces: [
        {
          mac: macFor('a1b2c3d4e5f60718'),
          address: '10.0.2.15',
          prefix: 24,
          gateway: '10.0.2.2',
          mtu: 1500,
        },
      ],
      nameservers: [],
    });
    assert.deepEqual(r.host, {
      mode: 'user',
      egress: false,
      mac: macFor('a1b2c3d4e5f60718'),
      ports: [],
    });
  });

  test('egress adds the user-mode DNS server', () => {
    const r = resolveNetwork('x', { network: { egress: true } });
    assert.deepEqual(r.guest.nameservers, ['10.0.2.3']);
    assert.equal(r.host.egress, true);
  });

  test('the default: enabled when a port is published or egress asked for, else none', () => {
    assert.equal(resolveNetwork('x', {}).host.mode, 'none');
    assert.equal(resolveNetwork('x', { network: {} }).host.mode, 'none');
    assert.equal(resolveNetwork('x', { network: { egress: false } }).host.mode, 'none');
    assert.equal(resolveNetwork('x', { network: { egress: true } }).host.mode, 'user');
    const published = resolveNetwork('x', { ports: [{ host_port: 8080, guest_port: 80 }] });
    assert.equal(published.host.mode, 'user');
    assert.equal(published.host.egress, false);
  });

  test('disabled: loopback only, and no ports or egress with it', () => {
    const r = resolveNetwork('x', { network: { enabled: false } });
    assert.deepEqual(r.guest, { interfaces: [], nameservers: [] });
    assert.deepEqual(r.host, { mode: 'none', egress: false, mac: null, ports: [] });
    for (const req of [
      { network: { enabled: false }, ports: [{ host_port: 8080, guest_port: 80 }] },
      { network: { enabled: false, egress: true } },
    ]) {
      assert.throws(
        () => resolveNetwork('x', req),
        (err) => isVesselError(err, 'invalid_argument'),
      );
    }
  });

  test('a UDP port needs egress (isolated user mode drops the guest UDP replies)', () => {
    const udp = [{ host_port: 5353, guest_port: 53, protocol: 'udp' as const }];
    assert.throws(
      () => resolveNetwork('x', { ports: udp }),
      (err) =>
        isVesselError(err, 'invalid_argument') &&
        err.message.includes('127.0.0.1:5353->53/udp') &&
        err.message.includes('egress'),
    );
    const ok = resolveNetwork('x', { ports: udp, network: { egress: true } });
    assert.deepEqual(vmNet(withNetwork(base, ok))?.isolated, false);
  });

  test('MACs are stable per id, distinct across ids, in 52:54:00', () => {
    assert.equal(macFor('abc'), macFor('abc'));
    assert.notEqual(macFor('abc'), macFor('abd'));
    assert.match(macFor('abc'), /^52:54:00(:[0-9a-f]{2}){3}$/);
  });
});

describe('normalizePorts', () => {
  test('defaults tcp and 127.0.0.1', () => {
    assert.deepEqual(
      normalizePorts([
        { host_port: 8080, guest_port: 80 },
        { host_port: 8080, guest_port: 80, protocol: 'udp', host_ip: '0.0.0.0' },
      ]),
      [
        { host_ip: '127.0.0.1', host_port: 8080, guest_port: 80, protocol: 'tcp' },
        { host_ip: '0.0.0.0', host_port: 8080, guest_port: 80, protocol: 'udp' },
      ],
    );
  });

  test('out of range, non-IPv4 and duplicate host ports are invalid_argument naming the port', () => {
    const cases: [Parameters<typeof normalizePorts>[0], RegExp][] = [
      [[{ host_port: 0, guest_port: 80 }], /host_port 0/],
      [[{ host_port: 80, guest_port: 70000 }], /guest_port 70000/],
      [[{ host_port: 80, guest_port: 1.5 }], /guest_port 1.5/],
      [[{ host_port: 80, guest_port: 80, host_ip: '::1' }], /"::1" must be an IPv4/],
      [[{ host_port: 80, guest_port: 80, host_ip: '300.1.1.1' }], /"300.1.1.1"/],
      [
        [
          { host_port: 8080, guest_port: 80 },
          { host_port: 8080, guest_port: 81, host_ip: '0.0.0.0' },
        ],
        /host port 8080\/tcp is published twice \(127.0.0.1:8080->80\/tcp and 0.0.0.0:8080->81\/tcp\)/,
      ],
    ];
    for (const [ports, want] of cases) {
      assert.throws(
        () => normalizePorts(ports),
        (err) => isVesselError(err, 'invalid_argument') && want.test(err.message),
        JSON.stringify(ports),
      );
    }
  });
});

describe('stored config, disk config, view and VMM NIC', () => {
  test('the config disk gets the guest section but never the host record', () => {
    const s = stored({ ports: [{ host_port: 18080, guest_port: 80 }] });
    const disk = guestDiskConfig(s) as unknown as Record<string, unknown>;
    assert.equal(disk.host_network, undefined);
    assert.deepEqual(
      disk.network,
      resolveNetwork('a1b2c3d4e5f60718', { network: { enabled: true } }).guest,
    );
    assert.equal(disk.hostname, 'web');
    assert.ok(JSON.stringify(s).includes('18080'));
    assert.ok(!JSON.stringify(disk).includes('18080'));
  });

  test('view and NIC from the host record; rows from before networking read as none', () => {
    const s = stored({
      network: { egress: true },
      ports: [{ host_port: 18080, guest_port: 80 }],
    });
    assert.deepEqual(networkView(s), {
      network: {
        mode: 'user',
        enabled: true,
        name: 'default',
        ip: '10.0.2.15',
        gateway: '10.0.2.2',
        mac: macFor('a1b2c3d4e5f60718'),
        egress: true,
      },
      ports: [{ host_ip: '127.0.0.1', host_port: 18080, guest_port: 80, protocol: 'tcp' }],
    });
    assert.deepEqual(vmNet(s), {
      mode: 'user',
      mac: macFor('a1b2c3d4e5f60718'),
      // Egress goes through passt: slirp would map 10.0.2.2 to the host's loopback.
      stack: 'passt',
      isolated: false,
      forwards: [{ protocol: 'tcp', hostIp: '127.0.0.1', hostPort: 18080, guestPort: 80 }],
    });
    assert.equal(vmNet(stored({ network: { enabled: true } }))?.isolated, true);
    assert.equal(vmNet(stored({ network: { enabled: true } }))?.stack, 'slirp');
    assert.equal(vmNet(stored({})), undefined);
    const legacy = { ...base } as unknown as Record<string, unknown>;
    assert.equal(vmNet(legacy), undefined);
    assert.deepEqual(networkView(legacy), {
      network: { mode: 'none', enabled: false, ip: null, gateway: null, mac: null, egress: false },
      ports: [],
    });
    assert.equal(vmNet(stored({ network: { enabled: false } })), undefined);
  });
});

describe('host port checks (real sockets on loopback)', () => {
  test('free ports pass; a TCP port someone listens on is a port_in_use conflict naming it', async () => {
    const port = await freePort();
    await assertPortsFree('web', stored({ ports: [{ host_port: port, guest_port: 80 }] }));
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(port, '127.0.0.1', r));
    try {
      await assert.rejects(
        assertPortsFree('web', stored({ ports: [{ host_port: port, guest_port: 80 }] })),
        (err) =>
          isVesselError(err, 'port_in_use') &&
          err.kind === 'Conflict' &&
          err.message.includes(`127.0.0.1:${port}/tcp is already in use`) &&
          err.message.includes('"web"') &&
          err.details?.host_port === port,
      );
      // The port was free when checked but the VMM lost the race: the start failure becomes the conflict.
      const vmmFailure = new Error('QEMU exited');
      await assert.rejects(
        rethrowStartFailure(
          'web',
          stored({ ports: [{ host_port: port, guest_port: 80 }] }),
          vmmFailure,
        ),
        (err) => isVesselError(err, 'port_in_use') && err.cause === vmmFailure,
      );
    } finally {
      await new Promise((r) => holder.close(r));
    }
    // With every port free again, the original failure comes through.
    await assert.rejects(
      rethrowStartFailure(
        'web',
        stored({ ports: [{ host_port: port, guest_port: 80 }] }),
        new Error('boom'),
      ),
      (err) => isVesselError(err, 'internal') && /boom/.test(err.message),
    );
  });

  test('a bound UDP port is port_in_use too; TCP on that number is checked on its own', async () => {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    const { port } = sock.address();
    try {
      await assert.rejects(
        assertPortsFree(
          'dns',
          stored({
            network: { egress: true },
            ports: [{ host_port: port, guest_port: 53, protocol: 'udp' }],
          }),
        ),
        (err) => isVesselError(err, 'port_in_use') && err.message.includes(`${port}/udp`),
      );
      // UDP and TCP ports are separate: the check for TCP agrees with a plain bind.
      const tcpFree = await new Promise<boolean>((resolve) => {
        const s = net.createServer();
        s.once('error', () => resolve(false));
        s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
      });
      const tcp = stored({ ports: [{ host_port: port, guest_port: 53 }] });
      if (tcpFree) await assertPortsFree('dns', tcp);
      else
        await assert.rejects(assertPortsFree('dns', tcp), (e) => isVesselError(e, 'port_in_use'));
    } finally {
      sock.close();
    }
  });

  test('an address that is not on this host is invalid_argument (bind only, nothing is sent)', async () => {
    await assert.rejects(
      assertPortsFree(
        'web',
        stored({ ports: [{ host_port: await freePort(), guest_port: 80, host_ip: '192.0.2.1' }] }),
      ),
      (err) => isVesselError(err, 'invalid_argument') && err.message.includes('192.0.2.1'),
    );
  });
});
