// Small helpers shared by the benchmarks: argument parsing, medians, CPU steal
// (noisy-neighbour indicator), the plain-text table printed after the JSON, whole-process
// timing and the cleanup of what a benchmark started.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import { performance } from 'node:perf_hooks';

export interface CpuTimes {
  readonly total: number;
  readonly steal: number;
}

/** Cumulative CPU jiffies (all CPUs) from /proc/stat: total and stolen by the hypervisor. */
export async function cpuTimes(): Promise<CpuTimes> {
  try {
    const line = (await fs.readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
    const fields = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    const first8 = fields.slice(0, 8);
    return { total: first8.reduce((a, b) => a + b, 0), steal: first8[7] ?? 0 };
  } catch {
    return { total: 0, steal: 0 };
  }
}

/** Share of CPU time stolen by the hypervisor since `since`, in percent (null if unknown). */
export async function stealPct(since: CpuTimes): Promise<number | null> {
  const now = await cpuTimes();
  const total = now.total - since.total;
  return total > 0 ? round(((now.steal - since.steal) / total) * 100) : null;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return NaN;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export const round = (n: number, digits = 1): number => Math.round(n * 10 ** digits) / 10 ** digits;

/** Median of the non-null values of `f` over `rows`, rounded to 0.1. */
export function medianOf<T>(rows: readonly T[], f: (r: T) => number | null): number {
  return round(median(rows.map(f).filter((v): v is number => v !== null)));
}

/** `--runs N` / `--runs=N` (positive integer); `--help` prints `usage` and exits. */
export function parseRuns(argv: readonly string[], defaultRuns: number, usage: string): number {
  let runs = defaultRuns;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = arg.startsWith('--runs=') ? arg.slice('--runs='.length) : undefined;
    if (arg === '--runs' || value !== undefined) {
      const n = Number(value ?? argv[++i]);
      if (!Number.isInteger(n) || n < 1) throw new Error(`--runs needs a positive integer`);
      runs = n;
    } else if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${usage}\n`);
      process.exit(0);
    } else {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  return runs;
}

/** Left-aligned columns separated by two spaces. */
export function table(rows: readonly (readonly string[])[]): string {
  const cols = Math.max(...rows.map((r) => r.length));
  const widths = Array.from({ length: cols }, (_, c) =>
    Math.max(...rows.map((r) => (r[c] ?? '').length)),
  );
  return rows
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}

/**
 * Run a benchmark's `main`, always running `cleanup` afterwards — also on SIGINT/SIGTERM.
 * A thrown error is a setup failure: it is printed and the exit status is 1.
 */
export async function runBench(
  name: string,
  main: () => Promise<void>,
  cleanup: () => Promise<void>,
): Promise<void> {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`${name}: ${signal}, cleaning up\n`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  try {
    await main();
  } catch (err) {
    const text = err instanceof Error ? err.stack : String(err);
    process.stderr.write(`${name}: benchmark failed: ${text}\n`);
    process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

/** Wall time of a whole process, in ms; rejects with its stderr on a non-zero exit. */
export function timedProcess(
  file: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0
        ? resolve(performance.now() - t0)
        : reject(new Error(`${file} ${args.join(' ')} exited ${code}: ${err.trim()}`)),
    );
  });
}

/** What a benchmark started, for its cleanup (runBench). */
export interface BenchResources {
  work?: string;
  registry?: { stop(): Promise<void> };
  daemon?: {
    stop(): Promise<void>;
    client: {
      listInstances(): Promise<{ id: string }[]>;
      deleteInstance(id: string): Promise<void>;
    };
  };
}

/** Delete the daemon's instances (its stop leaves VMs running), stop it and the registry, remove the work dir. */
export async function releaseResources(res: BenchResources): Promise<void> {
  const left = (await res.daemon?.client.listInstances().catch(() => [])) ?? [];
  for (const i of left) await res.daemon?.client.deleteInstance(i.id).catch(() => undefined);
  await res.daemon?.stop();
  await res.registry?.stop();
  if (res.work) await fs.rm(res.work, { recursive: true, force: true });
}
