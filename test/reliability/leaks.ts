/**
 * The leak checker of the lifecycle reliability tests: what a daemon holds for its VMs,
 * taken as a snapshot before and after a run, and compared.
 *
 * Kinds (each a list of the leaked items, so a failure names them):
 * - `processes`: processes whose command line mentions the data dir (QEMU, and any helper
 *   it runs), other than the daemon itself and the VMMs of live instances (`/proc` scan).
 * - `fds`: the daemon's open descriptors (`/proc/PID/fd`) over the baseline, by target
 *   (sockets and pipes by kind, files by path).
 * - `files`: entries of `<data>/instances/` not named after a live instance.
 * - `rows`: instances (GET /instances) that were not there at the baseline.
 * - `taps`: network links with Vessel's TAP prefixes (`ip -o link`) new since the baseline.
 * - `cgroups`: directories under a mounted cgroup hierarchy's `vessel/` subdirectory whose
 *   name contains the id of an instance this checker saw that no longer exists.
 * - `uids`: processes owned by a per-VM uid (200000-299999) that belong to no live
 *   instance — scoped to this data dir (command line, or the uid recorded on an instance
 *   this checker saw), so other daemons on the machine are not counted.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Instance, VesselClient } from '../../src/client/index.js';
import { run } from '../../src/core/process.js';
import { POOL_PREFIX, TAP_PREFIX } from '../../src/network/index.js';
import { statusKiB } from '../helpers/proc-mem.js';
import { figure } from './suite.js';

export const LEAK_KINDS = ['processes', 'fds', 'files', 'rows', 'taps', 'cgroups', 'uids'] as const;
export type LeakKind = (typeof LEAK_KINDS)[number];
export type LeakReport = Record<LeakKind, string[]>;

const UID_MIN = 200_000;
const UID_MAX = 299_999;

/** One process from /proc: its pid, real uid and command line. */
interface Proc {
  readonly pid: number;
  readonly uid: number;
  readonly argv: readonly string[];
}

export interface LeakSnapshot {
  readonly procs: readonly Proc[];
  /** The daemon's fd targets, normalized (`socket`, `pipe`, `anon_inode:[eventfd]`, paths). */
  readonly fds: readonly string[];
  readonly files: readonly string[];
  readonly rows: readonly Instance[];
  readonly taps: readonly string[];
  readonly cgroups: readonly string[];
}

/** What the checker looks at: the data dir, and the current daemon (it may be restarted). */
export interface LeakTarget {
  readonly dir: string;
  readonly client: VesselClient;
  readonly daemon: { readonly child: { readonly pid?: number | undefined } };
}

/** Every process on the host (its pid, uid, argv); ones that vanish mid-scan are skipped. */
export async function listProcs(): Promise<Proc[]> {
  const out: Proc[] = [];
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const [cmdline, status] = await Promise.all([
        fs.readFile(`/proc/${name}/cmdline`, 'utf8'),
        fs.readFile(`/proc/${name}/status`, 'utf8'),
      ]);
      if (cmdline === '') continue; // kernel thread or zombie
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
      out.push({ pid: Number(name), uid, argv: cmdline.replace(/\0$/, '').split('\0') });
    } catch {
      // it exited while we looked
    }
  }
  return out;
}

/** The QEMU processes of one instance of the data dir `dir` (its directory is on their command line). */
export async function vmmPids(dir: string, id: string): Promise<number[]> {
  const mark = path.join(dir, 'instances', id);
  return (await listProcs())
    .filter((p) => path.basename(p.argv[0] ?? '').includes('qemu'))
    .filter((p) => p.argv.some((a) => a.includes(mark)))
    .map((p) => p.pid);
}

interface UnixSocket {
  readonly path: string;
  /** `__SO_ACCEPTCON`: a listening socket, not a connection. */
  readonly listening: boolean;
}

/** Bound unix sockets in `pid`'s network namespace, by inode (/proc/PID/net/unix). */
async function unixSockets(pid: number): Promise<Map<string, UnixSocket>> {
  const text = await fs.readFile(`/proc/${pid}/net/unix`, 'utf8').catch(() => '');
  const out = new Map<string, UnixSocket>();
  for (const line of text.split('\n').slice(1)) {
    const [, , , flags, , , inode, p] = line.trim().split(/\s+/);
    if (inode && p)
      out.set(inode, { path: p, listening: (parseInt(flags ?? '0', 16) & 0x10000) !== 0 });
  }
  return out;
}

