import { test } from 'node:test';
import assert from 'node:assert/strict';
import { networkChecks } from '../../../src/host/checks.js';
import type { NetworkFacts } from '../../../src/host/network-probe.js';

const good: NetworkFacts = {
  netAdmin: true,
  ipTool: true,
  firewall: 'nftables',
  ipForward: true,
  bridge: { name: 'vessel0', exists: false },
};

const byId = (f: NetworkFacts) => new Map(networkChecks(f).map((c) => [c.id, c]));

test('a capable host: bridge, firewall and forwarding are ok', () => {
  const c = byId(good);
  assert.deepEqual([...c.keys()], ['bridge', 'firewall', 'ip-forward']);
  for (const check of c.values()) assert.equal(check.status, 'ok', check.detail);
  assert.match(c.get('bridge')?.detail ?? '', /created on first use/);
});

test('each missing piece warns with a fix, naming the user-mode fallback', () => {
  const noCap = byId({ ...good, netAdmin: false }).get('bridge');
  assert.equal(noCap?.status, 'warn');
  assert.match(noCap?.detail ?? '', /CAP_NET_ADMIN.*user-mode/);
  assert.match(noCap?.fix ?? '', /root/);
  const noFw = byId({ ...good, firewall: null }).get('firewall');
  assert.equal(noFw?.status, 'warn');
  assert.equal(noFw?.fix, 'apt-get install nftables');
  const ipt = byId({ ...good, firewall: 'iptables' }).get('firewall');
  assert.equal(ipt?.status, 'ok');
  assert.match(ipt?.detail ?? '', /groups need nft/);
  const fwd = byId({ ...good, ipForward: false }).get('ip-forward');
  assert.equal(fwd?.status, 'warn');
  assert.match(fwd?.fix ?? '', /ip_forward=1/);
  assert.equal(byId({ ...good, ipForward: null }).get('ip-forward')?.status, 'warn');
});
