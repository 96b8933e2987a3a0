/**
 * The host report in the hypeman API's shapes: `/capabilities`, and the
 * capacity/allocation part of `/resources`.
 */
import { hostPlatform } from '../core/platform.js';
import type { Resources } from '../core/wire.js';
import type { Capabilities } from '../core/wire-ops.js';
import type { HostReport } from '../host/index.js';
import type { Instance } from '../instances/index.js';

const ACTIVE = new Set(['Initializing', 'Running', 'Paused', 'Shutdown']);

const status = (
  type: string,
  capacity: number,
  allocated: number,
  source: string,
): Resources['cpu'] => ({
  type,
  capacity,
  effective_limit: capacity,
  allocated,
  available: capacity - allocated,
  oversub_ratio: 1,
  source,
});

/** cpu, memory, disk, network and per-instance allocations. */
export function resourceStatus(
  report: HostReport,
  instances: readonly Instance[],
): Pick<Resources, 'cpu' | 'memory' | 'disk' | 'network' | 'allocations'> {
  const live = instances.filter((i) => ACTIVE.has(i.state));
  const mib = 1024 * 1024;
  const sum = (xs: readonly Instance[], f: (i: Instance) => number): number =>
    xs.reduce((n, i) => n + f(i), 0);
  const r = report.resources;
  return {
    cpu: status(
      'cpu',
      r.cpus,
      sum(live, (i) => i.vcpus),
      'detected',
    ),
    memory: status(
      'memory',
      r.memory_bytes,
      sum(live, (i) => i.memory_mib * mib),
      'detected',
    ),
    disk: status(
      'disk',
      r.disk.total_bytes,
      sum(instances, (i) => i.disk_bytes),
      `detected (${r.disk.path}); allocated: the overlay disk sizes (sparse files)`,
    ),
    network: status('network', 0, 0, 'not tracked: Vessel sets no bandwidth limits'),
    allocations: live.map((i) => ({
      instance_id: i.id,
      instance_name: i.name,
      cpu: i.vcpus,
      memory_bytes: i.memory_mib * mib,
      disk_bytes: i.disk_bytes,
    })),
  };
}

/** `/capabilities` from the host report. */
export function capabilities(report: HostReport, version: string): Capabilities {
  const ok = (id: string): boolean => report.checks.some((c) => c.id === id && c.status === 'ok');
  const qemu = report.hypervisors.find((h) => h.name === 'qemu');
  const accel = report.accelerators.kvm.usable ? 'kvm' : report.accelerators.tcg ? 'tcg' : null;
  const available = Boolean(qemu?.path) && ok('qemu-microvm') && accel !== null;
  const reason = !qemu?.path
    ? 'QEMU is not installed'
    : !ok('qemu-microvm')
      ? 'this QEMU has no microvm machine'
      : accel === null
        ? 'neither KVM nor TCG works'
        : undefined;
  const bridge = ok('tun') && process.getuid?.() === 0;
  const { os, arch, platform } = hostPlatform();
  return {
    server: { version, api_version: version },
    host: { os, arch },
    default_runtime: { name: 'qemu-microvm', available },
    runtimes: [
      {
        name: 'qemu-microvm',
        available,
        features: ['standby', 'fork', 'pause'],
        ...(reason ? { reason } : {}),
      },
    ],
    network: { model: bridge ? 'bridge' : 'nat', guest_to_guest: false },
    images: { platforms: [platform], default_platform: platform },
    features: ['instances', 'images', 'ingress', 'exec', 'logs'],
    ...(accel ? { accelerator: accel } : {}),
  };
}