/**
 * The daemon's fd targets, sockets and pipes by kind rather than inode (a leak is "one
 * more socket", not a particular one). Connections accepted on the API socket are left
 * out: they are the test client's own keep-alive pool, which grows with its parallelism.
 */
async function daemonFds(pid: number, apiSocket: string): Promise<string[]> {
  const dir = `/proc/${pid}/fd`;
  const [names, unix] = await Promise.all([fs.readdir(dir), unixSockets(pid)]);
  const targets = await Promise.all(
    names.map((n) => fs.readlink(path.join(dir, n)).catch(() => undefined)),
  );
  const out: string[] = [];
  for (const t of targets) {
    const m = t === undefined ? null : /^(socket|pipe):\[(\d+)\]$/.exec(t);
    const sock = m?.[1] === 'socket' ? unix.get(m[2]!) : undefined;
    if (t === undefined || (sock?.path === apiSocket && !sock.listening)) continue;
    out.push(!m ? t : sock ? `socket ${sock.path}` : m[1]!);
  }
  return out;
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch {
    return [];
  }
}

async function vesselTaps(): Promise<string[]> {
  const r = await run('ip', ['-o', 'link'], { allowFailure: true });
  return r.stdout
    .split('\n')
    .map((line) => /^\d+:\s+([^:@\s]+)/.exec(line)?.[1])
    .filter((n): n is string => !!n && (n.startsWith(TAP_PREFIX) || n.startsWith(POOL_PREFIX)));
}

/**
 * Candidate `vessel/` cgroup directories: at the root of every mounted cgroup hierarchy
 * and under the daemon's own cgroup in it (where a delegated, non-root setup puts it).
 */
async function vesselCgroupRoots(daemonPid: number): Promise<string[]> {
  const mounts = (await fs.readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((line) => line.split(' '))
    .filter((f) => {
      const fsType = f[f.indexOf('-') + 1];
      return fsType === 'cgroup' || fsType === 'cgroup2';
    })
    .map((f) => f[4]!);
  const own = (await fs.readFile(`/proc/${daemonPid}/cgroup`, 'utf8').catch(() => ''))
    .split('\n')
    .map((line) => line.split(':').slice(2).join(':'))
    .filter((p) => p !== '' && p !== '/');
  const roots = new Set<string>();
  for (const m of mounts) {
    roots.add(path.join(m, 'vessel'));
    for (const p of own) roots.add(path.join(m, p, 'vessel'));
  }
  return [...roots];
}

/** Every directory below `root` (depth-limited: a per-VM cgroup is a level or two down). */
async function subdirs(root: string, depth = 3): Promise<string[]> {
  if (depth === 0) return [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(root, { withFileTypes: true });
  } catch {
    return [];
  }
  const dirs = entries.filter((e) => e.isDirectory()).map((e) => path.join(root, e.name));
  const deeper = await Promise.all(dirs.map((d) => subdirs(d, depth - 1)));
  return [...dirs, ...deeper.flat()];
}

async function vesselCgroups(daemonPid: number): Promise<string[]> {
  const roots = await vesselCgroupRoots(daemonPid);
  return (await Promise.all(roots.map((r) => subdirs(r)))).flat();
}

/** Items of `after` beyond those of `before`, counted as multisets. */
function multisetDiff(before: readonly string[], after: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const b of before) left.set(b, (left.get(b) ?? 0) + 1);
  const out: string[] = [];
  for (const a of after) {
    const n = left.get(a) ?? 0;
    if (n > 0) left.set(a, n - 1);
    else out.push(a);
  }
  return out;
}

/** The per-VM uid recorded on an instance, once confinement adds it (absent before). */
function recordedUid(inst: Instance): number | undefined {
  const uid = (inst as Instance & { uid?: unknown }).uid;
  return typeof uid === 'number' ? uid : undefined;
}

export class LeakChecker {
  readonly #target: () => LeakTarget;
  /** Every instance this checker has seen (rows of its snapshots, and `track`ed ones). */
  readonly #seen = new Map<string, Instance>();

  /** `target` is read on every snapshot, so a restarted daemon is followed. */
  constructor(target: () => LeakTarget) {
    this.#target = target;
  }

