/**
 * Bridge (TAP) mode for instances: choosing the mode of a request, the guest address
 * (allocated in the reservation window, stored in the row's `guest_ip` and the host
 * record), and the TAP's life — attached at boot, released when the VMM is gone, and
 * re-attached when a new daemon re-adopts a running VM. The host side is src/network.
 */
import { VesselError } from '../core/errors.js';
import type { BridgeProvider, Subnet } from '../network/index.js';
import type { InstanceRow } from '../store/index.js';
import type { TapNet } from '../vmm/index.js';
import type { InstanceCore } from './core.js';
import type { GuestConfig } from './guest-config.js';
import {
  hostNetwork,
  withNetwork,
  type GuestNetwork,
  type HostNetwork,
  type NetworkRequest,
} from './network.js';

/** What the manager sees of bridge networking (src/network's BridgeProvider). */
export type BridgeContext = Pick<
  BridgeProvider,
  'defaultMode' | 'subnet' | 'problem' | 'current' | 'ensure'
>;

function unavailable(ctx: BridgeContext | undefined, what = 'bridge networking'): VesselError {
  return new VesselError(
    'network_unavailable',
    `${what} is not available on this host: ${ctx?.problem() ?? 'not configured'}`,
  );
}

/** The mode an enabled network gets: the request's, else the daemon default. Null: user. */
export function chooseBridge(req: NetworkRequest, ctx: BridgeContext | undefined): Subnet | null {
  const asked = req.network?.mode;
  if (asked === 'user') {
    if (req.network?.name !== undefined) {
      throw new VesselError(
        'invalid_argument',
        'network.name (a network group) needs bridge mode, not user',
      );
    }
    return null;
  }
  const def = ctx?.defaultMode ?? 'auto';
  const wantBridge = asked === 'bridge' || def === 'bridge' || req.network?.name !== undefined;
  if (ctx && ctx.problem() === null) return wantBridge || def === 'auto' ? ctx.subnet : null;
  if (wantBridge) throw unavailable(ctx);
  return null;
}

/** The guest section and host record of a bridge-mode instance; the address comes later. */
export function resolveBridge(
  subnet: Subnet,
  mac: string,
  req: NetworkRequest,
  ports: HostNetwork['ports'],
): { guest: GuestNetwork; host: HostNetwork } {
  const gateway = subnet.gateway;
  return {
    guest: {
      interfaces: [{ mac, address: '', prefix: subnet.prefix, gateway, mtu: 1500 }],
      // The daemon's DNS server answers on the gateway (the one port guests may reach).
      nameservers: [gateway],
    },
    host: {
      mode: 'bridge',
      egress: req.network?.egress ?? false,
      mac,
      ports,
      ip: null,
      gateway,
      group: req.network?.name ?? null,
    },
  };
}

/** Fill in the allocated address; call inside the reservation. */
export function withAddress(
  r: { guest: GuestNetwork; host: HostNetwork },
  ip: string,
): { guest: GuestNetwork; host: HostNetwork } {
  return {
    guest: { ...r.guest, interfaces: r.guest.interfaces.map((i) => ({ ...i, address: ip })) },
    host: { ...r.host, ip },
  };
}

/**
 * A fork's network: a cold fork of a bridge-mode instance gets its own address (call
 * inside the reservation). A standby fork gets none yet: its restore allocates one and
 * tells the resumed guest (RECONFIGURE, identity.ts), whose memory holds the source's.
 */
export function forkAddress(
  core: InstanceCore,
  name: string,
  guest: Record<string, unknown>,
  host: HostNetwork,
  standby: boolean,
): { guest: Record<string, unknown>; ip: string | null } {
  if (host.mode !== 'bridge') return { guest, ip: null };
  if (standby) return { guest: withoutAddress(guest), ip: null };
  const ip = allocateAddress(core);
  const net = guest.network as GuestNetwork;
  const r = withAddress({ guest: net, host }, ip);
  return { guest: withNetwork(guest as unknown as GuestConfig, r), ip };
}

