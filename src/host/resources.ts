import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { errnoCode, toVesselError } from '../core/errors.js';
import { parseMemAvailable } from './parse.js';

/** CPU, memory and disk of this host, as Vessel sizes instances against them. */
export interface HostResources {
  /** CPUs this process may use (`os.availableParallelism()`). */
  cpus: number;
  memory_bytes: number;
  /** Memory available for new work (`MemAvailable`), not merely unused pages. */
  memory_free_bytes: number;
  /** The filesystem holding the data directory. */
  disk: { path: string; total_bytes: number; free_bytes: number };
  /** Machine architecture as `uname -m` prints it, e.g. `x86_64`. */
  arch: string;
  /** Kernel release, e.g. `6.1.0-18-cloud-amd64`. */
  kernel: string;
}

/**
 * The data directory itself, or its nearest existing ancestor when it has not
 * been created yet (a fresh install asks "is there room?" before `mkdir`).
 */
async function nearestExisting(dir: string): Promise<string> {
  let current = path.resolve(dir);
  for (;;) {
    try {
      await fs.stat(current);
      return current;
    } catch (err) {
      const code = errnoCode(err);
      const parent = path.dirname(current);
      if ((code !== 'ENOENT' && code !== 'ENOTDIR') || parent === current) {
        throw toVesselError(err, `cannot inspect data directory ${dir}`);
      }
      current = parent;
    }
  }
}

async function availableMemory(): Promise<number> {
  try {
    return parseMemAvailable(await fs.readFile('/proc/meminfo', 'utf8')) ?? os.freemem();
  } catch {
    return os.freemem();
  }
}

/** Measure this host. `dataDir` decides which filesystem `disk` describes. */
export async function hostResources(dataDir: string): Promise<HostResources> {
  const diskPath = await nearestExisting(dataDir);
  const [stats, free] = await Promise.all([fs.statfs(diskPath), availableMemory()]);
  return {
    cpus: os.availableParallelism(),
    memory_bytes: os.totalmem(),
    memory_free_bytes: free,
    disk: {
      path: diskPath,
      total_bytes: stats.blocks * stats.bsize,
      // bavail: blocks an unprivileged writer may use (excludes root's reserve).
      free_bytes: stats.bavail * stats.bsize,
    },
    arch: os.machine(),
    kernel: os.release(),
  };
}

/** The host CPU clock in kHz from /proc/cpuinfo (`cpu MHz`), for `tsc_early_khz` under TCG. */
export async function hostTscKhz(): Promise<number | undefined> {
  try {
    const text = await fs.readFile('/proc/cpuinfo', 'utf8');
    const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(text);
    return m?.[1] ? Math.round(Number(m[1]) * 1000) : undefined;
  } catch {
    return undefined;
  }
}
