/**
 * The QEMU command line for a Vessel microVM, as a pure function of the spec.
 */
import { isIPv4 } from 'node:net';
import { VesselError } from '../../core/errors.js';
import { passtFiles } from '../passt.js';

/** TCG translation buffer (MiB); fits inside the default memory overhead with room. */
export const TCG_TB_SIZE_MIB = 256;
import { USER_NET, type VmNet, type VmSpec } from '../types.js';

/** The QEMU binary Vessel runs. */
export const QEMU_BINARY = 'qemu-system-x86_64';

/** The virtio-serial port name of the host⇄guest control channel. */
export const CONTROL_PORT_NAME = 'vessel.control';

/**
 * Kernel arguments for a microVM guest (PRODUCT.md §3): console on the first
 * UART, reboot on panic, quiet, and the options that shave boot time under TCG.
 */
export const GUEST_KERNEL_ARGS: readonly string[] = [
  'console=ttyS0',
  'panic=-1',
  'quiet',
  'loglevel=0',
  'i8042.noaux',
  'i8042.nopnp',
  '8250.nr_uarts=1',
  'mitigations=off',
  'random.trust_cpu=on',
  'cryptomgr.notests',
  'no_timer_check',
];

/**
 * QEMU's seccomp filter: on, and also refusing the obsolete system calls, any set*uid /
 * set*gid, fork/exec, and scheduler/affinity changes. Migration then goes through sockets
 * (snapshot.ts), never `exec:`.
 */
export const SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/**
 * A host write error (the data directory's filesystem full) is the guest's I/O error, as
 * on a real disk. QEMU's default (`werror=enospc`) pauses the whole VM instead, which the
 * daemon would still show as Running while every exec and copy hangs.
 */
const WRITE_ERRORS = ',werror=report';

/** What a confined start changes on the command line. */
export interface QemuConfinedArgs {
  /** Turn QEMU's seccomp sandbox on. */
  readonly sandbox?: boolean;
  /** The TAP is already open on this fd (the jailer opened it). */
  readonly tapFd?: number;
}

/**
 * Escape a value for a QEMU `-opt key=value,...` list: a comma is written
 * as two commas.
 */
export function qemuOptValue(value: string): string {
  return value.replaceAll(',', ',,');
}

const SERIAL_RE = /^[A-Za-z0-9._-]{1,20}$/;

function invalid(spec: VmSpec, what: string): VesselError {
  return new VesselError('invalid_argument', `VM "${spec.id}": ${what}`);
}

function validate(spec: VmSpec): void {
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > 255) {
    throw invalid(spec, `vcpus must be an integer in 1..255, got ${spec.vcpus}`);
  }
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 32) {
    throw invalid(spec, `memoryMiB must be an integer ≥ 32, got ${spec.memoryMiB}`);
  }
  if (spec.diskIoBps !== undefined && (!Number.isInteger(spec.diskIoBps) || spec.diskIoBps < 1)) {
    throw invalid(spec, `diskIoBps must be a positive integer, got ${spec.diskIoBps}`);
  }
  if (spec.tscKhz !== undefined && (!Number.isInteger(spec.tscKhz) || spec.tscKhz <= 0)) {
    throw invalid(spec, `tscKhz must be a positive integer, got ${spec.tscKhz}`);
  }
  const serials = new Set<string>();
  for (const d of spec.disks) {
    if (!SERIAL_RE.test(d.serial)) {
      throw invalid(spec, `disk serial "${d.serial}" must be 1-20 characters of [A-Za-z0-9._-]`);
    }
    if (serials.has(d.serial)) throw invalid(spec, `disk serial "${d.serial}" is used twice`);
    serials.add(d.serial);
  }
  if (spec.net) validateNet(spec, spec.net);
  for (const a of spec.cmdline) {
    if (/[\n\r\0]/.test(a))
      throw invalid(spec, `kernel argument ${JSON.stringify(a)} has a newline or NUL`);
  }
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function validateNet(spec: VmSpec, net: VmNet): void {
  if (!MAC_RE.test(net.mac))
    throw invalid(spec, `MAC "${net.mac}" must be lower-case aa:bb:cc:dd:ee:ff`);
  if (net.mode === 'tap') {
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(net.ifname))
      throw invalid(spec, `TAP name "${net.ifname}" must be 1-15 characters of [A-Za-z0-9_.-]`);
    return;
  }
  if (net.stack === 'passt' && net.isolated)
    throw invalid(
      spec,
      'an isolated user-mode NIC uses slirp (restrict=on); passt has no such mode',
    );
  const seen = new Set<string>();
  for (const f of net.forwards) {
    const what = `port forward ${f.hostIp}:${f.hostPort}->${f.guestPort}/${f.protocol}`;
    for (const p of [f.hostPort, f.guestPort]) {
      if (!Number.isInteger(p) || p < 1 || p > 65535)
        throw invalid(spec, `${what}: ports must be integers in 1..65535`);
    }
    if (!isIPv4(f.hostIp)) throw invalid(spec, `${what}: host address must be IPv4`);
    const key = `${f.protocol}:${f.hostPort}`;
    if (seen.has(key))
      throw invalid(spec, `${what}: host port ${f.hostPort}/${f.protocol} is used twice`);
    seen.add(key);
  }
}

