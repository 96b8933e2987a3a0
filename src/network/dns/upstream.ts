/** Where forwarded queries go: a configured `host[:port]`, or the host's resolver. */
import fs from 'node:fs/promises';
import net from 'node:net';
import { VesselError, errnoCode } from '../../core/errors.js';
import { nameservers } from '../../core/resolv.js';
import type { DnsEndpoint } from './server.js';

/** The first usable `nameserver` of a resolv.conf text, or undefined. */
export function firstNameserver(text: string): string | undefined {
  return nameservers(text)[0];
}

/** `1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353` → an endpoint (port 53 by default). */
export function parseEndpoint(text: string, defaultPort = 53): DnsEndpoint {
  const bad = (): VesselError =>
    new VesselError('invalid_config', `"${text}" is not an IP address with an optional :port`);
  let host = text;
  let port = defaultPort;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  const v4 = /^([^:]+):(\d+)$/.exec(text);
  if (v6?.[1]) {
    host = v6[1];
    if (v6[2]) port = Number(v6[2]);
  } else if (v4?.[1] && v4[2]) {
    host = v4[1];
    port = Number(v4[2]);
  }
  if (net.isIP(host) === 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw bad();
  return { host, port };
}

/**
 * The upstream resolver: `configured` when given, else the first nameserver of
 * `resolvConf` (default /etc/resolv.conf); undefined when there is none.
 */
export async function resolveUpstream(
  configured: string | null,
  resolvConf = '/etc/resolv.conf',
): Promise<DnsEndpoint | undefined> {
  if (configured !== null) return parseEndpoint(configured);
  let text: string;
  try {
    text = await fs.readFile(resolvConf, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  const ns = firstNameserver(text);
  return ns === undefined ? undefined : { host: ns, port: 53 };
}
