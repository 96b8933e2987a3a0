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

test('guests reach the gateway only for DNS; everything else into the host is dropped', () => {
  const r = renderRuleset(opts);
  const input = r.slice(r.indexOf('chain input'), r.indexOf('chain forward'));
  const rules = input.split('\n').map((l) => l.trim());
  assert.ok(rules.includes('iifname "vessel0" ip daddr 10.88.0.1 udp dport 53 accept'));
  assert.ok(rules.includes('iifname "vessel0" ip daddr 10.88.0.1 tcp dport 53 accept'));
  // The drop comes after the accepts (nft evaluates in order).
  const drop = rules.indexOf('iifname "vessel0" drop');
  assert.ok(drop > rules.indexOf('iifname "vessel0" ip daddr 10.88.0.1 tcp dport 53 accept'));
  assert.ok(drop > rules.indexOf('iifname "vessel0" ct state established,related accept'));
});

test('egress is per address (a set), NAT masquerades only the subnet leaving the bridge', () => {
  const r = renderRuleset(opts);
  assert.match(r, /set egress \{ type ipv4_addr; \}/);
  // Bridged guest-to-guest traffic (br_netfilter) is left to the bridge table.
  assert.match(r, /policy accept;\n\s+iifname "vessel0" oifname "vessel0" accept\n/);
  assert.match(r, /iifname "vessel0" ip saddr @egress accept\n\s+iifname "vessel0" drop/);
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
  // Egress rules go at position 3: after the two rules for traffic towards guests.
  assert.deepEqual(iptablesEgress(opts, '10.88.0.7', '-I'), [
    '-t',
    'filter',
    '-I',
    'VESSEL-FORWARD',
    '3',
    '-i',
    'vessel0',
    '-s',
    '10.88.0.7',
    '-j',
    'ACCEPT',
  ]);
  assert.equal(iptablesEgress(opts, '10.88.0.7', '-D').includes('3'), false);
});
