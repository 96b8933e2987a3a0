import type { AcceleratorProbe, KvmProblem } from './kvm-probe.js';
import type { NetworkFacts } from './network-probe.js';
import type { HostResources } from './resources.js';
import type { ErofsInfo, QemuInfo, VersionedTool } from './tools.js';

export type CheckStatus = 'ok' | 'warn' | 'fail';

/** One line of `vessel doctor`: what was checked, what was found, how to fix it. */
export interface Check {
  id: string;
  title: string;
  status: CheckStatus;
  detail: string;
  /** Exactly what to do; present whenever status is not `ok`. */
  fix?: string;
}

export interface TunState {
  readonly present: boolean;
  /** Set when /dev/net/tun exists but is unusable (not a char device, cannot be opened). */
  readonly problem?: string;
}

/** `/dev/vhost-vsock`, which QEMU's vhost-vsock device needs. */
export interface VsockState {
  readonly present: boolean;
  /** Set when the device exists but is unusable, or cannot be inspected. */
  readonly problem?: string;
}

/** Everything the checks are judged from; gathered by `probeHost`. */
export interface HostFacts {
  readonly resources: HostResources;
  readonly qemu: QemuInfo;
  readonly accelerators: AcceleratorProbe;
  readonly tun: TunState;
  readonly vsock: VsockState;
  readonly erofs: ErofsInfo;
  readonly ext4: VersionedTool;
  readonly firecracker: VersionedTool;
  readonly cloudHypervisor: VersionedTool;
  /** Bridge networking prerequisites; absent: not inspected. */
  readonly network?: NetworkFacts;
}

const GiB = 1024 ** 3;
export const DISK_WARN_BYTES = 5 * GiB;
export const DISK_FAIL_BYTES = 1 * GiB;
/** The QEMU release Vessel is developed and tested against. */
const QEMU_TESTED_MAJOR = 7;
const INSTALL_QEMU = 'apt-get install qemu-system-x86';

const gib = (n: number): string => `${(n / GiB).toFixed(1)} GiB`;

function check(
  id: string,
  title: string,
  status: CheckStatus,
  detail: string,
  fix?: string,
): Check {
  return fix === undefined || status === 'ok'
    ? { id, title, status, detail }
    : { id, title, status, detail, fix };
}

function qemuCheck(q: QemuInfo): Check {
  const title = 'QEMU (qemu-system-x86_64)';
  if (q.path === null) {
    return check(
      'qemu',
      title,
      'fail',
      'qemu-system-x86_64 is not on PATH; no instance can start',
      INSTALL_QEMU,
    );
  }
  if (q.error !== undefined) {
    return check(
      'qemu',
      title,
      'fail',
      `${q.path} does not run: ${q.error}`,
      `reinstall QEMU: ${INSTALL_QEMU}`,
    );
  }
  if (q.version === null) {
    return check(
      'qemu',
      title,
      'warn',
      `${q.path} printed no recognisable version`,
      `reinstall QEMU: ${INSTALL_QEMU}`,
    );
  }
  if (q.version.major < QEMU_TESTED_MAJOR) {
    return check(
      'qemu',
      title,
      'warn',
      `QEMU ${q.version.text} at ${q.path} is older than the ${QEMU_TESTED_MAJOR}.2 Vessel is tested with`,
      `install QEMU ${QEMU_TESTED_MAJOR}.2 or newer (${INSTALL_QEMU} on Debian 12)`,
    );
  }
  return check('qemu', title, 'ok', `QEMU ${q.version.text} at ${q.path}`);
}

function microvmCheck(q: QemuInfo): Check {
  const title = 'QEMU microvm machine';
  if (q.path === null)
    return check('qemu-microvm', title, 'fail', 'QEMU is not installed', INSTALL_QEMU);
  if (q.machines.includes('microvm')) {
    return check('qemu-microvm', title, 'ok', '`-machine help` lists microvm');
  }
  return check(
    'qemu-microvm',
    title,
    'fail',
    `${q.path} does not list the microvm machine in \`-machine help\``,
    `install a QEMU built with microvm support (4.2 or newer): ${INSTALL_QEMU}`,
  );
}

