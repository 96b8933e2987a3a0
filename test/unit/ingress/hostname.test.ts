// Ingress host matching and backend choice: pure functions.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { WireInstance } from '../../../src/core/wire.js';
import { backendFor } from '../../../src/ingress/backend.js';
import { matchHost, normalizeHost, parseHostname } from '../../../src/ingress/hostname.js';
import { endToEndHeaders } from '../../../src/ingress/proxy.js';

describe('ingress hosts', () => {
  test('Host headers lose port, case and trailing dot', () => {
    assert.equal(normalizeHost('Web.Example.COM:8080'), 'web.example.com');
    assert.equal(normalizeHost('web.example.com.'), 'web.example.com');
    assert.equal(normalizeHost('[::1]:80'), '::1');
    assert.equal(normalizeHost(''), undefined);
    assert.equal(normalizeHost(undefined), undefined);
  });

  test('hostnames: exact or one whole {instance} label; anything else is invalid_argument', () => {
    assert.deepEqual(parseHostname('App.Example.com'), {
      hostname: 'app.example.com',
      placeholder: undefined,
    });
    assert.deepEqual(parseHostname('{instance}.example.com'), {
      hostname: '{instance}.example.com',
      placeholder: 0,
    });
    assert.deepEqual(parseHostname('api.{instance}.dev'), {
      hostname: 'api.{instance}.dev',
      placeholder: 1,
    });
    for (const bad of [
      '',
      'a..b',
      '-x.com',
      'x{instance}.com',
      '{instance}.{instance}.com',
      '{instance}',
      'sp ace.com',
      `${'a'.repeat(64)}.com`,
    ]) {
      assert.throws(
        () => parseHostname(bad),
        (err: Error & { code?: string }) => err.code === 'invalid_argument',
        bad,
      );
    }
  });

  test('exact hostnames win over patterns; a pattern yields the matching label', () => {
    const routes = [
      { hostname: '{instance}.example.com', id: 'pattern' },
      { hostname: 'admin.example.com', id: 'exact' },
      { hostname: '{instance}.api.example.com', id: 'deeper' },
    ];
    assert.equal(matchHost(routes, 'admin.example.com')?.route.id, 'exact');
    assert.deepEqual(matchHost(routes, 'web.example.com'), { route: routes[0], label: 'web' });
    assert.deepEqual(matchHost(routes, 'db.api.example.com'), { route: routes[2], label: 'db' });
    assert.equal(matchHost(routes, 'example.com'), undefined);
    assert.equal(matchHost(routes, 'a.b.example.com'), undefined);
    assert.equal(matchHost(routes, 'other.org'), undefined);
  });
});

describe('ingress backends', () => {
  const inst = (
    network: WireInstance['network'],
    ports: WireInstance['ports'] = [],
  ): WireInstance => ({ network, ports }) as unknown as WireInstance;

  test('bridge mode: the guest address and the guest port', () => {
    const i = inst({
      mode: 'bridge',
      enabled: true,
      ip: '10.88.0.5',
      gateway: '10.88.0.1',
      mac: null,
      egress: false,
    });
    assert.deepEqual(backendFor(i, 8080), { host: '10.88.0.5', port: 8080 });
  });

  test('user mode: the published TCP host port of that guest port, or none', () => {
    const i = inst(
      {
        mode: 'user',
        enabled: true,
        ip: '10.0.2.15',
        gateway: '10.0.2.2',
        mac: null,
        egress: false,
      },
      [
        { host_ip: '127.0.0.1', host_port: 18080, guest_port: 80, protocol: 'tcp' },
        { host_ip: '0.0.0.0', host_port: 18443, guest_port: 443, protocol: 'tcp' },
        { host_ip: '127.0.0.1', host_port: 15353, guest_port: 53, protocol: 'udp' },
      ],
    );
    assert.deepEqual(backendFor(i, 80), { host: '127.0.0.1', port: 18080 });
    assert.deepEqual(backendFor(i, 443), { host: '127.0.0.1', port: 18443 });
    assert.equal(backendFor(i, 53), undefined);
    assert.equal(backendFor(i, 22), undefined);
  });

  test('hop-by-hop headers, and those named by Connection, are not forwarded', () => {
    const raw = [
      'Host',
      'a',
      'Connection',
      'keep-alive, X-Secret',
      'X-Secret',
      '1',
      'Keep-Alive',
      't=5',
      'Transfer-Encoding',
      'chunked',
      'X-Ok',
      '2',
      'X-Ok',
      '3',
    ];
    assert.deepEqual(endToEndHeaders(raw), [
      ['Host', 'a'],
      ['X-Ok', '2'],
      ['X-Ok', '3'],
    ]);
  });
});
