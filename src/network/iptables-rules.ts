/**
 * The iptables fallback (hosts without `nft`): the same policy as nft-rules.ts in three
 * Vessel chains hooked from INPUT, FORWARD and POSTROUTING, rendered as argument arrays
 * (pure). Per-instance egress is one rule per address. Network groups need the nft bridge
 * table and are refused in this mode; port isolation still keeps guests apart.
 */
import { BLOCKED_V4 } from './egress-guard.js';
import type { RulesetOptions } from './nft-rules.js';

/** One `iptables` invocation's arguments. */
export type IptablesArgs = readonly string[];

export const IPT_CHAINS = {
  input: 'VESSEL-INPUT',
  forward: 'VESSEL-FORWARD',
  nat: 'VESSEL-POSTROUTING',
} as const;

/** Hooks from the built-in chains into ours: checked with `-C`, added with `-I` when absent. */
export function iptablesHooks(): { table: string; chain: string; target: string }[] {
  return [
    { table: 'filter', chain: 'INPUT', target: IPT_CHAINS.input },
    { table: 'filter', chain: 'FORWARD', target: IPT_CHAINS.forward },
    { table: 'nat', chain: 'POSTROUTING', target: IPT_CHAINS.nat },
  ];
}

/** The rules of our chains (after `-N`/`-F`), in order. */
export function iptablesRules(o: RulesetOptions): IptablesArgs[] {
  const br = o.bridge;
  const i = IPT_CHAINS.input;
  const f = IPT_CHAINS.forward;
  const est = ['-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', '-j', 'ACCEPT'];
  return [
    ['-t', 'filter', '-A', i, '-i', br, ...est],
    [
      '-t',
      'filter',
      '-A',
      i,
      '-i',
      br,
      '-d',
      o.gateway,
      '-p',
      'udp',
      '--dport',
      '53',
      '-j',
      'ACCEPT',
    ],
    [
      '-t',
      'filter',
      '-A',
      i,
      '-i',
      br,
      '-d',
      o.gateway,
      '-p',
      'tcp',
      '--dport',
      '53',
      '-j',
      'ACCEPT',
    ],
    ['-t', 'filter', '-A', i, '-i', br, '-j', 'DROP'],
    ['-t', 'filter', '-A', f, '-o', br, ...est],
    ['-t', 'filter', '-A', f, '-o', br, '-j', 'DROP'],
    // Never private, link-local or reserved destinations, even with egress: refused at once.
    ...BLOCKED_V4.map((cidr) => [
      '-t',
      'filter',
      '-A',
      f,
      '-i',
      br,
      '-d',
      cidr,
      '-j',
      'REJECT',
      '--reject-with',
      'icmp-admin-prohibited',
    ]),
    // Per-instance egress rules are inserted above this one.
    ['-t', 'filter', '-A', f, '-i', br, '-j', 'DROP'],
    ['-t', 'nat', '-A', IPT_CHAINS.nat, '-s', o.subnet, '!', '-o', br, '-j', 'MASQUERADE'],
  ];
}

/** The egress rule of one guest address (`-I` to add above the final drop, `-D` to remove). */
export function iptablesEgress(o: RulesetOptions, ip: string, op: '-I' | '-D'): IptablesArgs {
  // Below the two rules for traffic to guests and the blocked destinations.
  const pos = op === '-I' ? [String(3 + BLOCKED_V4.length)] : [];
  return ['-t', 'filter', op, IPT_CHAINS.forward, ...pos, '-i', o.bridge, '-s', ip, '-j', 'ACCEPT'];
}
