/**
 * The bridge network (TAP mode): one Vessel-owned Linux bridge with the gateway address,
 * a TAP pool, the firewall (NAT egress, isolation, no guest access to the host), guest
 * address allocation and the published-port proxies. The instance manager allocates an
 * address in its reservation window (`allocate`, synchronous), `attach`es at boot,
 * `release`s when the VMM is gone, and `reattach`es re-adopted VMs after a daemon restart.
 */
import fs from 'node:fs/promises';
import { VesselError, errnoCode, errorMessage } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { detectBackend, Firewall, type FirewallBackend } from './firewall.js';
import {
  deleteLink,
  ensureBridge,
  hostRunner,
  linkExists,
  listLinks,
  setIsolated,
  setLink,
  renameLink,
  type Runner,
} from './links.js';
import { ElementBook } from './elements.js';
import { openProxy, type PortProxy, type ProxySpec } from './port-proxy.js';
import { nextFreeAddress, parseSubnet, type Subnet } from './subnet.js';
import { TapPool, type TapPoolStats } from './tap-pool.js';

/** Name prefixes: attached TAPs (`vt` + 12 hex of the instance id) and idle pool TAPs. */
export const TAP_PREFIX = 'vt';
export const POOL_PREFIX = 'vp';

export interface BridgeNetworkOptions {
  readonly bridge: string;
  /** `10.88.0.0/16`; the gateway is the first address. */
  readonly subnet: string;
  readonly tapPoolSize: number;
  /** nft table / iptables chain owner name. */
  readonly table?: string;
  readonly exec?: Runner;
  readonly log?: Logger;
}

/** One instance's place on the bridge. */
export interface AttachRequest {
  readonly id: string;
  readonly ip: string;
  readonly egress: boolean;
  /** Network group: members may talk to each other; null: isolated. */
  readonly group: string | null;
  readonly ports: readonly {
    protocol: 'tcp' | 'udp';
    host_ip: string;
    host_port: number;
    guest_port: number;
  }[];
}

interface Attached {
  readonly req: AttachRequest;
  readonly tap: string;
  readonly proxies: PortProxy[];
  /** Its firewall elements are in place. */
  live: boolean;
}

/** The TAP device name of an instance (≤ 15 bytes, stable across daemon restarts). */
export function tapNameFor(id: string): string {
  return `${TAP_PREFIX}${id.slice(0, 12)}`;
}

/**
 * Whether this host can run the bridge network, or why not: /dev/net/tun must exist and
 * creating the bridge must work (CAP_NET_ADMIN); probed once by `BridgeNetwork.start`.
 */
export async function tunProblem(): Promise<string | null> {
  try {
    const st = await fs.stat('/dev/net/tun');
    return st.isCharacterDevice() ? null : '/dev/net/tun is not a character device';
  } catch (err) {
    return `/dev/net/tun is unusable (${errnoCode(err) ?? errorMessage(err)})`;
  }
}

export class BridgeNetwork {
  readonly subnet: Subnet;
  readonly bridge: string;
  readonly firewall: Firewall;
  readonly #exec: Runner;
  readonly #log: Logger | undefined;
  readonly #pool: TapPool;
  readonly #attached = new Map<string, Attached>();
  /** Releases in flight, by instance id: an attach of the same id waits for its release. */
  readonly #releasing = new Map<string, Promise<void>>();
  readonly #elements: ElementBook;
  #last: string | null = null;

