/**
 * The jailer step any backend uses: from a VM spec, the files the hypervisor may see, their
 * owners, its cgroup, and the `vessel-jailer` command line that starts the hypervisor
 * confined (see jailer/src/main.rs for what the jailer itself does, and README.md here).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { jailerBinaryPath } from '../core/assets.js';
import { errnoCode } from '../core/errors.js';
import { createVmCgroup, type CgroupLayout, type CgroupLimits, type VmCgroup } from './cgroups.js';
import type { VmSpec } from './types.js';

/** Per-VM identity and limits, chosen by the caller (instances/ allocates the uid). */
export interface VmJail {
  /** Unprivileged uid and gid of the hypervisor process (never 0). */
  readonly uid: number;
  readonly gid: number;
  /** Limits of the VM's cgroup; absent when the host has no usable cgroup controllers. */
  readonly limits?: CgroupLimits;
}

/** Host-wide confinement settings of a hypervisor backend (the daemon decides them). */
export interface Confinement {
  /** The `vessel-jailer` binary. */
  readonly jailer: string;
  /** An empty directory: the mount point of every jail's root (each in its own namespace). */
  readonly rootDir: string;
  /** The cgroup layout, or null when no controller is usable (limits are then skipped). */
  readonly cgroups: CgroupLayout | null;
}

export type BindKind = 'ro' | 'rw' | 'dev';

export interface Bind {
  readonly path: string;
  readonly kind: BindKind;
}

/** What a dynamically linked hypervisor needs to run at all: its code and the loader cache. */
const SYSTEM_PATHS = [
  '/usr',
  '/lib',
  '/lib64',
  '/lib32',
  '/libx32',
  '/bin',
  '/sbin',
  '/etc/ld.so.cache',
];
const DEVICES = ['/dev/null', '/dev/zero', '/dev/urandom', '/dev/random'];

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}

