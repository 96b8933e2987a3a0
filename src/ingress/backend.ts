import type { WireInstance } from '../core/wire.js';
import type { Backend } from './proxy.js';

/**
 * Where the daemon reaches `guestPort` of an instance: its own address on a routed
 * network (bridge/TAP: any mode besides `user` and `none` that has an IP), or, in user
 * mode, the TCP host port published for that guest port (a wildcard bind is reached over
 * loopback). Undefined when neither exists.
 */
export function backendFor(instance: WireInstance, guestPort: number): Backend | undefined {
  const net = instance.network;
  if (net.mode !== 'user' && net.mode !== 'none' && net.ip)
    return { host: net.ip, port: guestPort };
  const published = instance.ports.find((p) => p.protocol === 'tcp' && p.guest_port === guestPort);
  if (!published) return undefined;
  const host = published.host_ip === '0.0.0.0' ? '127.0.0.1' : published.host_ip;
  return { host, port: published.host_port };
}
