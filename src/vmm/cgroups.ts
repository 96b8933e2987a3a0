/**
 * Per-VM cgroups: memory, CPU and pids limits for one hypervisor process, on cgroup v2
 * (one unified hierarchy with the controllers) or v1 (one hierarchy per controller; also
 * "hybrid" hosts that mount an empty v2 tree beside the v1 controllers). The layout is
 * read from /proc/self/mountinfo, never assumed.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { errnoCode, errorMessage } from '../core/errors.js';

export type CgroupVersion = 'v2' | 'v1';

export interface CgroupLayout {
  readonly version: CgroupVersion;
  /** v2: the unified mount; v1: the mount of each controller Vessel uses. */
  readonly mounts: Readonly<Partial<Record<Controller, string>>>;
  /** Controllers that exist and that Vessel will set limits with. */
  readonly controllers: readonly Controller[];
}

export type Controller = 'memory' | 'cpu' | 'pids';
const WANTED: readonly Controller[] = ['memory', 'cpu', 'pids'];

export interface CgroupLimits {
  readonly memoryBytes: number;
  /** CPU time per period, in microseconds. */
  readonly cpuQuotaUs: number;
  readonly cpuPeriodUs: number;
  readonly pidsMax: number;
}

/** Parent group of every VM's group, under each hierarchy. */
export const CGROUP_PARENT = 'vessel';

interface MountEntry {
  readonly point: string;
  readonly fstype: string;
  readonly superOptions: readonly string[];
}

/** The cgroup mounts of `/proc/self/mountinfo` text. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const fstype = right[0] ?? '';
    if (fstype !== 'cgroup' && fstype !== 'cgroup2') continue;
    // Mount points escape spaces as \040.
    const point = (left[4] ?? '').replace(/\\(\d{3})/g, (_, o: string) =>
      String.fromCharCode(parseInt(o, 8)),
    );
    out.push({ point, fstype, superOptions: (right[2] ?? '').split(',') });
  }
  return out;
}

/**
 * Decide the layout: v2 when a cgroup2 mount offers the controllers (pure v2 hosts), else
 * the v1 hierarchies that carry them. `readControllers` reads a v2 mount's
 * `cgroup.controllers` (a hybrid host's v2 tree has none: it counts as absent).
 */
export async function chooseLayout(
  mounts: readonly MountEntry[],
  readControllers: (mount: string) => Promise<string>,
): Promise<CgroupLayout | null> {
  for (const m of mounts.filter((e) => e.fstype === 'cgroup2')) {
    const have = (await readControllers(m.point).catch(() => '')).split(/\s+/);
    const controllers = WANTED.filter((c) => have.includes(c));
    if (controllers.length > 0) {
      return {
        version: 'v2',
        mounts: Object.fromEntries(controllers.map((c) => [c, m.point])),
        controllers,
      };
    }
  }
  const v1: Partial<Record<Controller, string>> = {};
  for (const m of mounts.filter((e) => e.fstype === 'cgroup')) {
    for (const c of WANTED) if (m.superOptions.includes(c) && !v1[c]) v1[c] = m.point;
  }
  const controllers = WANTED.filter((c) => v1[c] !== undefined);
  return controllers.length > 0 ? { version: 'v1', mounts: v1, controllers } : null;
}

export async function detectCgroups(): Promise<CgroupLayout | null> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  return chooseLayout(parseMountinfo(text), (m) =>
    fs.readFile(path.join(m, 'cgroup.controllers'), 'utf8'),
  );
}

/** The files a limit is written to, per version. */
export function limitFiles(
  version: CgroupVersion,
  limits: CgroupLimits,
): Record<Controller, [file: string, value: string][]> {
  if (version === 'v2') {
    return {
      memory: [
        ['memory.max', String(limits.memoryBytes)],
        ['memory.swap.max', '0'],
      ],
      cpu: [['cpu.max', `${limits.cpuQuotaUs} ${limits.cpuPeriodUs}`]],
      pids: [['pids.max', String(limits.pidsMax)]],
    };
  }
  return {
    memory: [
      ['memory.limit_in_bytes', String(limits.memoryBytes)],
      // With swap accounting the VM may not swap past its limit either (optional file).
      ['memory.memsw.limit_in_bytes?', String(limits.memoryBytes)],
    ],
    cpu: [
      ['cpu.cfs_period_us', String(limits.cpuPeriodUs)],
      ['cpu.cfs_quota_us', String(limits.cpuQuotaUs)],
    ],
    pids: [['pids.max', String(limits.pidsMax)]],
  };
}

