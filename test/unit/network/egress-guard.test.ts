import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nameservers } from '../../../src/core/resolv.js';
import { BLOCKED_V4, renderGuard } from '../../../src/network/egress-guard.js';

const opts = { table: 'vessel_guard', uidFirst: 200000, uidLast: 265535, resolvers: [] };

test('the guard matches only the VM uid range, lets replies pass, and refuses at once', () => {
  const rules = renderGuard({ ...opts, resolvers: ['127.0.0.53', '::1'] });
  const lines = rules.split('\n').map((l) => l.trim());
  const at = (s: string): number => {
    const i = lines.indexOf(s);
    assert.ok(i >= 0, `missing: ${s}\n${rules}`);
    return i;
  };
  // Idempotent replacement in one transaction.
  assert.ok(rules.startsWith('table inet vessel_guard {}\ndelete table inet vessel_guard\n'));
  const others = at('meta skuid != 200000-265535 accept');
  const replies = at('ct direction reply accept');
  const dns4 = at('ip daddr { 127.0.0.53 } meta l4proto { tcp, udp } th dport 53 accept');
  const dns6 = at('ip6 daddr { ::1 } meta l4proto { tcp, udp } th dport 53 accept');
  const local = at('fib daddr type local meta l4proto tcp reject with tcp reset');
  const blocked = at('ip daddr @blocked4 meta l4proto tcp reject with tcp reset');
  at('ip6 daddr @blocked6 reject');
  // Order matters: other processes first, then published-port replies, then the resolver
  // exception, and only then the refusals (the resolver is often on loopback).
  assert.ok(others < replies && replies < dns4 && dns4 < dns6 && dns6 < local && local < blocked);
  for (const cidr of ['10.0.0.0/8', '169.254.0.0/16', '100.64.0.0/10', '127.0.0.0/8'])
    assert.ok(BLOCKED_V4.includes(cidr), cidr);
  assert.match(rules, /fc00::\/7/); // ULA, and with it fd00:ec2::254
  // No resolvers: no DNS exception at all.
  assert.doesNotMatch(renderGuard(opts), /dport 53/);
});

test('resolv.conf nameservers, deduplicated, scoped and invalid ones skipped, comments ignored', () => {
  const text = [
    '# nameserver 9.9.9.9',
    'nameserver 127.0.0.53',
    'search example.com',
    '  nameserver fe80::1%eth0',
    'nameserver 127.0.0.53',
    'nameserver ::1',
    'nameserver not-an-ip',
    'options edns0',
  ].join('\n');
  assert.deepEqual(nameservers(text), ['127.0.0.53', '::1']);
  assert.deepEqual(nameservers(''), []);
});
