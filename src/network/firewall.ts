/**
 * Applies the bridge network's packet filter and NAT: nftables when `nft` works, iptables
 * otherwise. The ruleset is replaced atomically at start (idempotent), instances only add
 * and delete set elements (or, with iptables, their egress rule), and teardown removes
 * everything Vessel created.
 */
import { VesselError } from '../core/errors.js';
import { loadNft, type Runner } from './links.js';
import {
  renderElements,
  renderRuleset,
  renderTeardown,
  type Attachment,
  type RulesetOptions,
} from './nft-rules.js';
import { IPT_CHAINS, iptablesEgress, iptablesHooks, iptablesRules } from './iptables-rules.js';

export type FirewallBackend = 'nftables' | 'iptables';

/** Which backend this host has: `nft` when it runs, else `iptables`, else null. */
export async function detectBackend(exec: Runner): Promise<FirewallBackend | null> {
  for (const [tool, backend] of [
    ['nft', 'nftables'],
    ['iptables', 'iptables'],
  ] as const) {
    try {
      const r = await exec(tool, ['--version'], { allowFailure: true });
      if (r.code === 0) return backend;
    } catch {
      // not installed
    }
  }
  return null;
}

export class Firewall {
  readonly backend: FirewallBackend;
  readonly #exec: Runner;
  readonly #o: RulesetOptions;

  constructor(options: { exec: Runner; backend: FirewallBackend; rules: RulesetOptions }) {
    this.#exec = options.exec;
    this.backend = options.backend;
    this.#o = options.rules;
  }

  async #nft(script: string): Promise<void> {
    await loadNft(this.#exec, script);
  }

  async #ipt(args: readonly string[], allowFailure = false): Promise<number> {
    return (await this.#exec('iptables', ['-w', ...args], { allowFailure })).code;
  }

  /** Create (or replace) the ruleset, and enable IPv4 forwarding in this namespace. */
  async apply(): Promise<void> {
    // Through the runner, so it lands in the namespace the rules are for.
    await this.#exec('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    if (this.backend === 'nftables') return this.#nft(renderRuleset(this.#o));
    for (const [chain, table] of [
      [IPT_CHAINS.input, 'filter'],
      [IPT_CHAINS.forward, 'filter'],
      [IPT_CHAINS.nat, 'nat'],
    ] as const) {
      await this.#ipt(['-t', table, '-N', chain], true);
      await this.#ipt(['-t', table, '-F', chain]);
    }
    for (const r of iptablesRules(this.#o)) await this.#ipt(r);
    for (const h of iptablesHooks()) {
      if ((await this.#ipt(['-t', h.table, '-C', h.chain, '-j', h.target], true)) !== 0) {
        await this.#ipt(['-t', h.table, '-I', h.chain, '1', '-j', h.target]);
      }
    }
  }

  /** Allow an instance's egress and its group peers. */
  async attach(a: Attachment): Promise<void> {
    if (this.backend === 'nftables') return this.#nft(renderElements(this.#o.table, 'add', a));
    if (a.peers.length > 0) {
      throw new VesselError(
        'tool_missing',
        'network groups need nftables (nft); this host only has iptables',
      );
    }
    if (a.egress) await this.#ipt(iptablesEgress(this.#o, a.ip, '-I'));
  }

  /** Undo `attach` (the same attachment). */
  async detach(a: Attachment): Promise<void> {
    if (this.backend === 'nftables') return this.#nft(renderElements(this.#o.table, 'delete', a));
    if (a.egress) await this.#ipt(iptablesEgress(this.#o, a.ip, '-D'), true);
  }

  /** Remove every rule, chain and table Vessel created. */
  async teardown(): Promise<void> {
    if (this.backend === 'nftables') return this.#nft(renderTeardown(this.#o.table));
    for (const h of iptablesHooks()) {
      while ((await this.#ipt(['-t', h.table, '-D', h.chain, '-j', h.target], true)) === 0);
      await this.#ipt(['-t', h.table, '-F', h.target], true);
      await this.#ipt(['-t', h.table, '-X', h.target], true);
    }
  }
}
