/**
 * The nftables rules of the bridge network, rendered as `nft -f` scripts: pure functions,
 * no I/O. Two tables named `vessel`: `inet` (NAT egress, guests kept off the host) and
 * `bridge` (which TAPs may talk to which). Per-instance state lives only in set elements,
 * so attaching or releasing an instance never edits a rule.
 */
import { BLOCKED_V4 } from './egress-guard.js';

/** What the rules are rendered from. */
export interface RulesetOptions {
  readonly table: string;
  readonly bridge: string;
  /** `10.88.0.0/16`. */
  readonly subnet: string;
  readonly gateway: string;
  /**
   * Name prefix of attached TAPs (`vt`): the bridge-family rules match ports by it,
   * because this kernel has no `ibrname` (nft_meta_bridge) to match the bridge itself.
   */
  readonly tapPrefix: string;
}

/** An instance's rule state: its TAP, its address, whether it may leave the host, its peers. */
export interface Attachment {
  readonly tap: string;
  readonly ip: string;
  readonly egress: boolean;
  /** TAPs of the other members of its network group (each pair is allowed both ways). */
  readonly peers: readonly string[];
}

const q = (s: string): string => `"${s}"`;

/**
 * The whole ruleset, replacing any previous version atomically (one `nft -f`
 * transaction): declaring the table first makes the delete safe when it does not exist.
 *
 * - input: from the bridge only DNS on the gateway and replies to connections the host
 *   opened (port proxy) are accepted; everything else (the API, sshd, ...) is refused.
 * - forward: guests leave through NAT only when their address is in `@egress`, and never
 *   to a private, link-local (metadata service) or reserved address (`@blocked`, refused
 *   at once: egress-guard.ts has the list); nothing
 *   from outside reaches a guest unless it answers a connection the guest opened.
 *   Bridged guest-to-guest packets (seen here when br_netfilter is loaded) pass: the
 *   bridge table decides those.
 * - bridge forward: guest-to-guest frames pass only between `@peers` pairs.
 *   Untouched: the host's own traffic, and frames of bridge ports without the TAP prefix.
 */
export function renderRuleset(o: RulesetOptions): string {
  const br = q(o.bridge);
  return [
    `table inet ${o.table} {}`,
    `delete table inet ${o.table}`,
    `table inet ${o.table} {`,
    `  set egress { type ipv4_addr; }`,
    `  set blocked { type ipv4_addr; flags interval; elements = { ${BLOCKED_V4.join(', ')} } }`,
    `  chain input {`,
    `    type filter hook input priority filter; policy accept;`,
    `    iifname ${br} ct state established,related accept`,
    `    iifname ${br} ip daddr ${o.gateway} udp dport 53 accept`,
    `    iifname ${br} ip daddr ${o.gateway} tcp dport 53 accept`,
    // Refused at once (a guest's connect fails fast instead of hanging).
    `    iifname ${br} meta l4proto tcp reject with tcp reset`,
    `    iifname ${br} reject with icmp type admin-prohibited`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    // Guest to guest stays on the bridge; with br_netfilter it also passes here, already
    // judged by the bridge table.
    `    iifname ${br} oifname ${br} accept`,
    `    oifname ${br} ct state established,related accept`,
    `    oifname ${br} drop`,
    `    iifname ${br} ip daddr @blocked meta l4proto tcp reject with tcp reset`,
    `    iifname ${br} ip daddr @blocked reject with icmp type admin-prohibited`,
    `    iifname ${br} ip saddr @egress accept`,
    `    iifname ${br} drop`,
    `  }`,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    `    ip saddr ${o.subnet} oifname != ${br} masquerade`,
    `  }`,
    `}`,
    `table bridge ${o.table} {}`,
    `delete table bridge ${o.table}`,
    `table bridge ${o.table} {`,
    `  set peers { type ifname . ifname; }`,
    `  chain forward {`,
    `    type filter hook forward priority filter; policy accept;`,
    `    iifname ${q(`${o.tapPrefix}*`)} iifname . oifname @peers accept`,
    `    iifname ${q(`${o.tapPrefix}*`)} drop`,
    `  }`,
    `}`,
    '',
  ].join('\n');
}

/** Remove both tables (safe when they do not exist). */
export function renderTeardown(table: string): string {
  return [
    `table inet ${table} {}`,
    `delete table inet ${table}`,
    `table bridge ${table} {}`,
    `delete table bridge ${table}`,
    '',
  ].join('\n');
}

/** The `@peers` pairs of one attachment: both directions with every peer. */
export function peerPairs(a: Attachment): [string, string][] {
  return a.peers.flatMap((p): [string, string][] => [
    [a.tap, p],
    [p, a.tap],
  ]);
}

/**
 * Add (or delete) an attachment's set elements. Adding is idempotent (`add element` of
 * an existing element is no error); deleting a missing element is an error, so the
 * caller deletes exactly what it added.
 */
export function renderElements(table: string, verb: 'add' | 'delete', a: Attachment): string {
  const lines: string[] = [];
  if (a.egress) lines.push(`${verb} element inet ${table} egress { ${a.ip} }`);
  const pairs = peerPairs(a);
  if (pairs.length > 0) {
    const elems = pairs.map(([x, y]) => `${q(x)} . ${q(y)}`).join(', ');
    lines.push(`${verb} element bridge ${table} peers { ${elems} }`);
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}
