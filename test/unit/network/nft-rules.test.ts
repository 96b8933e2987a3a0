import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  peerPairs,
  renderElements,
  renderRuleset,
  renderTeardown,
} from '../../../src/network/nft-rules.js';
import { iptablesEgress, iptablesRules } from '../../../src/network/iptables-rules.js';

const opts = {
  table: 'vessel',
  bridge: 'vessel0',
  subnet: '10.88.0.0/16',
  gateway: '10.88.0.1',
  tapPrefix: 'vt',
};

test('the ruleset replaces both tables atomically and is idempotent by construction', () => {
  const r = renderRuleset(opts);
  const lines = r.split('\n');
  // Declare, delete, define: re-applying never fails and never duplicates a rule.
  assert.deepEqual(lines.slice(0, 3), [
    'table inet vessel {}',
    'delete table inet vessel',
    'table inet vessel {',
  ]);
  assert.ok(lines.includes('table bridge vessel {}'));
  assert.ok(lines.includes('delete table bridge vessel'));
});

test('guests reach the gateway only for DNS; everything else into the host is refused', () => {
  const r = renderRuleset(opts);
  const input = r.slice(r.indexOf('chain input'), r.indexOf('chain forward'));
  const rules = input.split('\n').map((l) => l.trim());
  assert.ok(rules.includes('iifname "vessel0" ip daddr 10.88.0.1 udp dport 53 accept'));
  assert.ok(rules.includes('iifname "vessel0" ip daddr 10.88.0.1 tcp dport 53 accept'));
  // The refusal comes after the accepts (nft evaluates in order), and is at once.
  const drop = rules.indexOf('iifname "vessel0" meta l4proto tcp reject with tcp reset');
  assert.equal(
    rules[drop + 1],
    'iifname "vessel0" reject with icmp type admin-prohibited',
    'everything else refused too',
  );
  assert.ok(drop > rules.indexOf('iifname "vessel0" ip daddr 10.88.0.1 tcp dport 53 accept'));
  assert.ok(drop > rules.indexOf('iifname "vessel0" ct state established,related accept'));
});

test('egress is per address (a set), NAT masquerades only the subnet leaving the bridge', () => {
  const r = renderRuleset(opts);
  assert.match(r, /set egress \{ type ipv4_addr; \}/);
  // Bridged guest-to-guest traffic (br_netfilter) is left to the bridge table.
  assert.match(r, /policy accept;\n\s+iifname "vessel0" oifname "vessel0" accept\n/);
  assert.match(r, /iifname "vessel0" ip saddr @egress accept\n\s+iifname "vessel0" drop/);
  // Even with egress: private, link-local (metadata) and reserved destinations, refused
  // before the egress accept.
  assert.match(
    r,
    /iifname "vessel0" ip daddr @blocked meta l4proto tcp reject with tcp reset\n\s+iifname "vessel0" ip daddr @blocked reject with icmp type admin-prohibited\n\s+iifname "vessel0" ip saddr @egress accept/,
  );
  assert.match(
    r,
    /set blocked \{ type ipv4_addr; flags interval; elements = \{ [^}]*169\.254\.0\.0\/16/,
  );
  assert.match(
    r,
    /oifname "vessel0" ct state established,related accept\n\s+oifname "vessel0" drop/,
  );
  assert.match(r, /ip saddr 10\.88\.0\.0\/16 oifname != "vessel0" masquerade/);
  assert.match(r, /iifname "vt\*" iifname \. oifname @peers accept\n\s+iifname "vt\*" drop/);
});

test('elements: egress address and both directions of every peer pair', () => {
  const a = { tap: 'vta', ip: '10.88.0.9', egress: true, peers: ['vtb', 'vtc'] };
  assert.deepEqual(peerPairs(a), [
    ['vta', 'vtb'],
    ['vtb', 'vta'],
    ['vta', 'vtc'],
    ['vtc', 'vta'],
  ]);
  assert.equal(
    renderElements('vessel', 'add', a),
    'add element inet vessel egress { 10.88.0.9 }\n' +
      'add element bridge vessel peers { "vta" . "vtb", "vtb" . "vta", "vta" . "vtc", "vtc" . "vta" }\n',
  );
  assert.equal(
    renderElements('vessel', 'delete', { ...a, egress: false, peers: [] }),
    '',
    'an isolated instance without egress has no elements',
  );
});

test('teardown deletes exactly the two Vessel tables', () => {
  assert.equal(
    renderTeardown('vessel'),
    'table inet vessel {}\ndelete table inet vessel\ntable bridge vessel {}\ndelete table bridge vessel\n',
  );
});

test('iptables fallback renders the same policy as argument arrays', () => {
  const rules = iptablesRules(opts).map((r) => r.join(' '));
  assert.ok(
    rules.includes('-t filter -A VESSEL-INPUT -i vessel0 -d 10.88.0.1 -p udp --dport 53 -j ACCEPT'),
  );
  assert.ok(rules.includes('-t filter -A VESSEL-INPUT -i vessel0 -j DROP'));
  assert.ok(
    rules.includes('-t nat -A VESSEL-POSTROUTING -s 10.88.0.0/16 ! -o vessel0 -j MASQUERADE'),
  );
  assert.equal(rules.at(-2), '-t filter -A VESSEL-FORWARD -i vessel0 -j DROP');
  // Egress rules are inserted right above the final drop, so below the blocked
  // destinations: the metadata service stays refused even for a guest with egress.
  const forward = rules.filter((r) => r.includes(' VESSEL-FORWARD '));
  const finalDrop = forward.indexOf('-t filter -A VESSEL-FORWARD -i vessel0 -j DROP') + 1;
  const metadata = forward.indexOf(
    '-t filter -A VESSEL-FORWARD -i vessel0 -d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited',
  );
  assert.ok(metadata >= 0 && metadata + 1 < finalDrop, forward.join('\n'));
  for (const cidr of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10']) {
    assert.ok(
      forward.some((r) => r.includes(`-d ${cidr} -j REJECT`)),
      cidr,
    );
  }
  assert.deepEqual(iptablesEgress(opts, '10.88.0.7', '-I'), [
    '-t',
    'filter',
    '-I',
    'VESSEL-FORWARD',
    String(finalDrop),
    '-i',
    'vessel0',
    '-s',
    '10.88.0.7',
    '-j',
    'ACCEPT',
  ]);
  assert.equal(iptablesEgress(opts, '10.88.0.7', '-D').includes(String(finalDrop)), false);
});
