import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isVesselError } from '../../../src/core/errors.js';
import {
  intToIp,
  ipToInt,
  isGuestAddress,
  nextFreeAddress,
  parseSubnet,
} from '../../../src/network/subnet.js';

test('parseSubnet: gateway is the first address, capacity excludes network, gateway, broadcast', () => {
  const s = parseSubnet('10.88.0.0/16');
  assert.equal(s.gateway, '10.88.0.1');
  assert.equal(s.prefix, 16);
  assert.equal(s.capacity, 65536 - 3);
  assert.equal(intToIp(ipToInt('192.168.7.9')), '192.168.7.9');
  assert.equal(parseSubnet('172.30.0.0/30').capacity, 1);
});

test('parseSubnet rejects malformed subnets and host bits with a clear invalid_config', () => {
  for (const bad of ['10.88.0.0', '10.88.0.0/31', '10.88.0.0/7', '300.1.1.0/24', 'x/24']) {
    assert.throws(
      () => parseSubnet(bad),
      (e) => isVesselError(e) && e.code === 'invalid_config' && e.message.includes(bad),
    );
  }
  assert.throws(
    () => parseSubnet('10.88.0.5/24'),
    (e) => isVesselError(e) && /did you mean 10\.88\.0\.0\/24/.test(e.message),
  );
});

test('isGuestAddress excludes network, gateway, broadcast and foreign addresses', () => {
  const s = parseSubnet('10.0.0.0/24');
  assert.equal(isGuestAddress(s, '10.0.0.0'), false);
  assert.equal(isGuestAddress(s, '10.0.0.1'), false);
  assert.equal(isGuestAddress(s, '10.0.0.2'), true);
  assert.equal(isGuestAddress(s, '10.0.0.254'), true);
  assert.equal(isGuestAddress(s, '10.0.0.255'), false);
  assert.equal(isGuestAddress(s, '10.0.1.2'), false);
});

test('allocation is round robin, skips used addresses, and wraps', () => {
  const s = parseSubnet('10.0.0.0/29'); // guests .2 .. .6
  assert.equal(nextFreeAddress(s, new Set()), '10.0.0.2');
  assert.equal(nextFreeAddress(s, new Set(['10.0.0.2', '10.0.0.3'])), '10.0.0.4');
  assert.equal(nextFreeAddress(s, new Set(), '10.0.0.2'), '10.0.0.3');
  assert.equal(nextFreeAddress(s, new Set(['10.0.0.2']), '10.0.0.6'), '10.0.0.3');
});

test('exhaustion is network_exhausted naming the subnet; a released address is reused', () => {
  const s = parseSubnet('10.0.0.0/29');
  const used = new Set<string>();
  let last: string | null = null;
  for (let i = 0; i < s.capacity; i++) {
    last = nextFreeAddress(s, used, last);
    used.add(last);
  }
  assert.equal(used.size, 5);
  assert.throws(
    () => nextFreeAddress(s, used, last),
    (e) =>
      isVesselError(e) &&
      e.code === 'network_exhausted' &&
      e.message.includes('10.0.0.0/29') &&
      e.message.includes('all 5'),
  );
  used.delete('10.0.0.4');
  assert.equal(nextFreeAddress(s, used, last), '10.0.0.4');
});
