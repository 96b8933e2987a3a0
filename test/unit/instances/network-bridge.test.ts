// Mode choice and the guest/host records of bridge mode (pure parts of network-bridge.ts),
// against a real BridgeProvider-shaped context whose setup state is given.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isVesselError } from '../../../src/core/errors.js';
import { parseSubnet } from '../../../src/network/index.js';
import {
  chooseBridge,
  withAddress,
  type BridgeContext,
} from '../../../src/instances/network-bridge.js';
import { networkView, resolveNetwork, withNetwork } from '../../../src/instances/network.js';

function ctx(
  problem: string | null,
  defaultMode: BridgeContext['defaultMode'] = 'auto',
): BridgeContext {
  return {
    defaultMode,
    subnet: parseSubnet('10.88.0.0/16'),
    problem: () => problem,
    current: () => undefined,
    ensure: () => Promise.reject(new Error('not in this test')),
  };
}

describe('bridge mode choice', () => {
  test('auto: bridge when the host can, user otherwise; explicit user stays user', () => {
    assert.equal(chooseBridge({ ports: [] }, ctx(null))?.gateway, '10.88.0.1');
    assert.equal(chooseBridge({}, ctx('no /dev/net/tun')), null);
    assert.equal(chooseBridge({ network: { mode: 'user' } }, ctx(null)), null);
    assert.equal(chooseBridge({}, ctx(null, 'user')), null);
    assert.equal(chooseBridge({}, undefined), null, 'no provider: user mode');
  });

  test('bridge asked for where it cannot work is network_unavailable with the reason', () => {
    for (const req of [{ network: { mode: 'bridge' as const } }, { network: { name: 'grp' } }]) {
      assert.throws(
        () => chooseBridge(req, ctx('the daemon lacks CAP_NET_ADMIN')),
        (e) => isVesselError(e, 'network_unavailable') && e.message.includes('CAP_NET_ADMIN'),
      );
    }
    assert.throws(
      () => chooseBridge({}, ctx('no tun', 'bridge')),
      (e) => isVesselError(e, 'network_unavailable'),
    );
    assert.throws(
      () => chooseBridge({ network: { mode: 'user', name: 'g' } }, ctx(null)),
      (e) => isVesselError(e, 'invalid_argument') && e.message.includes('bridge'),
    );
  });
});

describe('bridge mode records', () => {
  const base = { argv: ['sleep'], env: [], workdir: '/', user: '0:0', hostname: 'x' };

  test('networking stays off unless asked for, also where bridge mode is available', () => {
    assert.equal(resolveNetwork('a1b2c3d4e5f60718', {}, ctx(null)).host.mode, 'none');
    assert.equal(
      resolveNetwork('a1b2c3d4e5f60718', { network: { mode: 'none' } }, ctx(null)).host.mode,
      'none',
    );
    assert.throws(
      () => resolveNetwork('x', { network: { mode: 'bridge', enabled: false } }, ctx(null)),
      (e) => isVesselError(e, 'invalid_argument'),
    );
  });

  test('guest section and host record: gateway as nameserver, address filled in the reservation', () => {
    const r = resolveNetwork(
      'a1b2c3d4e5f60718',
      { network: { name: 'grp', egress: true }, ports: [{ host_port: 8080, guest_port: 80 }] },
      ctx(null),
    );
    assert.equal(r.host.mode, 'bridge');
    assert.equal(r.host.group, 'grp');
    assert.equal(r.host.ip, null);
    assert.deepEqual(r.guest.nameservers, ['10.88.0.1']);
    const done = withAddress(r, '10.88.0.7');
    assert.deepEqual(done.guest.interfaces, [
      { mac: r.host.mac, address: '10.88.0.7', prefix: 16, gateway: '10.88.0.1', mtu: 1500 },
    ]);
    const view = networkView(withNetwork(base as never, done));
    assert.deepEqual(view.network, {
      mode: 'bridge',
      enabled: true,
      name: 'grp',
      ip: '10.88.0.7',
      gateway: '10.88.0.1',
      mac: r.host.mac,
      egress: true,
      group: 'grp',
    });
    assert.deepEqual(view.ports, [
      { host_ip: '127.0.0.1', host_port: 8080, guest_port: 80, protocol: 'tcp' },
    ]);
  });

  test('UDP publishing needs no egress in bridge mode (the proxy relays replies)', () => {
    const r = resolveNetwork(
      'x',
      {
        network: { mode: 'bridge' },
        ports: [{ host_port: 5353, guest_port: 53, protocol: 'udp' }],
      },
      ctx(null),
    );
    assert.equal(r.host.mode, 'bridge');
    assert.equal(r.host.egress, false);
  });
});
