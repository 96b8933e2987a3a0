// `vessel run -p/--network/--egress` parsing and the `vessel ps` ports column.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatPorts, networkRequest, parsePublish } from '../../../src/cli/ports.js';
import { isVesselError } from '../../../src/core/errors.js';

describe('parsePublish', () => {
  test('host:guest, ip:host:guest, with /tcp or /udp', () => {
    assert.deepEqual(parsePublish('8080:80'), { host_port: 8080, guest_port: 80, protocol: 'tcp' });
    assert.deepEqual(parsePublish('5353:53/udp'), {
      host_port: 5353,
      guest_port: 53,
      protocol: 'udp',
    });
    assert.deepEqual(parsePublish('0.0.0.0:2222:22/TCP'), {
      host_port: 2222,
      guest_port: 22,
      protocol: 'tcp',
      host_ip: '0.0.0.0',
    });
    assert.deepEqual(parsePublish('127.0.0.1:65535:1'), {
      host_port: 65535,
      guest_port: 1,
      protocol: 'tcp',
      host_ip: '127.0.0.1',
    });
  });

  test('bad specs are invalid_argument errors that quote the spec', () => {
    for (const spec of [
      '80',
      '',
      '1:2:3:4',
      '0:80',
      '8080:65536',
      'http:80',
      '8080:80/sctp',
      '8080:80/',
      '::1:8080:80',
      '256.0.0.1:8080:80',
      'localhost:8080:80',
      '8080:-1',
      '08080x:80',
    ]) {
      assert.throws(
        () => parsePublish(spec),
        (err) => isVesselError(err, 'invalid_argument') && err.message.includes(`"${spec}"`),
        spec,
      );
    }
  });
});

describe('networkRequest', () => {
  test('defaults send nothing (the daemon decides); -p, --network and --egress map to fields', () => {
    assert.deepEqual(networkRequest({ publish: [] }), {});
    assert.deepEqual(networkRequest({ publish: ['8080:80', '53:53/udp'] }), {
      ports: [
        { host_port: 8080, guest_port: 80, protocol: 'tcp' },
        { host_port: 53, guest_port: 53, protocol: 'udp' },
      ],
    });
    assert.deepEqual(networkRequest({ publish: [], network: 'none' }), {
      network: { enabled: false },
    });
    assert.deepEqual(networkRequest({ publish: [], egress: true }), {
      network: { enabled: true, egress: true },
    });
    assert.deepEqual(networkRequest({ publish: [], network: 'user' }), {
      network: { enabled: true, mode: 'user' },
    });
    assert.deepEqual(networkRequest({ publish: [], network: 'bridge', netGroup: 'web' }), {
      network: { enabled: true, mode: 'bridge', name: 'web' },
    });
    assert.deepEqual(networkRequest({ publish: [], netGroup: 'web' }), {
      network: { enabled: true, name: 'web' },
    });
  });

  test('contradictions and unknown modes are refused', () => {
    for (const o of [
      { publish: ['8080:80'], network: 'none' },
      { publish: [], network: 'none', egress: true },
      { publish: [], network: 'tap' },
      { publish: [], network: 'none', netGroup: 'g' },
      { publish: [], network: 'user', netGroup: 'g' },
    ]) {
      assert.throws(
        () => networkRequest(o),
        (err) => isVesselError(err, 'invalid_argument'),
        JSON.stringify(o),
      );
    }
  });
});

test('formatPorts: like docker ps', () => {
  assert.equal(formatPorts([]), '');
  assert.equal(
    formatPorts([
      { host_ip: '127.0.0.1', host_port: 8080, guest_port: 80, protocol: 'tcp' },
      { host_ip: '0.0.0.0', host_port: 5353, guest_port: 53, protocol: 'udp' },
    ]),
    '127.0.0.1:8080->80/tcp, 0.0.0.0:5353->53/udp',
  );
});
