import fs from 'node:fs/promises';
import { errnoCode, errorMessage } from '../core/errors.js';
import { buildChecks, type Check, type TunState } from './checks.js';
import { probeAccelerators, type KvmProbe } from './kvm-probe.js';
import { inspectNetworking } from './network-probe.js';
import { hostResources, type HostResources } from './resources.js';
import { inspectErofs, inspectQemu, inspectVersioned, type VersionedTool } from './tools.js';
import { inspectVhostVsock } from './vsock.js';

export type HypervisorName = 'qemu' | 'firecracker' | 'cloud-hypervisor';

export interface HypervisorInfo {
  name: HypervisorName;
  path: string | null;
  version: string | null;
}

/** Everything `vessel doctor` shows, and what the daemon decides accelerators from. */
export interface HostReport {
  resources: HostResources;
  accelerators: {
    kvm: KvmProbe;
    /** QEMU is installed and ran the probe payload under TCG. */
    tcg: boolean;
  };
  hypervisors: HypervisorInfo[];
  checks: Check[];
}

export interface ProbeHostOptions {
  /** The data directory; decides which filesystem the disk figures describe. */
  dataDir: string;
  /** Run the KVM/TCG probe again instead of reusing this process's cached result. */
  refreshKvm?: boolean;
}

const TUN_DEVICE = '/dev/net/tun';

/** Exists, is a character device, and opens read-write (without creating an interface). */
async function inspectTun(): Promise<TunState> {
  try {
    const st = await fs.stat(TUN_DEVICE);
    if (!st.isCharacterDevice())
      return { present: true, problem: `${TUN_DEVICE} is not a character device` };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { present: false };
    return { present: false, problem: `cannot stat ${TUN_DEVICE}: ${errorMessage(err)}` };
  }
  try {
    const fh = await fs.open(TUN_DEVICE, 'r+');
    await fh.close();
    return { present: true };
  } catch (err) {
    return {
      present: true,
      problem: `${TUN_DEVICE} cannot be opened read-write (${errnoCode(err) ?? errorMessage(err)})`,
    };
  }
}

function hypervisor(
  name: HypervisorName,
  tool: { path: string | null; version: { text: string } | null },
): HypervisorInfo {
  return { name, path: tool.path, version: tool.version?.text ?? null };
}

/**
 * Find out what this host can do: resources, tools, and — by booting a tiny
 * payload — whether KVM and TCG actually run guest code. Takes a few seconds
 * the first time (the accelerator probe), then reuses the cached probe.
 */
export async function probeHost(options: ProbeHostOptions): Promise<HostReport> {
  const vsock = inspectVhostVsock(); // never rejects
  const network = inspectNetworking(); // never rejects
  const [resources, qemu, erofs, ext4, firecracker, cloudHypervisor, tun] = await Promise.all([
    hostResources(options.dataDir),
    inspectQemu(),
    inspectErofs(),
    inspectVersioned('mkfs.ext4', ['-V']),
    inspectVersioned('firecracker', ['--version']),
    inspectVersioned('cloud-hypervisor', ['--version']),
    inspectTun(),
  ]);
  const machine = qemu.machines.includes('microvm') ? 'microvm' : 'pc';
  const accelerators = await probeAccelerators(
    { qemu: qemu.path, machine },
    options.refreshKvm === true,
  );
  const checks = buildChecks({
    resources,
    qemu,
    accelerators,
    tun,
    network: await network,
    vsock: await vsock,
    erofs,
    ext4,
    firecracker,
    cloudHypervisor,
  });
  const tools: [HypervisorName, VersionedTool][] = [
    ['firecracker', firecracker],
    ['cloud-hypervisor', cloudHypervisor],
  ];
  return {
    resources,
    accelerators: { kvm: accelerators.kvm, tcg: accelerators.tcg.usable },
    hypervisors: [hypervisor('qemu', qemu), ...tools.map(([name, tool]) => hypervisor(name, tool))],
    checks,
  };
}
