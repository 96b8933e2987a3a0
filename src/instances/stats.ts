/**
 * Resource use of an instance (`GET /instances/{id}/stats`): CPU time and
 * memory of its hypervisor process from /proc, network bytes from its TAP
 * device in bridge mode, disk bytes from QMP `query-blockstats`. A number
 * that cannot be known is null with the reason in `unavailable`, never a
 * made-up 0.
 */
import fs from 'node:fs/promises';
import { errorMessage } from '../core/errors.js';
import type { InstanceStats } from '../core/wire-ops.js';
import { tapNameFor } from '../network/index.js';
import type { InstanceCore } from './core.js';
import { hostNetwork } from './network.js';
import type { InstanceState } from './state.js';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on Linux). */
const USER_HZ = 100;

/** utime + stime of a `/proc/<pid>/stat` line, in seconds. */
export function parseProcStat(text: string): number {
  // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error('unexpected /proc/<pid>/stat format');
  }
  return (utime + stime) / USER_HZ;
}

/** VmRSS and VmSize of `/proc/<pid>/status`, in bytes. */
export function parseProcStatus(text: string): { rss: number; vms: number } {
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
    if (!m) throw new Error(`no ${key} in /proc/<pid>/status`);
    return Number(m[1]) * 1024;
  };
  return { rss: kb('VmRSS'), vms: kb('VmSize') };
}

async function readCounter(file: string): Promise<number> {
  return Number((await fs.readFile(file, 'utf8')).trim());
}

type Numbers = Pick<
  InstanceStats,
  | 'cpu_seconds'
  | 'memory_rss_bytes'
  | 'memory_vms_bytes'
  | 'network_rx_bytes'
  | 'network_tx_bytes'
  | 'disk_read_bytes'
  | 'disk_write_bytes'
>;

/** Collect the stats of one instance. Takes no lock. */
export async function collectStats(core: InstanceCore, idOrName: string): Promise<InstanceStats> {
  const row = core.row(idOrName);
  const rt = core.runtimes.get(row.id);
  const unavailable: Record<string, string> = {};
  const out: { -readonly [K in keyof Numbers]: number | null } = {
    cpu_seconds: null,
    memory_rss_bytes: null,
    memory_vms_bytes: null,
    network_rx_bytes: null,
    network_tx_bytes: null,
    disk_read_bytes: null,
    disk_write_bytes: null,
  };
  const none = (fields: (keyof Numbers)[], why: string): void => {
    for (const f of fields) unavailable[f] = why;
  };
  const pid = rt?.handle.pid ?? null;
  if (!rt || pid === null) {
    none(Object.keys(out) as (keyof Numbers)[], `instance is ${row.state}: no hypervisor process`);
  } else {
    try {
      out.cpu_seconds = parseProcStat(await fs.readFile(`/proc/${pid}/stat`, 'utf8'));
      const mem = parseProcStatus(await fs.readFile(`/proc/${pid}/status`, 'utf8'));
      out.memory_rss_bytes = mem.rss;
      out.memory_vms_bytes = mem.vms;
    } catch (err) {
      none(['cpu_seconds', 'memory_rss_bytes', 'memory_vms_bytes'], errorMessage(err));
    }
    await networkStats(row.id, hostNetwork(row.guest).mode, out, none);
    if (rt.handle.blockStats) {
      try {
        const disks = await rt.handle.blockStats();
        out.disk_read_bytes = disks.reduce((n, d) => n + d.readBytes, 0);
        out.disk_write_bytes = disks.reduce((n, d) => n + d.writeBytes, 0);
      } catch (err) {
        none(['disk_read_bytes', 'disk_write_bytes'], errorMessage(err));
      }
    } else {
      none(['disk_read_bytes', 'disk_write_bytes'], 'the hypervisor reports no disk statistics');
    }
  }
  const allocated = row.memory_mib * 1024 * 1024;
  return {
    instance_id: row.id,
    instance_name: row.name,
    ...out,
    allocated_vcpus: row.vcpus,
    allocated_memory_bytes: allocated,
    memory_utilization_ratio:
      out.memory_rss_bytes === null ? null : Number((out.memory_rss_bytes / allocated).toFixed(4)),
    state: row.state as InstanceState,
    pid,
    collected_at: new Date().toISOString(),
    unavailable,
  };
}

async function networkStats(
  id: string,
  mode: 'bridge' | 'user' | 'none',
  out: { network_rx_bytes: number | null; network_tx_bytes: number | null },
  none: (fields: ('network_rx_bytes' | 'network_tx_bytes')[], why: string) => void,
): Promise<void> {
  if (mode === 'none') {
    // No NIC: the VM can neither send nor receive a byte.
    out.network_rx_bytes = 0;
    out.network_tx_bytes = 0;
  } else if (mode === 'user') {
    none(
      ['network_rx_bytes', 'network_tx_bytes'],
      'user-mode networking (QEMU slirp) keeps no byte counters that QEMU exposes',
    );
  } else {
    // The TAP's view is the host's: what it receives, the VM sent.
    const dir = `/sys/class/net/${tapNameFor(id)}/statistics`;
    try {
      out.network_rx_bytes = await readCounter(`${dir}/tx_bytes`);
      out.network_tx_bytes = await readCounter(`${dir}/rx_bytes`);
    } catch (err) {
      none(['network_rx_bytes', 'network_tx_bytes'], `TAP statistics: ${errorMessage(err)}`);
    }
  }
}