  /** Remember an instance (its id and recorded uid count as "ours" once it is gone). */
  track(inst: Instance): void {
    this.#seen.set(inst.id, inst);
  }

  get daemonPid(): number {
    const pid = this.#target().daemon.child.pid;
    if (pid === undefined) throw new Error('the daemon process has no pid');
    return pid;
  }

  /** The daemon's resident memory now (KiB). */
  rssKiB(): number {
    const kib = statusKiB(this.daemonPid, 'VmRSS');
    if (kib === undefined) throw new Error(`daemon ${this.daemonPid} is gone`);
    return kib;
  }

  async snapshot(): Promise<LeakSnapshot> {
    const t = this.#target();
    const pid = this.daemonPid;
    const [procs, fds, files, rows, taps, cgroups] = await Promise.all([
      listProcs(),
      daemonFds(pid, path.join(t.dir, 'vessel.sock')),
      readdirOrEmpty(path.join(t.dir, 'instances')),
      t.client.listInstances(),
      vesselTaps(),
      vesselCgroups(pid),
    ]);
    for (const r of rows) this.track(r);
    return { procs, fds, files, rows, taps, cgroups };
  }

  /** Compare a fresh snapshot with `base`: the leaked items of each kind. */
  async compare(base: LeakSnapshot): Promise<LeakReport> {
    const now = await this.snapshot();
    const dir = this.#target().dir;
    const live = new Map(now.rows.map((r) => [r.id, r]));
    const livePids = new Set(now.rows.map((r) => r.pid).filter((p): p is number => p !== null));
    const liveUids = new Set([...live.values()].map(recordedUid).filter((u) => u !== undefined));
    const ourUids = new Set(
      [...this.#seen.values()].map(recordedUid).filter((u) => u !== undefined),
    );
    const gone = [...this.#seen.keys()].filter((id) => !live.has(id));
    const baseRows = new Set(base.rows.map((r) => r.id));
    const mentionsDir = (p: Proc): boolean => p.argv.some((a) => a.includes(dir));
    const strays = now.procs.filter((p) => p.pid !== this.daemonPid && !livePids.has(p.pid));
    return {
      processes: strays.filter(mentionsDir).map((p) => `${p.pid} ${p.argv.join(' ')}`),
      fds: multisetDiff(base.fds, now.fds),
      files: now.files.filter((f) => !live.has(f)),
      rows: now.rows.filter((r) => !baseRows.has(r.id)).map((r) => `${r.id} ${r.name} ${r.state}`),
      taps: multisetDiff(base.taps, now.taps),
      cgroups: now.cgroups.filter((c) => gone.some((id) => path.basename(c).includes(id))),
      uids: strays
        .filter((p) => p.uid >= UID_MIN && p.uid <= UID_MAX && !liveUids.has(p.uid))
        .filter((p) => mentionsDir(p) || ourUids.has(p.uid))
        .map((p) => `${p.pid} uid ${p.uid} ${p.argv.join(' ')}`),
    };
  }

  /**
   * {@link compare}, retried for up to `settleMs` until nothing leaks: a daemon closes a
   * dead VM's sockets and files a moment after the API answered, which is not a leak.
   */
  async leaks(base: LeakSnapshot, settleMs = 10_000): Promise<LeakReport> {
    const deadline = Date.now() + settleMs;
    for (;;) {
      const report = await this.compare(base);
      if (leakCount(report) === 0 || Date.now() > deadline) return report;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

export function leakCount(report: LeakReport): number {
  return LEAK_KINDS.reduce((n, k) => n + report[k].length, 0);
}

/**
 * Print one figure per kind (`<prefix>.leaked.<kind>`), then fail naming every leaked
 * item. Leaked cgroup directories are removed first (they are empty once their VMM is
 * gone): left in place they would pile up on the host across runs.
 */
export async function assertNoLeaks(prefix: string, report: LeakReport): Promise<void> {
  for (const k of LEAK_KINDS) figure(`${prefix}.leaked.${k}`, report[k].length, 'items');
  const deepestFirst = [...report.cgroups].sort((a, b) => b.length - a.length);
  for (const dir of deepestFirst) await fs.rmdir(dir).catch(() => undefined);
  const found = LEAK_KINDS.filter((k) => report[k].length > 0).map(
    (k) => `${k}: ${report[k].join(', ')}`,
  );
  if (found.length > 0) throw new Error(`${prefix}: leaked ${found.join('; ')}`);
}