const KVM_FIX: Record<KvmProblem, string> = {
  'no-qemu': INSTALL_QEMU,
  'no-device':
    'enable VT-x/AMD-V in the firmware (or nested virtualisation for this VM), then `modprobe kvm_intel` or `modprobe kvm_amd`',
  'no-access':
    'add the daemon user to the kvm group (`usermod -aG kvm <user>`, then log in again) or run the daemon as root',
  failed:
    'nothing is needed: Vessel runs instances under TCG. To use KVM, run on a host whose KVM boots stock guests (bare metal, or standard nested virtualisation)',
  slow: 'nothing is needed: Vessel runs instances under TCG. To use KVM, run on a host whose KVM runs guest code at hardware speed (bare metal, or standard nested virtualisation)',
};

function kvmCheck(a: AcceleratorProbe): Check {
  const title = 'KVM acceleration';
  if (a.kvm.usable) return check('kvm', title, 'ok', a.kvm.reason);
  const fallback = a.tcg.usable
    ? '; instances run under TCG (software emulation, ~4-5x slower CPU)'
    : '';
  return check(
    'kvm',
    title,
    'warn',
    `${a.kvm.reason}${fallback}`,
    KVM_FIX[a.kvmProblem ?? 'failed'],
  );
}

function tcgCheck(q: QemuInfo, a: AcceleratorProbe): Check {
  const title = 'TCG software emulation';
  if (a.tcg.usable) return check('tcg', title, 'ok', a.tcg.reason);
  const status: CheckStatus = a.kvm.usable ? 'warn' : 'fail';
  const fix =
    q.path === null
      ? INSTALL_QEMU
      : `make \`${q.path} -accel tcg -machine microvm\` run (reinstall: ${INSTALL_QEMU})`;
  return check('tcg', title, status, a.tcg.reason, fix);
}

function tunCheck(t: TunState): Check {
  const title = 'TAP networking (/dev/net/tun)';
  const fallback = '; instances get user-mode networking instead of TAP';
  if (!t.present) {
    return check(
      'tun',
      title,
      'warn',
      `/dev/net/tun does not exist${fallback}`,
      '`modprobe tun`; in a container, create it: `mkdir -p /dev/net && mknod /dev/net/tun c 10 200`',
    );
  }
  if (t.problem !== undefined) {
    return check(
      'tun',
      title,
      'warn',
      `${t.problem}${fallback}`,
      'run the daemon as root or with CAP_NET_ADMIN',
    );
  }
  return check('tun', title, 'ok', '/dev/net/tun is a character device and opens read-write');
}

/**
 * Informational: the agent channel never depends on vsock with QEMU (it has no
 * hybrid vsock; see src/vmm/README.md), so every outcome is `ok`.
 */
export function vsockCheck(v: VsockState): Check {
  const title = 'vsock (host⇄guest agent channel)';
  const uses = 'Vessel uses a virtio-serial port for the agent channel';
  if (!v.present) {
    const why =
      v.problem ?? '/dev/vhost-vsock does not exist (vhost_vsock not loaded or not built)';
    return check('vsock', title, 'ok', `${why}; not needed: ${uses}`);
  }
  if (v.problem !== undefined) {
    return check('vsock', title, 'ok', `${v.problem}; not needed: ${uses}`);
  }
  return check(
    'vsock',
    title,
    'ok',
    `/dev/vhost-vsock is usable, but QEMU offers no hybrid vsock: ${uses} all the same`,
  );
}

function erofsCheck(e: ErofsInfo): Check {
  const title = 'erofs image builder (mkfs.erofs)';
  if (e.path === null) {
    return check(
      'mkfs-erofs',
      title,
      'warn',
      'mkfs.erofs is not installed; image root filesystems are built as ext4 instead (larger, slower to build)',
      'apt-get install erofs-utils',
    );
  }
  if (e.error !== undefined) {
    return check(
      'mkfs-erofs',
      title,
      'warn',
      `${e.path} does not run: ${e.error}; falling back to ext4`,
      'apt-get install --reinstall erofs-utils',
    );
  }
  if (!e.compressors.includes('lz4')) {
    const found = e.compressors.length > 0 ? e.compressors.join(', ') : 'none listed';
    return check(
      'mkfs-erofs',
      title,
      'warn',
      `${e.path} has no lz4 compressor (compressors: ${found}); image root filesystems are built as ext4 instead`,
      'install an erofs-utils built with lz4 (Debian: apt-get install erofs-utils liblz4-1)',
    );
  }
  return check('mkfs-erofs', title, 'ok', `${e.path}; compressors: ${e.compressors.join(', ')}`);
}

