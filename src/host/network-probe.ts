/**
 * What bridge (TAP) networking needs from this host, gathered without changing anything:
 * CAP_NET_ADMIN, the `ip` tool, a firewall tool (nft, else iptables), IPv4 forwarding
 * in this network namespace, and whether the bridge exists already.
 */
import fs from 'node:fs/promises';
import { run } from '../core/process.js';

export interface NetworkFacts {
  /** The daemon may manage links (bit 12 of CapEff). */
  readonly netAdmin: boolean;
  readonly ipTool: boolean;
  readonly firewall: 'nftables' | 'iptables' | null;
  /** `net.ipv4.ip_forward` here; null when unreadable. */
  readonly ipForward: boolean | null;
  readonly bridge: { readonly name: string; readonly exists: boolean };
}

async function works(file: string, args: string[]): Promise<boolean> {
  try {
    return (await run(file, args, { allowFailure: true, timeoutMs: 10_000 })).code === 0;
  } catch {
    return false;
  }
}

export async function inspectNetworking(bridge = 'vessel0'): Promise<NetworkFacts> {
  const status = await fs.readFile('/proc/self/status', 'utf8').catch(() => '');
  const cap = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  const netAdmin = cap !== undefined && ((BigInt(`0x${cap}`) >> 12n) & 1n) === 1n;
  const fwd = await fs.readFile('/proc/sys/net/ipv4/ip_forward', 'utf8').catch(() => null);
  const [ipTool, nft, ipt, exists] = await Promise.all([
    works('ip', ['-V']),
    works('nft', ['--version']),
    works('iptables', ['--version']),
    works('ip', ['link', 'show', 'dev', bridge]),
  ]);
  return {
    netAdmin,
    ipTool,
    firewall: nft ? 'nftables' : ipt ? 'iptables' : null,
    ipForward: fwd === null ? null : fwd.trim() === '1',
    bridge: { name: bridge, exists },
  };
}
