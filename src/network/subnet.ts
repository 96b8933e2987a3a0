/**
 * IPv4 subnet arithmetic and guest address allocation: pure functions, no I/O. The
 * gateway is the first host address (on the bridge); guests get the rest, up to the
 * address before broadcast.
 */
import { isIPv4 } from 'node:net';
import { VesselError } from '../core/errors.js';

/** A parsed subnet: `10.88.0.0/16` → network, prefix, gateway `10.88.0.1`. */
export interface Subnet {
  readonly cidr: string;
  /** The network address as a 32-bit unsigned number. */
  readonly base: number;
  readonly prefix: number;
  readonly gateway: string;
  /** How many guest addresses the subnet holds (gateway, network and broadcast excluded). */
  readonly capacity: number;
}

/** `10.88.0.5` → 0x0a580005. */
export function ipToInt(ip: string): number {
  if (!isIPv4(ip)) throw new VesselError('invalid_argument', `"${ip}" is not an IPv4 address`);
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => String(Math.floor(n / 2 ** s) % 256)).join('.');
}

/**
 * Parse `a.b.c.d/N`. The prefix must leave room for a gateway and at least one guest
 * (N ≤ 30); the address must be the network address, so a typo is caught, not rounded.
 */
export function parseSubnet(cidr: string): Subnet {
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(cidr);
  const prefix = m ? Number(m[2]) : NaN;
  if (!m?.[1] || !isIPv4(m[1]) || !(prefix >= 8 && prefix <= 30)) {
    throw new VesselError(
      'invalid_config',
      `network.subnet "${cidr}" must be an IPv4 CIDR a.b.c.d/N with N in 8..30`,
    );
  }
  const base = ipToInt(m[1]);
  const size = 2 ** (32 - prefix);
  if (base % size !== 0) {
    throw new VesselError(
      'invalid_config',
      `network.subnet "${cidr}" is not a network address (did you mean ${intToIp(base - (base % size))}/${prefix}?)`,
    );
  }
  return { cidr, base, prefix, gateway: intToIp(base + 1), capacity: size - 3 };
}

/** Whether `ip` is a guest address of `subnet` (not network, gateway or broadcast). */
export function isGuestAddress(subnet: Subnet, ip: string): boolean {
  if (!isIPv4(ip)) return false;
  const off = ipToInt(ip) - subnet.base;
  return off >= 2 && off < subnet.capacity + 2;
}

/**
 * The next free guest address after `last` (round robin, wrapping), so a just-released
 * address is not handed out again while others are free (stale ARP caches, late packets).
 * Throws `network_exhausted` when every address is taken.
 */
export function nextFreeAddress(
  subnet: Subnet,
  used: ReadonlySet<string>,
  last?: string | null,
): string {
  const start = last && isGuestAddress(subnet, last) ? ipToInt(last) - subnet.base - 1 : 0;
  for (let i = 0; i < subnet.capacity; i++) {
    const ip = intToIp(subnet.base + 2 + ((start + i) % subnet.capacity));
    if (!used.has(ip)) return ip;
  }
  throw new VesselError(
    'network_exhausted',
    `no free guest address in ${subnet.cidr}: all ${subnet.capacity} are taken; delete instances or configure a larger network.subnet`,
    { details: { subnet: subnet.cidr, capacity: subnet.capacity } },
  );
}
