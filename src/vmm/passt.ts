/**
 * passt: the user-mode network stack of guests with egress (network README, "User mode").
 * One passt process per VM, started before the VMM and connected to it over a unix socket
 * in the VM's run directory (`-netdev stream`). Unlike QEMU's built-in slirp it does not
 * map the gateway to the host's loopback (`--no-map-gw`). A confined VM's passt goes
 * through the jailer like its VMM: the VM's own uid (so the host's egress guard can tell
 * its connections apart), a mount namespace with only its run directory, no capabilities.
 * It quits when the VMM closes the socket (`--one-off`).
 */
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { hostNameservers } from '../core/resolv.js';
import { errnoCode } from '../core/errors.js';
import { vmmError } from './errors.js';
import { USER_NET, type PortForward, type VmSpec } from './types.js';

/** The passt binary (Debian's `passt` package). */
export const PASST_BINARY = 'passt';

/** passt's files in a VM's run directory (beside its QMP socket). */
export function passtFiles(spec: Pick<VmSpec, 'qmpSocket'>): {
  socket: string;
  pidFile: string;
  log: string;
} {
  const dir = path.dirname(spec.qmpSocket);
  return {
    socket: path.join(dir, 'passt.sock'),
    pidFile: path.join(dir, 'passt.pid'),
    log: path.join(dir, 'passt.log'),
  };
}

/** passt's `-t`/`-u` spec for one protocol: `addr/hostport:guestport,...`, or `none`. */
function portSpec(forwards: readonly PortForward[], protocol: 'tcp' | 'udp'): string {
  const list = forwards
    .filter((f) => f.protocol === protocol)
    .map((f) => `${f.hostIp}/${f.hostPort}:${f.guestPort}`);
  return list.length > 0 ? list.join(',') : 'none';
}

/**
 * passt's arguments for a VM: IPv4 only, the same fixed addressing as slirp (so the guest's
 * config does not depend on the stack), DNS queries to {@link USER_NET.dns} forwarded to
 * `dns` (the host's first IPv4 resolver, passed in: a jailed passt cannot read
 * /etc/resolv.conf), no DHCP (the guest is configured from its config disk), and the
 * published ports (every UDP forward explicit: passt would otherwise mirror each TCP port
 * in UDP).
 */
export function passtArgs(
  spec: Pick<VmSpec, 'qmpSocket'>,
  forwards: readonly PortForward[],
  dns: string | undefined,
  guarded = false,
): string[] {
  const f = passtFiles(spec);
  return [
    '--one-off',
    '--ipv4-only',
    // Unguarded, the gateway must not be the host. Guarded (the host's egress guard refuses
    // this passt's connections to any host address), the mapping stays: passt needs it to
    // present loopback clients of published ports to the guest (with --no-map-gw their
    // source stays 127.0.0.1, which the guest drops as martian).
    ...(guarded ? [] : ['--no-map-gw']),
    '--no-dhcp',
    '--no-ndp',
    '--no-dhcpv6',
    '--no-ra',
    '--address',
    USER_NET.guestIp,
    '--netmask',
    String(USER_NET.prefix),
    '--gateway',
    USER_NET.gateway,
    '--dns',
    dns ?? 'none',
    '--search',
    'none',
    ...(dns ? ['--dns-forward', USER_NET.dns] : []),
    '--socket',
    f.socket,
    '--pid',
    f.pidFile,
    '--quiet',
    '--tcp-ports',
    portSpec(forwards, 'tcp'),
    '--udp-ports',
    portSpec(forwards, 'udp'),
  ];
}

/** The last lines of passt's log (its reason for refusing to start), or ''. */
async function logTail(file: string): Promise<string> {
  const text = await fsp.readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .map((l) => l.replace(/^\s*[\d.]+:\s*/, '').trim())
    .filter((l) => l !== '' && !/^passt |syslog/.test(l))
    .slice(-3)
    .join('; ');
}

/** Signal a passt started by {@link startPasst} (by its pid file); quiet when it is gone. */
export async function killPasst(spec: Pick<VmSpec, 'qmpSocket'>): Promise<void> {
  const { pidFile } = passtFiles(spec);
  const pid = Number((await fsp.readFile(pidFile, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    // Only if it is still that passt (the pid may have been reused since).
    const cmdline = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8');
    if (cmdline.includes(pidFile)) process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/**
 * Start passt for `spec` and resolve once its socket is listening: passt forks into the
 * background after initialising, so the foreground process exiting 0 is the signal.
 * Anything else is a `spawn` error with passt's own reason (no external interface, a port
 * already bound, ...). `command` wraps passt's program and arguments (the jailer, when the
 * VM is confined); `binary` is passt itself.
 */
export async function startPasst(
  spec: Pick<VmSpec, 'qmpSocket' | 'id'>,
  forwards: readonly PortForward[],
  command: (program: string, args: string[]) => Promise<{ file: string; args: string[] }>,
  guarded: boolean,
  binary = PASST_BINARY,
): Promise<void> {
  const f = passtFiles(spec);
  await Promise.all([f.socket, f.pidFile, f.log].map((p) => fsp.rm(p, { force: true })));
  const dns = (await hostNameservers()).find((a) => net.isIPv4(a));
  const cmd = await command(binary, passtArgs(spec, forwards, dns, guarded));
  // Its stderr (the reason it refuses to start) goes to a file the daemon opens.
  const log = await fsp.open(f.log, 'w', 0o600);
  let result: { code: number | null; error?: Error };
  try {
    result = await new Promise((resolve) => {
      const child = spawn(cmd.file, cmd.args, {
        stdio: ['ignore', log.fd, log.fd],
        detached: true,
      });
      child.once('error', (error) => resolve({ code: null, error }));
      child.once('exit', (code) => resolve({ code }));
    });
  } finally {
    await log.close();
  }
  if (result.error) {
    const missing = errnoCode(result.error) === 'ENOENT';
    throw vmmError(
      'spawn',
      missing
        ? `user-mode networking with egress needs passt, which is not installed (apt-get install passt)`
        : `passt for VM "${spec.id}" could not run: ${result.error.message}`,
      { cause: result.error },
    );
  }
  if (result.code !== 0) {
    const why = await logTail(f.log);
    throw vmmError(
      'spawn',
      `passt (user-mode network) for VM "${spec.id}" exited with code ${result.code}` +
        (why ? `: ${why}` : '') +
        (/external interface/i.test(why)
          ? ' (user-mode egress needs a host interface with a default route)'
          : ''),
      { details: { log: f.log } },
    );
  }
}