/**
 * `-netdev`/`-device` for the VM's NIC. User mode with passt: a stream netdev to passt's
 * unix socket (passt holds the addressing and the published ports). User mode with slirp
 * (isolated guests only): QEMU's slirp on {@link USER_NET} (addresses passed explicitly so
 * host and guest config agree by construction), no IPv6 (the guest is configured for IPv4
 * only, and slirp's IPv6 would also lead to the host's `::1`), `restrict=on`, one `hostfwd`
 * per published port to the guest's fixed address. TAP mode: a prepared TAP opened by name,
 * no up/down scripts. The microvm machine has no PCI: the NIC is a virtio-mmio device.
 */
export function netArgs(net: VmNet, tapFd?: number, streamSocket?: string): string[] {
  const o = qemuOptValue;
  const device = ['-device', `virtio-net-device,netdev=net0,mac=${net.mac}`];
  if (net.mode === 'user' && net.stack === 'passt') {
    if (streamSocket === undefined) throw new Error('a passt NIC needs its socket path');
    return [
      '-netdev',
      `stream,id=net0,server=off,addr.type=unix,addr.path=${o(streamSocket)}`,
      ...device,
    ];
  }
  if (net.mode === 'tap') {
    // Confined: the jailer opened the TAP and left it on `tapFd` (no capability needed).
    if (tapFd !== undefined) return ['-netdev', `tap,id=net0,fd=${tapFd}`, ...device];
    // TAP mode: the host set the device up; QEMU must not run /etc/qemu-ifup.
    return ['-netdev', `tap,id=net0,ifname=${o(net.ifname)},script=no,downscript=no`, ...device];
  }
  const opts = [
    'user',
    'id=net0',
    `net=${USER_NET.subnet}`,
    `host=${USER_NET.gateway}`,
    `dns=${USER_NET.dns}`,
    'ipv6=off',
    `restrict=${net.isolated ? 'on' : 'off'}`,
    ...net.forwards.map(
      (f) =>
        `hostfwd=${f.protocol}:${o(f.hostIp)}:${f.hostPort}-${USER_NET.guestIp}:${f.guestPort}`,
    ),
  ];
  return ['-netdev', opts.join(','), ...device];
}

/** The kernel command line: the spec's args plus `tsc_early_khz` under TCG unless given. */
export function kernelCmdline(spec: VmSpec): string {
  const args = spec.cmdline.filter((a) => a !== '');
  if (
    spec.accel === 'tcg' &&
    spec.tscKhz !== undefined &&
    !args.some((a) => a.startsWith('tsc_early_khz='))
  ) {
    args.push(`tsc_early_khz=${spec.tscKhz}`);
  }
  return args.join(' ');
}

/**
 * Build the argument vector (without the binary) for `qemu-system-x86_64`.
 *
 * The VM starts with its vCPUs stopped (`-S`): the caller connects the
 * console and QMP first, then sends `cont`, so no console byte is lost.
 */
export function buildQemuArgs(spec: VmSpec, confined: QemuConfinedArgs = {}): string[] {
  validate(spec);
  const o = qemuOptValue;
  const args: string[] = [
    '-name',
    `vessel-${o(spec.id)}`,
    // microvm finds its virtio-mmio devices through ACPI on the Debian cloud kernel.
    '-machine',
    'microvm,acpi=on',
  ];
  if (spec.accel === 'kvm') args.push('-accel', 'kvm', '-cpu', 'host');
  // TCG's translated-code cache defaults to 1 GiB in QEMU 7.2: more than the VM's cgroup
  // allows beyond guest RAM (memory_overhead_mib), so busy guests got OOM-killed. 256 MiB.
  else args.push('-accel', `tcg,tb-size=${TCG_TB_SIZE_MIB}`);
  args.push(
    '-m',
    `${spec.memoryMiB}M`,
    '-smp',
    String(spec.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-S',
    '-kernel',
    spec.kernel,
    '-initrd',
    spec.initrd,
    '-append',
    kernelCmdline(spec),
    // Console: a socket the daemon follows live; QEMU itself appends every byte
    // it delivers to the serial log.
    '-chardev',
    `socket,id=con,path=${o(spec.consoleSocket)},server=on,wait=off,logfile=${o(spec.serialLog)},logappend=on`,
    '-serial',
    'chardev:con',
  );
  // One throttle group for every disk: the limit is the VM's, not each disk's.
  const throttle =
    spec.diskIoBps !== undefined
      ? `,throttling.bps-total=${spec.diskIoBps},throttling.group=vessel-io`
      : '';
  spec.disks.forEach((d, i) => {
    const id = `disk${i}`;
    args.push(
      '-drive',
      `file=${o(d.path)},format=${d.format},if=none,id=${id},readonly=${d.readonly ? 'on' : 'off'},cache=writeback${d.readonly ? '' : WRITE_ERRORS}${throttle}`,
      '-device',
      `virtio-blk-device,drive=${id},serial=${d.serial}`,
    );
  });
  if (spec.net) args.push(...netArgs(spec.net, confined.tapFd, passtFiles(spec).socket));
  args.push(
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=ctl,path=${o(spec.controlSocket)},server=on,wait=off`,
    '-device',
    `virtserialport,chardev=ctl,name=${CONTROL_PORT_NAME}`,
    '-device',
    'virtio-rng-device',
    '-qmp',
    `unix:${o(spec.qmpSocket)},server=on,wait=off`,
  );
  // Restore: the state is streamed in over QMP (`migrate-incoming`) once it connects.
  if (spec.incoming !== undefined) args.push('-incoming', 'defer');
  if (confined.sandbox) args.push('-sandbox', SANDBOX);
  return args;
}