function ext4Check(x: VersionedTool): Check {
  const title = 'ext4 builder (mkfs.ext4)';
  if (x.path === null) {
    return check(
      'mkfs-ext4',
      title,
      'fail',
      'mkfs.ext4 is not installed; volumes and writable layers cannot be made',
      'apt-get install e2fsprogs',
    );
  }
  const version = x.version === null ? '' : ` (e2fsprogs ${x.version.text})`;
  return check('mkfs-ext4', title, 'ok', `${x.path}${version}`);
}

function diskCheck(r: HostResources): Check {
  const title = 'Free disk in the data directory';
  const { path, free_bytes, total_bytes } = r.disk;
  const detail = `${gib(free_bytes)} free of ${gib(total_bytes)} on the filesystem of ${path}`;
  const fix = `free space on the filesystem of ${path}, or move the data directory to a larger filesystem`;
  if (free_bytes < DISK_FAIL_BYTES)
    return check('disk', title, 'fail', `${detail}; at least 1 GiB is needed`, fix);
  if (free_bytes < DISK_WARN_BYTES)
    return check('disk', title, 'warn', `${detail}; under 5 GiB, pulls may fail`, fix);
  return check('disk', title, 'ok', detail);
}

function optionalBackend(id: string, name: string, tool: VersionedTool, releases: string): Check {
  const title = `${name} (optional backend)`;
  if (tool.path === null) {
    return check(
      id,
      title,
      'warn',
      `${id} is not installed; the ${name} backend is unavailable (optional backend)`,
      `download the static \`${id}\` binary from ${releases} and put it on PATH`,
    );
  }
  const version = tool.version === null ? '' : ` ${tool.version.text}`;
  return check(id, title, 'ok', `${name}${version} at ${tool.path}`);
}

const ROOTLESS = 'instances fall back to user-mode networking (no TAP, no NAT rules)';

/** Bridge networking: CAP_NET_ADMIN + ip, a firewall tool, IPv4 forwarding. */
export function networkChecks(n: NetworkFacts): Check[] {
  const bridge = n.bridge.exists
    ? `bridge ${n.bridge.name} exists`
    : `bridge ${n.bridge.name} is created on first use`;
  return [
    n.netAdmin && n.ipTool
      ? check(
          'bridge',
          'Bridge networking',
          'ok',
          `CAP_NET_ADMIN and ip (iproute2) present; ${bridge}`,
        )
      : check(
          'bridge',
          'Bridge networking',
          'warn',
          `${n.netAdmin ? 'ip (iproute2) is missing' : 'the daemon lacks CAP_NET_ADMIN'}; ${ROOTLESS}`,
          n.netAdmin ? 'apt-get install iproute2' : 'run the daemon as root for bridge networking',
        ),
    n.firewall
      ? check(
          'firewall',
          'NAT and isolation rules',
          'ok',
          `${n.firewall} (${n.firewall === 'nftables' ? 'nft' : 'iptables; network groups need nft'})`,
        )
      : check(
          'firewall',
          'NAT and isolation rules',
          'warn',
          `neither nft nor iptables is installed; ${ROOTLESS}`,
          'apt-get install nftables',
        ),
    n.ipForward === true
      ? check('ip-forward', 'IPv4 forwarding', 'ok', 'net.ipv4.ip_forward is 1')
      : check(
          'ip-forward',
          'IPv4 forwarding',
          'warn',
          n.ipForward === null
            ? 'net.ipv4.ip_forward cannot be read'
            : 'net.ipv4.ip_forward is 0; the daemon enables it when it sets up the bridge (guests need it for egress)',
          'sysctl -w net.ipv4.ip_forward=1',
        ),
  ];
}