/** One VM's group: its directories (one per hierarchy) and the files to join it. */
export interface VmCgroup {
  readonly dirs: readonly string[];
  /** `cgroup.procs` of each directory: the jailer writes its pid to each. */
  readonly procsFiles: readonly string[];
}

/** The directories of group `name` under the layout (one per distinct mount). */
export function groupDirs(layout: CgroupLayout, name: string): string[] {
  const mounts = new Set(layout.controllers.map((c) => layout.mounts[c]!));
  return [...mounts].map((m) => path.join(m, CGROUP_PARENT, name));
}

async function enableV2Controllers(layout: CgroupLayout): Promise<void> {
  const mount = layout.mounts[layout.controllers[0]!]!;
  const want = layout.controllers.map((c) => `+${c}`).join(' ');
  for (const dir of [mount, path.join(mount, CGROUP_PARENT)]) {
    await fs.writeFile(path.join(dir, 'cgroup.subtree_control'), want);
  }
}

/** Create (or reset the limits of) group `name` with `limits`. */
export async function createVmCgroup(
  layout: CgroupLayout,
  name: string,
  limits: CgroupLimits,
): Promise<VmCgroup> {
  const files = limitFiles(layout.version, limits);
  if (layout.version === 'v2') {
    await fs.mkdir(path.join(layout.mounts[layout.controllers[0]!]!, CGROUP_PARENT), {
      recursive: true,
    });
    await enableV2Controllers(layout);
  }
  for (const c of layout.controllers) {
    const dir = path.join(layout.mounts[c]!, CGROUP_PARENT, name);
    await fs.mkdir(dir, { recursive: true });
    for (const [file, value] of files[c]) {
      const optional = file.endsWith('?');
      const f = path.join(dir, optional ? file.slice(0, -1) : file);
      try {
        await fs.writeFile(f, value);
      } catch (err) {
        if (optional && errnoCode(err) === 'ENOENT') continue;
        throw new Error(`cannot set ${f} to ${value}: ${errorMessage(err)}`, { cause: err });
      }
    }
  }
  const dirs = groupDirs(layout, name);
  return { dirs, procsFiles: dirs.map((d) => path.join(d, 'cgroup.procs')) };
}

/**
 * Remove group `name` once its processes are gone. A group that still holds a process
 * (EBUSY) stays; a missing one is fine. Returns whether every directory is gone.
 */
export async function removeVmCgroup(
  layout: CgroupLayout,
  name: string,
  attempts = 10,
): Promise<boolean> {
  for (let i = 0; ; i++) {
    let gone = true;
    for (const dir of groupDirs(layout, name)) {
      try {
        await fs.rmdir(dir);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') gone = false;
      }
    }
    // EBUSY right after the VMM exited: the kernel is still tearing the process down.
    if (gone || i + 1 >= attempts) return gone;
    await delay(200);
  }
}

/** Names of the VM groups that exist under the layout's `vessel/` parent. */
export async function listVmCgroups(layout: CgroupLayout): Promise<string[]> {
  const names = new Set<string>();
  for (const dir of groupDirs(layout, '')) {
    for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory()) names.add(e.name);
    }
  }
  return [...names];
}

/** Peak memory the group has used (bytes), where the kernel reports it. */
export async function peakMemory(layout: CgroupLayout, name: string): Promise<number | null> {
  const m = layout.mounts.memory;
  if (!m) return null;
  const file = layout.version === 'v2' ? 'memory.peak' : 'memory.max_usage_in_bytes';
  const text = await fs.readFile(path.join(m, CGROUP_PARENT, name, file), 'utf8').catch(() => '');
  const n = Number(text.trim());
  return text.trim() !== '' && Number.isFinite(n) ? n : null;
}
