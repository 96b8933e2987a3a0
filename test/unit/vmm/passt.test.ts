import { test } from 'node:test';
import assert from 'node:assert/strict';
import { passtArgs, passtFiles } from '../../../src/vmm/passt.js';

const spec = { qmpSocket: '/data/instances/x/vmm/qmp.sock' };

test('passt: the gateway is never the host, IPv4 only, fixed addressing, its files in the run dir', () => {
  const args = passtArgs(spec, [], '192.0.2.53');
  const value = (flag: string): string | undefined => args[args.indexOf(flag) + 1];
  assert.ok(args.includes('--no-map-gw'), 'unguarded: the gateway is not the host');
  // Guarded, the mapping stays (published ports from loopback need it; the guard refuses
  // the host).
  assert.ok(!passtArgs(spec, [], '192.0.2.53', true).includes('--no-map-gw'));
  assert.ok(args.includes('--one-off'), 'quits with its VMM');
  assert.ok(args.includes('--ipv4-only'));
  assert.equal(value('--address'), '10.0.2.15');
  assert.equal(value('--gateway'), '10.0.2.2');
  assert.equal(value('--dns-forward'), '10.0.2.3');
  assert.equal(value('--dns'), '192.0.2.53'); // given: a jailed passt has no resolv.conf
  assert.equal(value('--socket'), '/data/instances/x/vmm/passt.sock');
  assert.equal(value('--socket'), passtFiles(spec).socket);
  // No published ports: none in either protocol (passt would mirror TCP ports in UDP).
  assert.equal(value('--tcp-ports'), 'none');
  assert.equal(value('--udp-ports'), 'none');
  // No host resolver: no DNS at all rather than one read from a file passt cannot see.
  const none = passtArgs(spec, [], undefined);
  assert.equal(none[none.indexOf('--dns') + 1], 'none');
  assert.ok(!none.includes('--dns-forward'));
});

test('passt: published ports per protocol with their host address', () => {
  const args = passtArgs(
    spec,
    [
      { protocol: 'tcp', hostIp: '127.0.0.1', hostPort: 18080, guestPort: 80 },
      { protocol: 'udp', hostIp: '0.0.0.0', hostPort: 5353, guestPort: 53 },
      { protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 2222, guestPort: 22 },
    ],
    undefined,
  );
  assert.equal(args[args.indexOf('--tcp-ports') + 1], '127.0.0.1/18080:80,0.0.0.0/2222:22');
  assert.equal(args[args.indexOf('--udp-ports') + 1], '0.0.0.0/5353:53');
});