  private constructor(o: BridgeNetworkOptions, subnet: Subnet, backend: FirewallBackend) {
    this.subnet = subnet;
    this.bridge = o.bridge;
    this.#exec = o.exec ?? hostRunner;
    this.#log = o.log;
    this.firewall = new Firewall({
      exec: this.#exec,
      backend,
      rules: {
        table: o.table ?? 'vessel',
        bridge: o.bridge,
        subnet: subnet.cidr,
        gateway: subnet.gateway,
        tapPrefix: TAP_PREFIX,
      },
    });
    this.#elements = new ElementBook(this.firewall);
    this.#pool = new TapPool({
      exec: this.#exec,
      bridge: o.bridge,
      size: o.tapPoolSize,
      prefix: POOL_PREFIX,
      ...(o.log ? { log: o.log } : {}),
    });
  }

  /**
   * Probe and set up: the bridge (idempotent), the firewall ruleset (replaced atomically),
   * idle TAPs of a previous daemon adopted into the pool, then the pool filled in the
   * background. Throws `tool_missing`/`tool_failed` when the host cannot do it.
   */
  static async start(o: BridgeNetworkOptions): Promise<BridgeNetwork> {
    const subnet = parseSubnet(o.subnet);
    if (o.bridge.startsWith(TAP_PREFIX) || o.bridge.startsWith(POOL_PREFIX)) {
      throw new VesselError(
        'invalid_config',
        `network.bridge "${o.bridge}" must not start with "${TAP_PREFIX}" or "${POOL_PREFIX}" (Vessel's TAP names)`,
      );
    }
    const exec = o.exec ?? hostRunner;
    const tun = await tunProblem();
    if (tun) throw new VesselError('tool_missing', `bridge networking needs TAP devices: ${tun}`);
    const backend = await detectBackend(exec);
    if (!backend) {
      throw new VesselError('tool_missing', 'bridge networking needs nft (nftables) or iptables');
    }
    const n = new BridgeNetwork(o, subnet, backend);
    await ensureBridge(exec, o.bridge, subnet.gateway, subnet.prefix);
    await n.firewall.apply();
    const idle = (await listLinks(exec))
      .filter((l) => l.master === o.bridge && l.ifname.startsWith(POOL_PREFIX))
      .map((l) => l.ifname);
    n.#pool.adopt(idle);
    n.#pool.refill();
    return n;
  }

  get backend(): FirewallBackend {
    return this.firewall.backend;
  }

  /**
   * A free guest address, given those held by instance rows (synchronous: it runs in the
   * create reservation window). Round robin from the last one handed out.
   */
  allocate(used: ReadonlySet<string>): string {
    const ip = nextFreeAddress(this.subnet, used, this.#last);
    this.#last = ip;
    return ip;
  }

  /** The live members of `e`'s group (their elements are in place). */
  #livePeers(e: Attached): string[] {
    if (e.req.group === null) return [];
    return [...this.#attached.values()]
      .filter((o) => o !== e && o.live && o.req.group === e.req.group)
      .map((o) => o.tap);
  }

  async #openProxies(req: AttachRequest): Promise<PortProxy[]> {
    const proxies: PortProxy[] = [];
    try {
      for (const p of req.ports) {
        const spec: ProxySpec = {
          protocol: p.protocol,
          hostIp: p.host_ip,
          hostPort: p.host_port,
          targetIp: req.ip,
          targetPort: p.guest_port,
        };
        proxies.push(await openProxy(spec, this.#log ? { log: this.#log } : {}));
      }
      return proxies;
    } catch (err) {
      await Promise.all(proxies.map((p) => p.close()));
      throw err;
    }
  }

  /**
   * Give a booting instance its TAP (from the pool, renamed to {@link tapNameFor}, up,
   * isolated unless grouped), its firewall elements and its port proxies. Undone on failure.
   * Bind errors of a published port reject with the raw errno error (the caller names it).
   */
  async attach(req: AttachRequest): Promise<string> {
    await this.release(req.id);
    const tap = tapNameFor(req.id);
    await deleteLink(this.#exec, tap); // a leftover of a crashed daemon
    const pooled = await this.#pool.acquire();
    try {
      await renameLink(this.#exec, pooled, tap);
    } catch (err) {
      await deleteLink(this.#exec, pooled);
      throw err;
    }
    return this.#finishAttach(req, tap);
  }

  /**
   * After a daemon restart, for a VM that kept running: its TAP still exists (QEMU holds
   * it); put it back on the bridge (it may have been re-created) and restore its firewall
   * elements and proxies.
   */
  async reattach(req: AttachRequest): Promise<string> {
    await this.#releasing.get(req.id);
    const tap = tapNameFor(req.id);
    if (!(await linkExists(this.#exec, tap))) {
      throw new VesselError('not_found', `TAP ${tap} of instance ${req.id} is gone`);
    }
    return this.#finishAttach(req, tap);
  }

  async #finishAttach(req: AttachRequest, tap: string): Promise<string> {
    const entry: Attached = { req, tap, proxies: [], live: false };
    this.#attached.set(req.id, entry);
    try {
      await setLink(this.#exec, tap, 'up', this.bridge);
      await setIsolated(this.#exec, tap, req.group === null);
      await this.#elements.add(
        entry.tap,
        entry.req,
        () => this.#livePeers(entry),
        () => (entry.live = true),
      );
      entry.proxies.push(...(await this.#openProxies(req)));
      return tap;
    } catch (err) {
      if (this.#attached.get(req.id) === entry) this.#attached.delete(req.id);
      await this.#elements
        .remove(entry.tap, entry.req, () => (entry.live = false))
        .catch(() => undefined);
      await this.#pool.giveBack(tap);
      throw err;
    }
  }

  /** Undo `attach` (idempotent): proxies closed, firewall elements removed, TAP returned. */
  release(id: string): Promise<void> {
    const prev = this.#releasing.get(id);
    const p = (async () => {
      await prev;
      await this.#release(id);
    })().finally(() => {
      if (this.#releasing.get(id) === p) this.#releasing.delete(id);
    });
    this.#releasing.set(id, p);
    return p;
  }

  async #release(id: string): Promise<void> {
    const a = this.#attached.get(id);
    if (!a) {
      await deleteLink(this.#exec, tapNameFor(id));
      return;
    }
    this.#attached.delete(id);
    await Promise.all(a.proxies.map((p) => p.close()));
    try {
      await this.#elements.remove(a.tap, a.req, () => (a.live = false));
    } catch (err) {
      this.#log?.warn({ err, tap: a.tap }, 'removing firewall elements failed');
    }
    await this.#pool.giveBack(a.tap);
  }

  /** The TAP of an attached instance. */
  tapOf(id: string): string | undefined {
    return this.#attached.get(id)?.tap;
  }

  attachedCount(): number {
    return this.#attached.size;
  }

  poolStats(): TapPoolStats {
    return this.#pool.stats();
  }

  /** Resolves when background pool refills are done (tests). */
  async settled(): Promise<void> {
    await this.#pool.settled();
  }

  /**
   * Daemon shutdown. Proxies close (their VMs stop with the daemon or are re-adopted).
   * With `teardown` (no VM left on the bridge): idle TAPs, the bridge and every firewall
   * rule go too, leaving the host as before the daemon started.
   */
  async close(options: { teardown: boolean }): Promise<void> {
    await Promise.allSettled([...this.#releasing.values()]);
    for (const a of this.#attached.values()) await Promise.all(a.proxies.map((p) => p.close()));
    this.#attached.clear();
    if (!options.teardown) return;
    await this.#pool.drain();
    await this.firewall.teardown();
    await deleteLink(this.#exec, this.bridge);
  }
}
