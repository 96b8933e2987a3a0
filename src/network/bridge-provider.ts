/**
 * Bridge networking on demand: probed once at daemon start without side effects, and set
 * up (bridge, TAP pool, firewall) only when the first bridge-mode instance needs it — a
 * daemon whose instances never ask for networking never touches the host's network.
 */
import fs from 'node:fs/promises';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { BridgeNetwork, tunProblem, type BridgeNetworkOptions } from './bridge-network.js';
import { parseSubnet, type Subnet } from './subnet.js';

/** CAP_NET_ADMIN is bit 12 of the effective capability set. */
const CAP_NET_ADMIN = 12n;

/** Why this process cannot manage links, or null (reads /proc/self/status). */
export async function netAdminProblem(): Promise<string | null> {
  try {
    const status = await fs.readFile('/proc/self/status', 'utf8');
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    if (m?.[1] && (BigInt(`0x${m[1]}`) >> CAP_NET_ADMIN) & 1n) return null;
    return 'the daemon lacks CAP_NET_ADMIN (run it as root)';
  } catch (err) {
    return `cannot read the daemon's capabilities: ${errorMessage(err)}`;
  }
}

export interface BridgeProviderOptions extends BridgeNetworkOptions {
  readonly defaultMode: 'auto' | 'bridge' | 'user';
  readonly log?: Logger;
  /** Called once the bridge is up (the daemon starts DNS on the gateway). */
  readonly onReady?: (net: BridgeNetwork) => Promise<void>;
}

/** What the instance manager sees of bridge networking. */
export class BridgeProvider {
  readonly defaultMode: 'auto' | 'bridge' | 'user';
  readonly subnet: Subnet;
  readonly #o: BridgeProviderOptions;
  #problem: string | null;
  #net: BridgeNetwork | undefined;
  #starting: Promise<BridgeNetwork> | undefined;

  private constructor(o: BridgeProviderOptions, problem: string | null) {
    this.#o = o;
    this.defaultMode = o.defaultMode;
    this.subnet = parseSubnet(o.subnet);
    this.#problem = problem;
  }

  /** Probe once: /dev/net/tun and CAP_NET_ADMIN (creating the bridge is the last check, on first use). */
  static async probe(o: BridgeProviderOptions): Promise<BridgeProvider> {
    const problem = (await tunProblem()) ?? (await netAdminProblem());
    return new BridgeProvider(o, problem);
  }

  /** Why bridge mode cannot work here, or null (as far as known: setup may still fail once). */
  problem(): string | null {
    return this.#problem;
  }

  /** The bridge network when it is set up. */
  current(): BridgeNetwork | undefined {
    return this.#net;
  }

  /**
   * Set the bridge network up (once; concurrent callers share it). A failure is
   * remembered as `problem()`, so `auto` falls back to user mode from then on.
   */
  ensure(): Promise<BridgeNetwork> {
    if (this.#net) return Promise.resolve(this.#net);
    this.#starting ??= BridgeNetwork.start(this.#o).then(
      async (n) => {
        this.#net = n;
        await this.#o.onReady?.(n);
        this.#o.log?.info(
          { bridge: n.bridge, subnet: n.subnet.cidr, firewall: n.backend },
          'bridge network ready',
        );
        return n;
      },
      (err: unknown) => {
        this.#problem = `setting up bridge ${this.#o.bridge} failed: ${errorMessage(err)}`;
        this.#starting = undefined;
        throw err;
      },
    );
    return this.#starting;
  }

  /**
   * Daemon shutdown: with no VM left on the bridge everything Vessel created goes
   * (bridge, idle TAPs, firewall tables); otherwise only the port proxies close, and
   * the next daemon re-attaches the running VMs.
   */
  async close(): Promise<void> {
    const n = this.#net ?? (await this.#starting?.catch(() => undefined));
    if (!n) return;
    await n.close({ teardown: n.attachedCount() === 0 });
  }
}
