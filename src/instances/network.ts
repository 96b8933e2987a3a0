/**
 * An instance's network: the request (`network`, `ports`) resolved into the guest's
 * config-disk section (guest-agent/PROTOCOL.md §2), the host-side record kept with the
 * instance, the VMM's NIC spec, and host-port checks. Modes: bridge (TAP on the Vessel
 * bridge, see network-bridge.ts), user (QEMU's slirp) or none.
 */
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { VesselError, errnoCode, toVesselError } from '../core/errors.js';
import type { InstanceNetwork, PortMapping, PortMappingRequest } from '../core/wire.js';
import { USER_NET, type UserNet } from '../vmm/index.js';
import type { GuestConfig } from './guest-config.js';
import { chooseBridge, resolveBridge, type BridgeContext } from './network-bridge.js';

/** The config-disk `network` section (guest-agent/PROTOCOL.md §2). */
export interface GuestNetwork {
  readonly interfaces: readonly {
    readonly mac: string;
    readonly address: string;
    readonly prefix: number;
    readonly gateway: string;
    readonly mtu: number;
  }[];
  readonly nameservers: readonly string[];
}

/** What the host keeps about an instance's network (in the row's guest JSON, never on the config disk). */
export interface HostNetwork {
  readonly mode: 'bridge' | 'user' | 'none';
  readonly egress: boolean;
  readonly mac: string | null;
  readonly ports: readonly PortMapping[];
  /** Bridge mode: the guest address (also the row's `guest_ip`), gateway and network group. */
  readonly ip?: string | null;
  readonly gateway?: string | null;
  readonly group?: string | null;
}

/** Key of the host-side record inside the stored guest config. */
const HOST_KEY = 'host_network';

export interface NetworkRequest {
  readonly network?: {
    readonly enabled?: boolean;
    readonly egress?: boolean;
    readonly mode?: 'bridge' | 'user' | 'none';
    readonly name?: string;
  };
  readonly ports?: readonly PortMappingRequest[];
}

/** A stable, locally administered MAC in QEMU's `52:54:00` range, derived from the instance id. */
export function macFor(id: string): string {
  const h = createHash('sha256').update(id).digest();
  return [
    '52',
    '54',
    '00',
    ...[...h.subarray(0, 3)].map((b) => b.toString(16).padStart(2, '0')),
  ].join(':');
}

function invalid(message: string, details?: Record<string, unknown>): VesselError {
  return new VesselError('invalid_argument', message, details ? { details } : {});
}

/** `127.0.0.1:8080->80/tcp`, the way `docker ps` shows a published port. */
export function formatPort(p: PortMapping): string {
  return `${p.host_ip}:${p.host_port}->${p.guest_port}/${p.protocol}`;
}

/**
 * Validate and normalise published ports: `protocol` defaults to tcp, `host_ip` to
 * 127.0.0.1 (IPv4 only: QEMU 7.2's host forwarding listens on IPv4). A host port may be
 * published once per protocol.
 */
export function normalizePorts(ports: readonly PortMappingRequest[]): PortMapping[] {
  const out: PortMapping[] = [];
  for (const p of ports) {
    const m: PortMapping = {
      host_ip: p.host_ip ?? '127.0.0.1',
      host_port: p.host_port,
      guest_port: p.guest_port,
      protocol: p.protocol ?? 'tcp',
    };
    for (const [field, v] of [
      ['host_port', m.host_port],
      ['guest_port', m.guest_port],
    ] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 65535)
        throw invalid(`port ${field} ${v} must be an integer in 1..65535`, { port: m });
    }
    if (m.protocol !== 'tcp' && m.protocol !== 'udp')
      throw invalid(`port protocol "${String(m.protocol)}" must be tcp or udp`);
    if (!net.isIPv4(m.host_ip))
      throw invalid(`port host_ip "${m.host_ip}" must be an IPv4 address`, { port: m });
    const dup = out.find((o) => o.host_port === m.host_port && o.protocol === m.protocol);
    if (dup) {
      throw invalid(
        `host port ${m.host_port}/${m.protocol} is published twice (${formatPort(dup)} and ${formatPort(m)})`,
        { host_port: m.host_port, protocol: m.protocol },
      );
    }
    out.push(m);
  }
  return out;
}

