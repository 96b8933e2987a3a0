/** The host's resolvers, as resolv.conf lists them. */
import fs from 'node:fs/promises';
import net from 'node:net';

/**
 * The `nameserver` addresses of a resolv.conf text, in order, without duplicates. A scoped
 * IPv6 address (fe80::1%eth0) cannot be used from another namespace: skipped, as is
 * anything that is not an IP address.
 */
export function nameservers(text: string): string[] {
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m?.[1] && !m[1].includes('%') && net.isIP(m[1]) !== 0 && !out.includes(m[1]))
      out.push(m[1]);
  }
  return out;
}

/** {@link nameservers} of `file` (default /etc/resolv.conf); none when it cannot be read. */
export async function hostNameservers(file = '/etc/resolv.conf'): Promise<string[]> {
  return nameservers(await fs.readFile(file, 'utf8').catch(() => ''));
}
