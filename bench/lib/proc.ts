// What other processes cost, read from /proc: CPU time per process and per thread (to see
// where the time of a run goes), the CPU time of this process's reaped children, and
// resident memory. Linux only; every reader returns null where /proc has nothing.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

let clockTicks: number | undefined;

/** Clock ticks per second of the times in /proc/<pid>/stat (`getconf CLK_TCK`, usually 100). */
export async function ticksPerSecond(): Promise<number> {
  if (clockTicks === undefined) {
    const out = await execFileAsync('getconf', ['CLK_TCK']).catch(() => ({ stdout: '100' }));
    clockTicks = Number(out.stdout.trim()) || 100;
  }
  return clockTicks;
}

/** The fields of a /proc stat line after `comm`, and the comm itself. */
async function statFields(file: string): Promise<{ comm: string; rest: string[] } | null> {
  try {
    const text = await fs.readFile(file, 'utf8');
    const open = text.indexOf('(');
    const close = text.lastIndexOf(')');
    return {
      comm: text.slice(open + 1, close),
      rest: text
        .slice(close + 2)
        .trim()
        .split(' '),
    };
  } catch {
    return null;
  }
}

/** utime + stime of a process or thread stat file, in ms. */
async function cpuMsOf(file: string): Promise<number | null> {
  const s = await statFields(file);
  if (!s) return null;
  // After comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14).
  return ((Number(s.rest[11]) + Number(s.rest[12])) * 1000) / (await ticksPerSecond());
}

/** CPU time (user + system) of process `pid` so far, in ms. */
export function processCpuMs(pid: number): Promise<number | null> {
  return cpuMsOf(`/proc/${pid}/stat`);
}

/**
 * CPU time of the children this process has reaped (cutime + cstime), in ms: after a
 * spawned command exited, the growth of this number is that command's CPU time (its own
 * children included).
 */
export async function reapedChildrenCpuMs(): Promise<number> {
  const s = await statFields('/proc/self/stat');
  if (!s) return 0;
  return ((Number(s.rest[13]) + Number(s.rest[14])) * 1000) / (await ticksPerSecond());
}

/**
 * CPU ms of each thread of `pid`, keyed `main` (the thread whose id is the pid: QEMU's I/O
 * loop) or `<name>:<tid>` (QEMU names its threads only with `-name debug-threads=on`).
 */
export async function threadCpuMs(pid: number): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  let tids: string[];
  try {
    tids = await fs.readdir(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const s = await statFields(`/proc/${pid}/task/${tid}/stat`);
    if (!s) continue;
    const ms = ((Number(s.rest[11]) + Number(s.rest[12])) * 1000) / (await ticksPerSecond());
    out[tid === String(pid) ? 'main' : `${s.comm}:${tid}`] = ms;
  }
  return out;
}

/** `after - before` per key (keys of `after`; a thread that appeared counts from 0). */
export function diffByKey(
  before: Readonly<Record<string, number>>,
  after: Readonly<Record<string, number>>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) out[k] = v - (before[k] ?? 0);
  return out;
}

export interface Memory {
  /** Resident set now (VmRSS), KiB. */
  readonly rss_kib: number;
  /** Peak resident set since the process started (VmHWM), KiB. */
  readonly hwm_kib: number;
}

/** VmRSS and VmHWM of `pid` from /proc/<pid>/status. */
export async function memoryOf(pid: number): Promise<Memory | null> {
  try {
    const text = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    const kib = (key: string): number =>
      Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(text)?.[1]);
    return { rss_kib: kib('VmRSS'), hwm_kib: kib('VmHWM') };
  } catch {
    return null;
  }
}
