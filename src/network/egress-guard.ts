/**
 * What a guest may never reach through its egress, in every network mode (issue 19, part A):
 * the host itself, link-local addresses (the cloud metadata service above all) and private
 * ranges. Bridge mode enforces it in the forward chain (nft-rules.ts); user mode in the
 * host's output path, matched by the socket owner's uid: a user-mode stack (passt) and a
 * confined VMM run as the VM's own uid, taken from one range no other process uses.
 *
 * Pure rendering here; {@link applyEgressGuard} loads it with `nft -f`.
 */
import { loadNft, type Runner } from './links.js';

/**
 * IPv4 destinations a guest never reaches: "this network", RFC 1918, CGNAT (100.64/10),
 * loopback, link-local (169.254.169.254 is the metadata service), multicast and the
 * reserved block up to the broadcast address.
 */
export const BLOCKED_V4: readonly string[] = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '224.0.0.0/3',
];

/**
 * IPv6: unspecified, loopback, IPv4-mapped (a way back to the IPv4 list), ULA (fc00::/7,
 * which holds the metadata service's fd00:ec2::254), link-local and multicast.
 */
export const BLOCKED_V6: readonly string[] = [
  '::/128',
  '::1/128',
  '::ffff:0:0/96',
  'fc00::/7',
  'fe80::/10',
  'ff00::/8',
];

export interface GuardOptions {
  /** nft table name (inet family). */
  readonly table: string;
  /** The uids VMMs and their user-mode stacks run as: `first`..`last`, inclusive. */
  readonly uidFirst: number;
  readonly uidLast: number;
  /**
   * The host's resolvers (IPv4 or IPv6): DNS (port 53) to them stays open, since the
   * user-mode stack forwards the guest's queries there and they are often on loopback.
   */
  readonly resolvers: readonly string[];
}

/**
 * The guard: one output-hook chain. Traffic of other uids is untouched; replies on
 * connections made to the guest (published ports) pass; DNS to the host's resolvers
 * passes; anything to an address of this host (`fib daddr type local`: loopback and every
 * interface's address) or to a blocked range is rejected at once (TCP reset, or ICMP),
 * so a guest's connect fails fast instead of hanging.
 */
export function renderGuard(o: GuardOptions): string {
  const v4 = o.resolvers.filter((r) => !r.includes(':'));
  const v6 = o.resolvers.filter((r) => r.includes(':'));
  const dns = (family: 'ip' | 'ip6', list: readonly string[]): string[] =>
    list.length === 0
      ? []
      : [`    ${family} daddr { ${list.join(', ')} } meta l4proto { tcp, udp } th dport 53 accept`];
  return [
    `table inet ${o.table} {}`,
    `delete table inet ${o.table}`,
    `table inet ${o.table} {`,
    `  set blocked4 { type ipv4_addr; flags interval; elements = { ${BLOCKED_V4.join(', ')} } }`,
    `  set blocked6 { type ipv6_addr; flags interval; elements = { ${BLOCKED_V6.join(', ')} } }`,
    `  chain output {`,
    `    type filter hook output priority filter; policy accept;`,
    `    meta skuid != ${o.uidFirst}-${o.uidLast} accept`,
    `    ct direction reply accept`,
    ...dns('ip', v4),
    ...dns('ip6', v6),
    `    fib daddr type local meta l4proto tcp reject with tcp reset`,
    `    fib daddr type local reject`,
    `    ip daddr @blocked4 meta l4proto tcp reject with tcp reset`,
    `    ip daddr @blocked4 reject`,
    `    ip6 daddr @blocked6 meta l4proto tcp reject with tcp reset`,
    `    ip6 daddr @blocked6 reject`,
    `  }`,
    `}`,
    '',
  ].join('\n');
}

/** Load (or replace) the guard in the runner's network namespace. */
export async function applyEgressGuard(exec: Runner, o: GuardOptions): Promise<void> {
  await loadNft(exec, renderGuard(o));
}
