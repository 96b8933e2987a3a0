/**
 * What confines an instance's VMM (vmm/jail.ts does the confining): its uid, derived from
 * the guest context id allocated in the reservation (unique among instances, freed with
 * the row), and its cgroup limits, derived from its size.
 */
import { VesselError } from '../core/errors.js';
import type { InstanceRow } from '../store/index.js';
import type { VmJail } from '../vmm/index.js';
import type { InstanceCore } from './core.js';

/** How instances are confined (the daemon's `confinement` config). */
export interface InstanceConfinement {
  /** First uid (and gid) of the range VMMs run as; instance uids are `uid_base + cid`. */
  readonly uidBase: number;
  readonly uidCount: number;
  /** Memory a VMM needs beyond guest RAM (device state, TCG code cache, I/O buffers). */
  readonly memoryOverheadMiB: number;
  /** Processes and threads a VMM may have. */
  readonly pidsMax: number;
}

const CPU_PERIOD_US = 100_000;

/** The uid an instance's VMM runs as. */
export function jailUid(c: InstanceConfinement, row: InstanceRow): number {
  if (row.cid === null || row.cid >= c.uidCount) {
    throw new VesselError(
      'conflict',
      `instance "${row.name}": no uid left in the confinement range (${c.uidBase}..${c.uidBase + c.uidCount - 1}); raise confinement.uid_count`,
    );
  }
  return c.uidBase + row.cid;
}

export function vmJail(core: InstanceCore, row: InstanceRow): VmJail {
  const c = core.o.confinement!;
  const uid = jailUid(c, row);
  return {
    uid,
    gid: uid,
    limits: {
      memoryBytes: (row.memory_mib + c.memoryOverheadMiB) * 1024 * 1024,
      // One host CPU per vCPU, plus one for the VMM's own threads (main loop, device
      // emulation, I/O): with exactly the vCPUs, a TCG boot is ~10% slower (P7 bench).
      cpuQuotaUs: (row.vcpus + 1) * CPU_PERIOD_US,
      cpuPeriodUs: CPU_PERIOD_US,
      pidsMax: c.pidsMax,
    },
  };
}