/** Judge the gathered facts. Pure: the same facts give the same checks. */
export function buildChecks(f: HostFacts): Check[] {
  return [
    qemuCheck(f.qemu),
    microvmCheck(f.qemu),
    kvmCheck(f.accelerators),
    tcgCheck(f.qemu, f.accelerators),
    tunCheck(f.tun),
    ...(f.network ? networkChecks(f.network) : []),
    vsockCheck(f.vsock),
    erofsCheck(f.erofs),
    ext4Check(f.ext4),
    diskCheck(f.resources),
    optionalBackend(
      'firecracker',
      'Firecracker',
      f.firecracker,
      'https://github.com/firecracker-microvm/firecracker/releases',
    ),
    optionalBackend(
      'cloud-hypervisor',
      'Cloud Hypervisor',
      f.cloudHypervisor,
      'https://github.com/cloud-hypervisor/cloud-hypervisor/releases',
    ),
  ];
}

/** How the daemon confines VMMs (decided at its start; see vmm/jail.ts). */
export interface ConfinementStatus {
  /** `confinement.enabled` in the config. */
  readonly enabled: boolean;
  /** Why it is enabled but not possible here; absent when it is active. */
  readonly blocker?: string;
  /** The cgroup layout in use, e.g. `v1 (memory, cpu, pids)`; null: no limits. */
  readonly cgroups: string | null;
}

/** The layers confining each VMM, or a loud warning when they are off. */
export function confinementCheck(s: ConfinementStatus): Check {
  const base = { id: 'confinement', title: 'VMM confinement' };
  if (!s.enabled) {
    return {
      ...base,
      status: 'warn',
      detail:
        'OFF by configuration: every VMM runs as the daemon user (root) with all capabilities, the whole host filesystem and no limits; a guest that escapes QEMU owns the host',
      fix: 'set "confinement": {"enabled": true} in config.json (or unset VESSEL_CONFINEMENT) and restart the daemon',
    };
  }
  if (s.blocker) {
    return {
      ...base,
      status: 'warn',
      detail: `not possible here: ${s.blocker}; VMMs run unconfined`,
      fix: 'run the daemon as root with the jailer built (sh jailer/build.sh)',
    };
  }
  const layers = [
    'own uid per VM',
    'mount namespace with only its files',
    'no capabilities',
    'no_new_privs',
    'seccomp (QEMU -sandbox)',
    s.cgroups ? `cgroup limits ${s.cgroups}` : null,
  ].filter((l): l is string => l !== null);
  return s.cgroups
    ? { ...base, status: 'ok', detail: layers.join(', ') }
    : {
        ...base,
        status: 'warn',
        detail: `${layers.join(', ')}; no usable cgroup controllers: no memory, CPU or pids limits`,
        fix: 'mount the cgroup v2 hierarchy (or the v1 memory, cpu and pids controllers)',
      };
}

/** How user-mode egress is kept off the host (issue 19, part A). */
export interface EgressGuardStatus {
  /** The uid-matched nft guard is loaded (daemon as root, confinement on, nft works). */
  readonly guard: boolean;
  /** Why the guard is not loaded; absent when it is. */
  readonly reason?: string;
  /** passt (the user-mode stack of guests with egress) was found. */
  readonly passt: boolean;
}

/** Whether guests with egress can reach the host, the metadata service or private ranges. */
export function egressGuardCheck(s: EgressGuardStatus): Check {
  const base = { id: 'egress_guard', title: 'Egress kept off the host' };
  if (!s.passt) {
    return {
      ...base,
      status: 'warn',
      detail: 'passt is not installed: user-mode instances with egress cannot start',
      fix: 'apt-get install passt',
    };
  }
  if (!s.guard) {
    return {
      ...base,
      status: 'warn',
      detail: `user-mode guests with egress cannot reach the host's loopback (passt --no-map-gw), but the host's other addresses, private ranges and 169.254.169.254 are not filtered: ${s.reason ?? 'guard not loaded'}`,
      fix: 'run the daemon as root with confinement on and nftables installed',
    };
  }
  return {
    ...base,
    status: 'ok',
    detail:
      "user mode: a jailed passt per VM whose connections an nft guard on the VMs' uids refuses towards every address of the host (loopback included), link-local (metadata) and private ranges; bridge mode: the same ranges refused in the forward chain",
  };
}