/**
 * Resolve a create request's network: the guest section and the host record. Enabled
 * means user mode with the guest at 10.0.2.15/24; egress is off unless asked for. The
 * default is enabled exactly when the request publishes a port or asks for egress: a NIC
 * that can reach nothing and that nothing reaches would only cost boot time. Disabled
 * means loopback only, and then no port may be published.
 */
export function resolveNetwork(
  id: string,
  req: NetworkRequest,
  ctx?: BridgeContext,
): { guest: GuestNetwork; host: HostNetwork } {
  const ports = normalizePorts(req.ports ?? []);
  const n = req.network;
  const enabled =
    n?.mode === 'none'
      ? false
      : (n?.enabled ??
        (ports.length > 0 || n?.egress === true || n?.mode !== undefined || n?.name !== undefined));
  if (n?.mode !== undefined && n.mode !== 'none' && n.enabled === false)
    throw invalid(`network.mode "${n.mode}" contradicts network.enabled false`);
  if (!enabled) {
    if (ports.length > 0)
      throw invalid(
        `ports cannot be published with networking disabled (${formatPort(ports[0]!)})`,
      );
    if (req.network?.egress) throw invalid('network.egress needs networking enabled');
    if (req.network?.name !== undefined) throw invalid('network.name needs networking enabled');
    return {
      guest: { interfaces: [], nameservers: [] },
      host: { mode: 'none', egress: false, mac: null, ports: [] },
    };
  }
  const subnet = chooseBridge(req, ctx);
  if (subnet) return resolveBridge(subnet, macFor(id), req, ports);
  const egress = req.network?.egress ?? false;
  const udp = ports.find((p) => p.protocol === 'udp');
  if (udp && !egress) {
    // Measured on QEMU 7.2 / libslirp 4.7: with restrict=on the guest's UDP replies are
    // dropped, so a UDP forward would accept datagrams and never answer.
    throw invalid(
      `publishing a UDP port (${formatPort(udp)}) needs network.egress in user mode: ` +
        `QEMU's isolated user-mode network drops the guest's UDP replies`,
      { port: udp },
    );
  }
  const mac = macFor(id);
  return {
    guest: {
      interfaces: [
        {
          mac,
          address: USER_NET.guestIp,
          prefix: USER_NET.prefix,
          gateway: USER_NET.gateway,
          mtu: 1500,
        },
      ],
      // Without egress slirp drops DNS too; an empty list makes lookups fail fast.
      nameservers: egress ? [USER_NET.dns] : [],
    },
    host: { mode: 'user', egress, mac, ports },
  };
}

/** The stored guest config with the network added (what `create` keeps in the row). */
export function withNetwork(
  guest: GuestConfig,
  resolved: { guest: GuestNetwork; host: HostNetwork },
): Record<string, unknown> {
  return { ...guest, network: resolved.guest, [HOST_KEY]: resolved.host };
}

/** The stored guest config without the host-only record: what goes on the config disk. */
export function guestDiskConfig(stored: Record<string, unknown>): GuestConfig {
  const { [HOST_KEY]: _host, ...rest } = stored;
  return rest as unknown as GuestConfig;
}

/** The host record of a stored guest config; instances created before networking have none. */
export function hostNetwork(stored: Record<string, unknown>): HostNetwork {
  const h = stored[HOST_KEY] as HostNetwork | undefined;
  return h ?? { mode: 'none', egress: false, mac: null, ports: [] };
}

/** The instance view's `network` and `ports`. */
export function networkView(stored: Record<string, unknown>): {
  network: InstanceNetwork;
  ports: PortMapping[];
} {
  const h = hostNetwork(stored);
  const user = h.mode === 'user';
  return {
    network: {
      mode: h.mode,
      // The hypeman API's `enabled` and `name` ("default" unless in a bridge network group).
      enabled: h.mode !== 'none',
      ...(h.mode === 'none' ? {} : { name: h.group ?? 'default' }),
      ip: user ? USER_NET.guestIp : (h.ip ?? null),
      gateway: user ? USER_NET.gateway : (h.gateway ?? null),
      mac: h.mac,
      egress: h.egress,
      ...(h.mode === 'bridge' ? { group: h.group ?? null } : {}),
    },
    ports: [...h.ports],
  };
}