function under(dir: string, p: string): boolean {
  const rel = path.relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** System code (read-only), the devices that exist, and the run directory (read-write). */
async function baseBinds(
  system: readonly string[],
  devices: readonly string[],
  runDir: string,
): Promise<Bind[]> {
  const binds: Bind[] = [];
  for (const p of system) if (await exists(p)) binds.push({ path: p, kind: 'ro' });
  for (const d of devices) if (await exists(d)) binds.push({ path: d, kind: 'dev' });
  binds.push({ path: runDir, kind: 'rw' });
  return binds;
}

/**
 * Everything the VM's hypervisor may see, at the same paths as on the host: system code
 * (read-only), a few devices, its run directory (read-write: sockets, serial log), kernel
 * and initramfs (read-only) and each disk (read-only unless the VM writes it).
 */
export async function vmBinds(spec: VmSpec, runDir: string): Promise<Bind[]> {
  const devices = spec.accel === 'kvm' ? [...DEVICES, '/dev/kvm'] : DEVICES;
  const binds = await baseBinds(SYSTEM_PATHS, devices, runDir);
  binds.push({ path: spec.kernel, kind: 'ro' }, { path: spec.initrd, kind: 'ro' });
  for (const d of spec.disks) {
    if (!under(runDir, d.path)) binds.push({ path: d.path, kind: d.readonly ? 'ro' : 'rw' });
  }
  return binds;
}

/**
 * Give the VM's uid what is its own: its run directory, every disk of its instance
 * directory (overlay, config disk) and the shared disks it writes (a read-write volume).
 * Shared read-only inputs stay root's and must be world-readable (image disks and kernels
 * are 0644); the rest of the instance directory stays root's, unseen by the jail.
 */
export async function ownVmFiles(spec: VmSpec, runDir: string, jail: VmJail): Promise<void> {
  await fsp.mkdir(runDir, { recursive: true, mode: 0o700 });
  await fsp.chown(runDir, jail.uid, jail.gid);
  await fsp.chmod(runDir, 0o700);
  for (const entry of await fsp.readdir(runDir)) {
    await fsp.lchown(path.join(runDir, entry), jail.uid, jail.gid);
  }
  for (const d of spec.disks) {
    if (!d.readonly || under(spec.workDir, d.path)) {
      await fsp.chown(d.path, jail.uid, jail.gid);
    } else {
      // Shared and read-only here (an image disk, a volume mounted read-only or as an
      // overlay base): root's, readable by every VMM. A volume an earlier VM wrote is its
      // uid's and private until then.
      const st = await fsp.stat(d.path);
      if (st.uid !== 0 || st.gid !== 0) await fsp.chown(d.path, 0, 0);
      if ((st.mode & 0o444) !== 0o444) await fsp.chmod(d.path, (st.mode & 0o777) | 0o444);
    }
  }
}

/** The group of the device file (e.g. the `kvm` group of /dev/kvm), when not root's. */
async function deviceGroup(dev: string): Promise<number | null> {
  try {
    const st = await fsp.stat(dev);
    return st.gid !== 0 ? st.gid : null;
  } catch {
    return null;
  }
}

export interface JailedCommand {
  readonly file: string;
  readonly args: string[];
  readonly cgroup: VmCgroup | null;
}

/**
 * The command that starts `program args` confined for `spec`: the VM's cgroup is created
 * (named after the VM id) and its limits set; a TAP is opened by the jailer and handed to
 * the program on `tapFd`.
 */
export async function jailedCommand(
  c: Confinement,
  spec: VmSpec,
  jail: VmJail,
  runDir: string,
  program: string,
  args: readonly string[],
  tap?: { readonly name: string; readonly fd: number },
): Promise<JailedCommand> {
  const cgroup =
    c.cgroups && jail.limits ? await createVmCgroup(c.cgroups, spec.id, jail.limits) : null;
  const argv = ['--root', c.rootDir, '--uid', String(jail.uid), '--gid', String(jail.gid)];
  const kvmGroup = spec.accel === 'kvm' ? await deviceGroup('/dev/kvm') : null;
  if (kvmGroup !== null) argv.push('--group', String(kvmGroup));
  for (const b of await vmBinds(spec, runDir)) argv.push(`--${b.kind}`, b.path);
  for (const f of cgroup?.procsFiles ?? []) argv.push('--cgroup', f);
  if (tap) argv.push('--tap', `${tap.name}:${tap.fd}`);
  // User-mode networking publishing a host port below 1024: QEMU binds it itself, so it
  // keeps that one capability (and no other); every other VMM has none.
  if (
    spec.net?.mode === 'user' &&
    spec.net.stack === 'slirp' &&
    spec.net.forwards.some((f) => f.hostPort < 1024)
  ) {
    argv.push('--keep-cap', 'net_bind_service');
  }
  argv.push('--', program, ...args);
  return { file: c.jailer, args: argv, cgroup };
}

/**
 * The command that starts a VM's network helper (passt) confined like its hypervisor: the
 * VM's uid, a jail with system code, `/proc` read-only (passt finds its own binary through
 * `/proc/self/exe`) and the run directory where it creates its socket. No cgroup, no TAP,
 * no capability.
 */
export async function jailedHelperCommand(
  c: Confinement,
  jail: VmJail,
  runDir: string,
  program: string,
  args: readonly string[],
): Promise<{ file: string; args: string[] }> {
  const argv = ['--root', c.rootDir, '--uid', String(jail.uid), '--gid', String(jail.gid)];
  const binds = await baseBinds([...SYSTEM_PATHS, '/proc'], ['/dev/null', '/dev/urandom'], runDir);
  for (const b of binds) argv.push(`--${b.kind}`, b.path);
  argv.push('--', program, ...args);
  return { file: c.jailer, args: argv };
}

/** Why VMMs cannot be confined on this host (null: they can). */
export async function confinementBlocker(jailer = jailerBinaryPath()): Promise<string | null> {
  if (process.getuid?.() !== 0) {
    return 'the daemon does not run as root (the jailer needs to create mount namespaces and change uids)';
  }
  try {
    await fsp.access(jailer, fsp.constants.X_OK);
  } catch {
    return `the jailer ${jailer} is missing; build it with sh jailer/build.sh`;
  }
  return null;
}