/** A stored guest config with its bridge address cleared (the next boot or restore allocates). */
export function withoutAddress(stored: Record<string, unknown>): Record<string, unknown> {
  const host = hostNetwork(stored);
  if (host.mode !== 'bridge') return stored;
  const net = stored.network as GuestNetwork;
  return withNetwork(stored as unknown as GuestConfig, {
    guest: { ...net, interfaces: net.interfaces.map((i) => ({ ...i, address: '' })) },
    host: { ...host, ip: null },
  });
}

/**
 * The VMM is gone (crash or stop, not standby): the address goes back to the pool, so an
 * instance without a VM holds nothing but its row. The next boot allocates again.
 */
export function releaseAddress(core: InstanceCore, id: string): void {
  const row = core.repo.get(id);
  if (!row || row.guest_ip === null) return;
  const host = hostNetwork(row.guest);
  const net = row.guest.network as GuestNetwork;
  const cleared = {
    guest: { ...net, interfaces: net.interfaces.map((i) => ({ ...i, address: '' })) },
    host: { ...host, ip: null },
  };
  const guest = withNetwork(row.guest as unknown as GuestConfig, cleared);
  core.repo.update({ ...row, guest_ip: null, guest });
}

/** Boot of a row whose address was released: allocate one again, in the reservation. */
export async function reallocateAddress(core: InstanceCore, id: string): Promise<void> {
  const before = core.row(id);
  if (before.guest_ip !== null || hostNetwork(before.guest).mode !== 'bridge') return;
  await core.reserve(() => {
    const row = core.row(id);
    const host = hostNetwork(row.guest);
    if (host.mode !== 'bridge' || row.guest_ip !== null) return;
    const ip = allocateAddress(core);
    const r = withAddress({ guest: row.guest.network as GuestNetwork, host }, ip);
    core.repo.update({
      ...row,
      guest_ip: ip,
      guest: withNetwork(row.guest as unknown as GuestConfig, r),
    });
  });
}

/** A free guest address for a new row; call inside the reservation. */
export function allocateAddress(core: InstanceCore): string {
  const bridge = core.o.network?.current();
  if (!bridge) throw unavailable(core.o.network);
  return bridge.allocate(core.repo.guestIps());
}

/**
 * Before the reservation: set the bridge up if this is its first use. When that fails,
 * the request is resolved again — `auto` falls back to user mode, an explicit bridge
 * request gets `network_unavailable`.
 */
export async function ensureBridge<T extends { host: HostNetwork }>(
  core: InstanceCore,
  resolved: T,
  again: () => T,
): Promise<T> {
  const ctx = core.o.network;
  if (resolved.host.mode !== 'bridge' || !ctx) return resolved;
  try {
    await ctx.ensure();
    return resolved;
  } catch (err) {
    core.log.warn({ err }, 'bridge networking could not be set up');
    return again();
  }
}

function attachRequest(row: InstanceRow, host: HostNetwork) {
  return {
    id: row.id,
    ip: host.ip ?? row.guest_ip ?? '',
    egress: host.egress,
    group: host.group ?? null,
    ports: host.ports,
  };
}

/** Boot: the instance's TAP (firewall and port proxies in place) as the VMM's NIC. */
export async function attachTap(
  core: InstanceCore,
  row: InstanceRow,
  host: HostNetwork,
): Promise<TapNet> {
  const ctx = core.o.network;
  if (!ctx || host.mac === null)
    throw unavailable(ctx, `bridge networking (instance "${row.name}")`);
  const bridge = await ctx.ensure();
  const ifname = await bridge.attach(attachRequest(row, host));
  return { mode: 'tap', mac: host.mac, ifname };
}

/** Re-adoption: put a running VM's TAP back on the bridge with its rules and proxies. */
export async function reattachTap(
  core: InstanceCore,
  row: InstanceRow,
  host: HostNetwork,
): Promise<void> {
  const ctx = core.o.network;
  if (!ctx) throw unavailable(ctx);
  await (await ctx.ensure()).reattach(attachRequest(row, host));
}

/** The VMM is gone (exit, crash, stop, standby, delete): give the TAP back. Never throws. */
export async function releaseTap(core: InstanceCore, id: string): Promise<void> {
  try {
    await core.o.network?.current()?.release(id);
  } catch (err) {
    core.log.warn({ err, id }, 'releasing the TAP failed');
  }
}