/** The VMM's NIC for a stored user-mode guest config (undefined: no NIC, or bridge mode's TAP). */
export function vmNet(stored: Record<string, unknown>): UserNet | undefined {
  const h = hostNetwork(stored);
  if (h.mode !== 'user' || h.mac === null) return undefined;
  return {
    mode: 'user',
    mac: h.mac,
    // With egress, passt: QEMU's slirp would hand the guest the host's loopback as 10.0.2.2.
    stack: h.egress ? 'passt' : 'slirp',
    isolated: !h.egress,
    forwards: h.ports.map((p) => ({
      protocol: p.protocol,
      hostIp: p.host_ip,
      hostPort: p.host_port,
      guestPort: p.guest_port,
    })),
  };
}

/** Try to bind `p` on the host; resolves with the bind error's errno code, or null when free. */
function probe(p: PortMapping): Promise<string | null> {
  return new Promise((resolve) => {
    if (p.protocol === 'udp') {
      const s = dgram.createSocket('udp4');
      s.once('error', (err) => {
        s.close();
        resolve(errnoCode(err) ?? 'EUNKNOWN');
      });
      s.bind({ address: p.host_ip, port: p.host_port, exclusive: true }, () =>
        s.close(() => resolve(null)),
      );
      return;
    }
    const s = net.createServer();
    s.once('error', (err) => resolve(errnoCode(err) ?? 'EUNKNOWN'));
    s.listen({ host: p.host_ip, port: p.host_port, exclusive: true }, () =>
      s.close(() => resolve(null)),
    );
  });
}

function portError(name: string, p: PortMapping, code: string, cause?: unknown): VesselError {
  const where = `${p.host_ip}:${p.host_port}/${p.protocol}`;
  const details = { host_ip: p.host_ip, host_port: p.host_port, protocol: p.protocol };
  const opts = { details, ...(cause === undefined ? {} : { cause }) };
  switch (code) {
    case 'EADDRINUSE':
      return new VesselError(
        'port_in_use',
        `cannot publish ${formatPort(p)} for instance "${name}": host port ${where} is already in use`,
        opts,
      );
    case 'EADDRNOTAVAIL':
      return new VesselError(
        'invalid_argument',
        `cannot publish ${formatPort(p)} for instance "${name}": ${p.host_ip} is not an address of this host`,
        opts,
      );
    default:
      return new VesselError(
        'internal',
        `cannot publish ${formatPort(p)} for instance "${name}": binding ${where} failed (${code})`,
        opts,
      );
  }
}

/**
 * Check that every published host port can be bound, before the VMM tries: a taken port
 * is a `port_in_use` conflict naming it, not a failed boot.
 */
export async function assertPortsFree(
  name: string,
  stored: Record<string, unknown>,
): Promise<void> {
  for (const p of hostNetwork(stored).ports) {
    const code = await probe(p);
    if (code !== null) throw portError(name, p, code);
  }
}

/**
 * After the VMM failed to start: when one of the instance's host ports is now taken
 * (someone bound it between the check and the VMM), the failure is that conflict.
 * Otherwise the original error. Always rejects.
 */
export async function rethrowStartFailure(
  name: string,
  stored: Record<string, unknown>,
  err: unknown,
): Promise<never> {
  for (const p of hostNetwork(stored).ports) {
    const code = await probe(p).catch(() => null);
    if (code === 'EADDRINUSE') throw portError(name, p, code, err);
  }
  throw toVesselError(err, `starting instance "${name}"`);
}

/**
 * The stored guest config of a fork: published ports stay with the source (two instances
 * cannot own one host port), and a cold fork gets its own MAC. A standby fork keeps the
 * source's MAC, because the NIC state in its saved memory carries it.
 */
export function forkNetwork(
  stored: Record<string, unknown>,
  newId: string,
  keepMac: boolean,
): Record<string, unknown> {
  const host = hostNetwork(stored);
  if (host.mode === 'none') return stored;
  const mac = keepMac ? host.mac : macFor(newId);
  const guest = stored.network as GuestNetwork | undefined;
  return {
    ...stored,
    ...(guest
      ? {
          network: {
            ...guest,
            interfaces: guest.interfaces.map((i) => ({ ...i, mac: mac ?? i.mac })),
          },
        }
      : {}),
    [HOST_KEY]: { ...host, mac, ports: [] },
  };
}
