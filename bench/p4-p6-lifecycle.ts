// P4, P5, P6 (PRODUCT.md §5): the instance lifecycle through a real InstanceManager
// with real QEMU microVMs, each against its baseline measured in the same run.
//
//   P4  waitForState wake-up after a state change  vs  a 500 ms polling loop (p99 ≤ 2 ms)
//   P5  global (reservation) lock hold per create   vs  the whole create → Running (≤ 1%)
//   P6  standby → Running (restore)                 vs  cold create → Running (≤ 0.3×)
//
//   npm run bench:lifecycle                                     # builds, then --n 100 --m 5 --rounds 3
//   node dist/bench/p4-p6-lifecycle.js --n 10 --m 2 --rounds 1  # quick check
//
// Prints a JSON object first, then a table. Exits 0 even when goals are missed.
import { createReadStream, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Registry } from 'prom-client';
import { guestBinaryPath } from '../src/core/assets.js';
import { createLogger } from '../src/core/logger.js';
import { InstanceManager, type InstanceState } from '../src/instances/index.js';
import { snapshotPaths } from '../src/instances/snapshot.js';
import { DEFAULT_KERNEL, ensureKernel } from '../src/kernels/index.js';
import type { Accel } from '../src/vmm/index.js';
import { makeImageEnv, makeInstanceManager, type ImageEnv } from '../test/helpers/image-env.js';
import { busyboxImage, writeDockerArchive } from '../test/helpers/oci-builder.js';
import { seedKernel } from '../test/helpers/vm-daemon.js';
import { cpuTimes, median, round, stealPct, table, runBench } from './lib/measure.js';

const GOAL_P4_P99_MS = 2;
const GOAL_P5_SHARE = 0.01;
const GOAL_P6_RATIO = 0.3;
/** The naive client's polling interval (P4's baseline). */
const POLL_MS = 500;
const BOOT_TIMEOUT_MS = 180_000;
const WAIT_MS = 30_000;
const VCPUS = 1;
const MEMORY_MIB = 256;
const IMAGE_REF = 'bench/busybox:lifecycle';
/** Keeps the VM Running until it is deleted. */
const GUEST_CMD = ['/bin/sh', '-c', 'while :; do sleep 1; done'];
const SECTIONS = ['p4', 'p5', 'p6'] as const;
type Section = (typeof SECTIONS)[number];

const USAGE = `usage: node dist/bench/p4-p6-lifecycle.js [--n N] [--m M] [--rounds R] [--only p4,p5,p6] [--accel tcg|kvm]
  --n N        P4: pause/resume iterations (default 100)
  --m M        P5: creates per phase, sequential and then parallel (default 5)
  --rounds R   P6: cold create → standby → restore rounds (default 3)
  --only LIST  run only these sections (default p4,p5,p6)
  --accel A    tcg (default) or kvm`;

interface Options {
  readonly n: number;
  readonly m: number;
  readonly rounds: number;
  readonly only: ReadonlySet<Section>;
  readonly accel: Accel;
}

// ---------------------------------------------------------------- housekeeping

let env: ImageEnv | undefined;
let im: InstanceManager | undefined;
let dataDir: string | undefined;

async function cleanup(): Promise<void> {
  if (im) {
    for (const i of im.list()) {
      await im.delete(i.id).catch((err: unknown) => {
        process.stderr.write(`lifecycle: deleting ${i.name} failed: ${errorText(err)}\n`);
      });
    }
    im = undefined;
  }
  await env?.close();
  env = undefined;
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
  dataDir = undefined;
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

function hostKhz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return Math.round(Number(m?.[1] ?? '2000') * 1000);
}

function parseArgs(argv: string[]): Options {
  const opts = { n: 100, m: 5, rounds: 3 };
  let only = new Set<Section>(SECTIONS);
  let accel: Accel = 'tcg';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      const v = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--n' || flag === '--m' || flag === '--rounds') {
      const n = Number(value());
      if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer`);
      opts[flag.slice(2) as 'n' | 'm' | 'rounds'] = n;
    } else if (flag === '--only') {
      const list = value().split(',');
      const bad = list.filter((s) => !(SECTIONS as readonly string[]).includes(s));
      if (bad.length > 0)
        throw new Error(`--only takes ${SECTIONS.join(',')}, not ${bad.join(',')}`);
      only = new Set(list as Section[]);
    } else if (flag === '--accel') {
      const v = value();
      if (v !== 'tcg' && v !== 'kvm') throw new Error('--accel must be tcg or kvm');
      accel = v;
    } else if (flag === '--help' || flag === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else {
      throw new Error(`unknown argument ${arg}\n${USAGE}`);
    }
  }
  return { ...opts, only, accel };
}

/** Nearest-rank percentile. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

const mean = (values: readonly number[]): number =>
  values.length === 0 ? NaN : values.reduce((a, b) => a + b, 0) / values.length;

function spread(values: readonly number[], digits = 3) {
  return {
    p50_ms: round(percentile(values, 50), digits),
    p99_ms: round(percentile(values, 99), digits),
    max_ms: round(Math.max(...values), digits),
    mean_ms: round(mean(values), digits),
  };
}

// ---------------------------------------------------------------- metrics

/** One histogram series: cumulative bucket counts by upper bound, sum and count. */
interface Hist {
  readonly buckets: Map<string, number>;
  readonly sum: number;
  readonly count: number;
}

async function readHist(
  metrics: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<Hist> {
  const m = (await metrics.getMetricsAsJSON()).find((x) => x.name === name);
  const buckets = new Map<string, number>();
  let sum = 0;
  let count = 0;
  for (const v of (m?.values ?? []) as {
    value: number;
    labels: Record<string, string | number>;
    metricName?: string;
  }[]) {
    if (!Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)) continue;
    if (v.metricName === `${name}_bucket`) {
      const le = String(v.labels.le);
      buckets.set(le, (buckets.get(le) ?? 0) + v.value);
    } else if (v.metricName === `${name}_sum`) sum += v.value;
    else if (v.metricName === `${name}_count`) count += v.value;
  }
  return { buckets, sum, count };
}

async function counterValue(metrics: Registry, name: string): Promise<number> {
  const m = (await metrics.getMetricsAsJSON()).find((x) => x.name === name);
  return ((m?.values ?? []) as { value: number }[]).reduce((a, v) => a + v.value, 0);
}

function histDelta(after: Hist, before: Hist): Hist {
  const buckets = new Map<string, number>();
  for (const [le, n] of after.buckets) buckets.set(le, n - (before.buckets.get(le) ?? 0));
  return { buckets, sum: after.sum - before.sum, count: after.count - before.count };
}

/** The smallest bucket bound (s) that holds every observation: an upper bound on the max. */
function maxBucket(h: Hist): string | null {
  if (h.count === 0) return null;
  const bounds = [...h.buckets.entries()]
    .filter(([le, n]) => le !== '+Inf' && n >= h.count)
    .map(([le]) => Number(le))
    .sort((a, b) => a - b);
  return bounds.length > 0 ? String(bounds[0]) : '+Inf';
}

/** Milliseconds: µs precision for short spans, 0.1 ms for long ones. */
const ms = (x: number): number => round(x, Math.abs(x) < 100 ? 4 : 1);

function summarize(h: Hist) {
  return {
    count: h.count,
    mean_ms: h.count > 0 ? ms((h.sum / h.count) * 1000) : null,
    sum_ms: ms(h.sum * 1000),
    max_le_ms: ((le) => (le === null || le === '+Inf' ? le : round(Number(le) * 1000, 4)))(
      maxBucket(h),
    ),
  };
}

// ---------------------------------------------------------------- VM helpers

/** Serial console tail of instance `id`, for error messages. */
async function consoleTail(id: string): Promise<string> {
  if (!env) return '';
  const text = await fs
    .readFile(env.paths.instanceFile(id, 'vmm/serial.log'), 'utf8')
    .catch(() => '');
  const tail = text.trim().split('\n').slice(-15).join('\n');
  return tail ? `\nserial console tail:\n${tail}` : '';
}

/**
 * Wait for `state` with `waitForState`; fail fast when the instance stops or
 * reports an error instead (a boot failure would otherwise wait out the timeout).
 */
async function until(
  m: InstanceManager,
  id: string,
  state: InstanceState,
  timeoutMs: number,
): Promise<void> {
  let off = (): void => undefined;
  const failed = new Promise<never>((_, reject) => {
    off = m.subscribe((e) => {
      if (e.type !== 'state' || e.id !== id || e.instance.state === state) return;
      if (e.instance.state === 'Stopped' || e.instance.state_error) {
        reject(new Error(`is ${e.instance.state}: ${e.instance.state_error ?? 'no error'}`));
      }
    });
  });
  try {
    const r = await Promise.race([m.waitForState(id, state, timeoutMs), failed]);
    if (r.timed_out) throw new Error(`not ${state} after ${timeoutMs} ms (is ${r.state})`);
  } catch (err) {
    throw new Error(`instance ${id}: ${errorText(err)}${await consoleTail(id)}`, { cause: err });
  } finally {
    off();
  }
}

/** create() → Running (waitForState): the instance id and the elapsed ms. */
async function createRunning(
  m: InstanceManager,
  image: string,
  name: string,
  timeoutMs = BOOT_TIMEOUT_MS,
): Promise<{ id: string; ms: number }> {
  const t0 = performance.now();
  const { id } = await m.create({
    image,
    name,
    cmd: GUEST_CMD,
    vcpus: VCPUS,
    memory_mib: MEMORY_MIB,
    network: { enabled: false },
  });
  await until(m, id, 'Running', timeoutMs);
  return { id, ms: performance.now() - t0 };
}

/** A naive client: read the state, sleep `everyMs`, read again. Resolves with the time it saw `state`. */
async function poll(
  m: InstanceManager,
  id: string,
  state: InstanceState,
  everyMs: number,
): Promise<number> {
  const deadline = performance.now() + WAIT_MS;
  for (;;) {
    if (m.get(id).state === state) return performance.now();
    if (performance.now() > deadline) throw new Error(`poller: ${id} not ${state} in time`);
    await sleep(everyMs);
  }
}

// ---------------------------------------------------------------- P4

interface P4Raw {
  readonly bus_ms: number[];
  readonly poll_ms: number[];
  /** Change → the end of the manager's synchronous work that published it (see runP4). */
  readonly sync_tail_ms: number[];
  /** CPU time (user + system, all threads) this process used during that tail. */
  readonly sync_tail_cpu_ms: number[];
}

/**
 * Per iteration: start a waitForState waiter and a polling loop, pause after a
 * random delay in [0, POLL_MS) (so the poller's phase is unrelated to the
 * change, as for a real client), take the moment of the change from the
 * synchronous topic, then resume.
 *
 * The listener also queues a microtask. It runs as soon as the synchronous
 * code that published the change returns (it is queued before the bus's own
 * delivery), so it splits the waiter's latency into the synchronous tail (the
 * rest of the manager's code that published the change: SQLite, daemon-log
 * appends; plus microtasks queued before it) and the bus delivery proper.
 */
async function runP4(m: InstanceManager, image: string, n: number) {
  const { id } = await createRunning(m, image, 'lc-p4');
  let changeAt: number | undefined;
  let tailAt: number | undefined;
  let tailCpuMs = 0;
  const off = m.subscribe((e) => {
    if (e.type === 'state' && e.id === id && e.instance.state === 'Paused' && e.from !== 'Paused') {
      changeAt = performance.now();
      const cpu0 = process.cpuUsage();
      queueMicrotask(() => {
        tailAt = performance.now();
        const used = process.cpuUsage(cpu0);
        tailCpuMs = (used.user + used.system) / 1000;
      });
    }
  });
  const raw: P4Raw = { bus_ms: [], poll_ms: [], sync_tail_ms: [], sync_tail_cpu_ms: [] };
  const loop = monitorEventLoopDelay({ resolution: 1 });
  const cpu = await cpuTimes();
  try {
    loop.enable();
    for (let i = 0; i < n; i++) {
      changeAt = undefined;
      tailAt = undefined;
      const waiter = m
        .waitForState(id, 'Paused', WAIT_MS)
        .then((r) => ({ ...r, at: performance.now() }));
      const poller = poll(m, id, 'Paused', POLL_MS);
      await sleep(Math.random() * POLL_MS);
      await m.pause(id);
      const [w, polledAt] = await Promise.all([waiter, poller]);
      if (w.timed_out || w.state !== 'Paused') throw new Error(`P4: waiter ended ${w.state}`);
      if (changeAt === undefined || tailAt === undefined)
        throw new Error('P4: no Paused state event was published');
      raw.bus_ms.push(w.at - changeAt);
      raw.sync_tail_ms.push(tailAt - changeAt);
      raw.sync_tail_cpu_ms.push(tailCpuMs);
      raw.poll_ms.push(polledAt - changeAt);
      await m.resume(id);
      await until(m, id, 'Running', WAIT_MS);
      if ((i + 1) % 10 === 0 || i + 1 === n) {
        process.stderr.write(
          `lifecycle: P4 ${i + 1}/${n}: last bus ${raw.bus_ms.at(-1)!.toFixed(3)} ms (sync tail ${raw.sync_tail_ms.at(-1)!.toFixed(3)}), poll ${raw.poll_ms.at(-1)!.toFixed(1)} ms\n`,
        );
      }
    }
  } finally {
    loop.disable();
    off();
    await m.delete(id);
  }
  const bus = spread(raw.bus_ms);
  const pollSpread = spread(raw.poll_ms, 1);
  const steal = await stealPct(cpu);
  return {
    result: {
      iterations: n,
      poll_interval_ms: POLL_MS,
      bus,
      poll: pollSpread,
      /** Part of `bus`: the change's synchronous tail in the manager, before any delivery can run. */
      sync_tail: spread(raw.sync_tail_ms),
      /**
       * CPU time used during the tail (getrusage, 1 µs ticks but often coarser):
       * far below `sync_tail` means the process was waiting (run queue, disk), not working.
       */
      sync_tail_cpu: spread(raw.sync_tail_cpu_ms),
      ratio_p99: round(bus.p99_ms / pollSpread.p99_ms, 6),
      /** Node's event-loop delay during P4 (context for outliers). */
      event_loop_delay: {
        p50_ms: round(loop.percentile(50) / 1e6, 3),
        p99_ms: round(loop.percentile(99) / 1e6, 3),
        max_ms: round(loop.max / 1e6, 3),
      },
      steal_pct: steal,
      goal: { p99_ms: GOAL_P4_P99_MS, met: bus.p99_ms <= GOAL_P4_P99_MS },
    },
    raw,
  };
}

// ---------------------------------------------------------------- P5

interface P5Phase {
  readonly mode: 'sequential' | 'parallel';
  readonly creates: number;
  /** create() call → Running, measured here. */
  readonly create_ms: ReturnType<typeof spread>;
  /** vessel_instance_create_seconds over the phase. */
  readonly create_metric: ReturnType<typeof summarize>;
  readonly reservation_lock: ReturnType<typeof summarize>;
  readonly instance_lock: ReturnType<typeof summarize>;
  /** Mean reservation hold / mean create → Running. */
  readonly share: number;
  readonly steal_pct: number | null;
}

async function p5Phase(
  m: InstanceManager,
  metrics: Registry,
  image: string,
  count: number,
  mode: P5Phase['mode'],
): Promise<{ phase: P5Phase; raw: { create_ms: number[]; reservation: Hist } }> {
  const read = async () => ({
    reservation: await readHist(metrics, 'vessel_instance_lock_hold_seconds', {
      lock: 'reservation',
    }),
    instance: await readHist(metrics, 'vessel_instance_lock_hold_seconds', { lock: 'instance' }),
    create: await readHist(metrics, 'vessel_instance_create_seconds'),
  });
  const before = await read();
  const cpu = await cpuTimes();
  const names = Array.from({ length: count }, (_, i) => `lc-p5-${mode.slice(0, 3)}-${i}`);
  let runs: { id: string; ms: number }[];
  if (mode === 'sequential') {
    runs = [];
    for (const name of names) runs.push(await createRunning(m, image, name));
  } else {
    // Many TCG boots share the CPUs: allow each the time of a sequential one per two.
    const timeout = BOOT_TIMEOUT_MS * Math.max(1, Math.ceil(count / 2));
    const settled = await Promise.allSettled(
      names.map((name) => createRunning(m, image, name, timeout)),
    );
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    runs = settled.map((s) => (s as PromiseFulfilledResult<{ id: string; ms: number }>).value);
  }
  const after = await read();
  const steal = await stealPct(cpu);
  for (const r of runs) await m.delete(r.id);
  const reservation = histDelta(after.reservation, before.reservation);
  const createMs = runs.map((r) => r.ms);
  const holdMs = reservation.count > 0 ? (reservation.sum / reservation.count) * 1000 : NaN;
  return {
    phase: {
      mode,
      creates: count,
      create_ms: spread(createMs, 1),
      create_metric: summarize(histDelta(after.create, before.create)),
      reservation_lock: summarize(reservation),
      instance_lock: summarize(histDelta(after.instance, before.instance)),
      share: round(holdMs / mean(createMs), 8),
      steal_pct: steal,
    },
    raw: { create_ms: createMs, reservation },
  };
}

async function runP5(m: InstanceManager, metrics: Registry, image: string, count: number) {
  const seq = await p5Phase(m, metrics, image, count, 'sequential');
  process.stderr.write(
    `lifecycle: P5 sequential: create→Running mean ${seq.phase.create_ms.mean_ms} ms, reservation hold mean ${seq.phase.reservation_lock.mean_ms} ms\n`,
  );
  const par = await p5Phase(m, metrics, image, count, 'parallel');
  process.stderr.write(
    `lifecycle: P5 parallel: create→Running mean ${par.phase.create_ms.mean_ms} ms, reservation hold mean ${par.phase.reservation_lock.mean_ms} ms\n`,
  );
  const all = [...seq.raw.create_ms, ...par.raw.create_ms];
  const holds = seq.raw.reservation.count + par.raw.reservation.count;
  const holdMs = ((seq.raw.reservation.sum + par.raw.reservation.sum) / holds) * 1000;
  const createMs = mean(all);
  const share = holdMs / createMs;
  const notes: string[] = [];
  if (holds !== all.length)
    notes.push(`${holds} reservation lock holds for ${all.length} creates (expected one each)`);
  return {
    result: {
      creates: all.length,
      mean_reservation_hold_ms: round(holdMs, 4),
      mean_create_to_running_ms: round(createMs, 1),
      share: round(share, 8),
      share_pct: round(share * 100, 5),
      phases: [seq.phase, par.phase],
      goal: { share: GOAL_P5_SHARE, met: share <= GOAL_P5_SHARE },
      notes,
    },
    raw: { sequential_ms: seq.raw.create_ms, parallel_ms: par.raw.create_ms },
  };
}

// ---------------------------------------------------------------- P6

interface P6Round {
  readonly cold_ms: number;
  readonly standby_ms: number;
  /** restore() call → restore() resolved (the instance is Running then). */
  readonly restore_ms: number;
  /** restore() call → the Running state published (restore() returns a little later). */
  readonly restore_running_ms: number;
  readonly snapshot_bytes: number;
  /** An exec in the restored VM (`true`) exited 0: the guest really runs again. */
  readonly exec_ok: boolean;
  readonly steal_pct: number | null;
}

async function p6Round(m: InstanceManager, image: string, name: string): Promise<P6Round> {
  const cpu = await cpuTimes();
  const cold = await createRunning(m, image, name);
  const id = cold.id;
  try {
    const s0 = performance.now();
    await m.standby(id);
    const standbyMs = performance.now() - s0;
    if (m.get(id).state !== 'Standby') throw new Error(`P6: ${name} is ${m.get(id).state}`);
    const snapshotBytes = (await fs.stat(snapshotPaths(env!.paths.instanceDir(id)).state)).size;

    let runningAt: number | undefined;
    const off = m.subscribe((e) => {
      if (e.type === 'state' && e.id === id && e.instance.state === 'Running')
        runningAt ??= performance.now();
    });
    const r0 = performance.now();
    try {
      await m.restore(id);
    } finally {
      off();
    }
    const restored = performance.now();
    const now = m.get(id);
    if (now.state !== 'Running' || now.state_error) {
      throw new Error(
        `P6: after restore ${name} is ${now.state}${now.state_error ? `: ${now.state_error}` : ''}${await consoleTail(id)}`,
      );
    }
    const exec = await m.exec(id, { argv: ['true'] });
    exec.stdout.resume();
    exec.stderr.resume();
    const status = await exec.result;
    return {
      cold_ms: round(cold.ms, 1),
      standby_ms: round(standbyMs, 1),
      restore_ms: round(restored - r0, 1),
      restore_running_ms: round((runningAt ?? restored) - r0, 1),
      snapshot_bytes: snapshotBytes,
      exec_ok: status.code === 0,
      steal_pct: await stealPct(cpu),
    };
  } finally {
    await m.delete(id);
  }
}

async function runP6(m: InstanceManager, image: string, rounds: number) {
  const raw: P6Round[] = [];
  for (let i = 0; i < rounds; i++) {
    const r = await p6Round(m, image, `lc-p6-${i}`);
    raw.push(r);
    process.stderr.write(
      `lifecycle: P6 ${i + 1}/${rounds}: cold ${r.cold_ms} ms, standby ${r.standby_ms} ms, ` +
        `restore ${r.restore_ms} ms, snapshot ${mb(r.snapshot_bytes)}, exec ${r.exec_ok ? 'ok' : 'FAILED'}; steal ${r.steal_pct ?? '?'}%\n`,
    );
  }
  const cold = median(raw.map((r) => r.cold_ms));
  const restore = median(raw.map((r) => r.restore_ms));
  const ratio = round(restore / cold, 3);
  return {
    result: {
      rounds,
      cold_ms: round(cold),
      restore_ms: round(restore),
      restore_running_ms: round(median(raw.map((r) => r.restore_running_ms))),
      standby_ms: round(median(raw.map((r) => r.standby_ms))),
      snapshot_bytes: median(raw.map((r) => r.snapshot_bytes)),
      exec_after_restore_ok: raw.every((r) => r.exec_ok),
      ratio,
      goal: { ratio: GOAL_P6_RATIO, met: ratio <= GOAL_P6_RATIO },
    },
    raw,
  };
}

// ---------------------------------------------------------------- main

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  for (const tool of ['/usr/bin/qemu-system-x86_64', '/usr/bin/busybox']) {
    await fs.access(tool).catch(() => {
      throw new Error(`${tool} is missing (needed by P4–P6)`);
    });
  }
  await fs.access(guestBinaryPath()).catch(() => {
    throw new Error(`the guest program is not built (${guestBinaryPath()}); run npm run build`);
  });

  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-bench-lc-'));
  await seedKernel(dataDir);
  env = await makeImageEnv({}, dataDir);
  const kernel = await ensureKernel(DEFAULT_KERNEL, { dataDir });
  const archive = path.join(dataDir, 'busybox.tar');
  await writeDockerArchive(archive, await busyboxImage(), IMAGE_REF);
  const image = await env.manager.waitForReady(
    (await env.manager.import(createReadStream(archive))).name,
  );
  const metrics = env.metrics;
  im = makeInstanceManager(env, {
    accel: () => Promise.resolve(opts.accel),
    tscKhz: hostKhz(),
    bootTimeoutMs: BOOT_TIMEOUT_MS * Math.max(1, Math.ceil(opts.m / 2)),
    logger: createLogger({ level: 'warn' }),
    metrics,
  });
  await im.init();
  process.stderr.write(
    `lifecycle: ${kernel.name}/${kernel.version}, image ${image.name} (${image.format}), accel ${opts.accel}\n`,
  );
  // One untimed boot: the initramfs cache and QEMU's binary are warm for every section.
  await im.delete((await createRunning(im, image.name, 'lc-warmup')).id);
  process.stderr.write('lifecycle: warm-up boot done\n');

  const benchCpu = await cpuTimes();
  const p4 = opts.only.has('p4') ? await runP4(im, image.name, opts.n) : undefined;
  const p5 = opts.only.has('p5') ? await runP5(im, metrics, image.name, opts.m) : undefined;
  const p6 = opts.only.has('p6') ? await runP6(im, image.name, opts.rounds) : undefined;
  const dropped = await counterValue(metrics, 'vessel_lifecycle_events_dropped_total');
  const steal = await stealPct(benchCpu);

  const result = {
    benchmark: 'P4-P6',
    date: new Date().toISOString(),
    host: {
      cpus: os.availableParallelism(),
      node: process.version,
      arch: process.arch,
      /** CPU time stolen by the hypervisor during the timed sections: high values mean noisy numbers. */
      steal_pct: steal,
    },
    params: { n: opts.n, m: opts.m, rounds: opts.rounds, only: [...opts.only] },
    vm: {
      accel: opts.accel,
      kernel: `${kernel.name}/${kernel.version}`,
      image: image.name,
      image_format: image.format,
      vcpus: VCPUS,
      memory_mib: MEMORY_MIB,
      network: 'none',
      cmd: GUEST_CMD,
    },
    /** Lifecycle bus events dropped for full queues during the run (waiters would fall back to polling). */
    bus_events_dropped: dropped,
    p4: p4?.result ?? null,
    p5: p5?.result ?? null,
    p6: p6?.result ?? null,
    raw: { p4: p4?.raw ?? null, p5: p5?.raw ?? null, p6: p6?.raw ?? null },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);

  const ok = (met: boolean): string => (met ? 'met' : 'MISSED');
  const rows: string[][] = [['lifecycle', 'measured', 'goal']];
  if (p4) {
    const r = p4.result;
    rows.push(
      [
        'P4 waitForState wake-up',
        `p50 ${r.bus.p50_ms} / p99 ${r.bus.p99_ms} / max ${r.bus.max_ms} ms (${r.iterations} pauses)`,
        `p99 <= ${GOAL_P4_P99_MS} ms ${ok(r.goal.met)}`,
      ],
      [
        `P4 baseline: ${POLL_MS} ms poll`,
        `p50 ${r.poll.p50_ms} / p99 ${r.poll.p99_ms} / max ${r.poll.max_ms} ms`,
        '',
      ],
      [
        'P4 of which sync tail',
        `p50 ${r.sync_tail.p50_ms} / p99 ${r.sync_tail.p99_ms} / max ${r.sync_tail.max_ms} ms ` +
          `(CPU p50 ${r.sync_tail_cpu.p50_ms} / p99 ${r.sync_tail_cpu.p99_ms} ms)`,
        '',
      ],
      ['P4 ratio p99 bus/poll', `${r.ratio_p99}`, ''],
      [
        'P4 event-loop delay',
        `p50 ${r.event_loop_delay.p50_ms} / p99 ${r.event_loop_delay.p99_ms} / max ${r.event_loop_delay.max_ms} ms`,
        '',
      ],
    );
  }
  if (p5) {
    const r = p5.result;
    for (const ph of r.phases) {
      rows.push([
        `P5 ${ph.mode} x${ph.creates}`,
        `create→Running mean ${ph.create_ms.mean_ms} ms (metric ${ph.create_metric.mean_ms} ms); ` +
          `reservation hold mean ${ph.reservation_lock.mean_ms} ms (max <= ${ph.reservation_lock.max_le_ms} ms); ` +
          `instance lock mean ${ph.instance_lock.mean_ms} ms`,
        '',
      ]);
    }
    rows.push([
      'P5 reservation hold / create',
      `${r.mean_reservation_hold_ms} ms / ${r.mean_create_to_running_ms} ms = ${r.share_pct}%`,
      `<= ${GOAL_P5_SHARE * 100}% ${ok(r.goal.met)}`,
    ]);
  }
  if (p6) {
    const r = p6.result;
    rows.push(
      ['P6 cold create → Running', `${r.cold_ms} ms (median of ${r.rounds})`, ''],
      [
        'P6 restore → Running',
        `${r.restore_ms} ms (Running published at ${r.restore_running_ms}; standby took ${r.standby_ms}; exec after restore ${r.exec_after_restore_ok ? 'ok' : 'FAILED'})`,
        '',
      ],
      ['P6 ratio restore/cold', `${r.ratio}`, `<= ${GOAL_P6_RATIO} ${ok(r.goal.met)}`],
      ['P6 snapshot size', `${mb(r.snapshot_bytes)} for ${MEMORY_MIB} MiB of guest memory`, ''],
    );
  }
  rows.push(['cpu steal', `${steal ?? '?'}% of CPU time stolen by the hypervisor`, '']);
  process.stdout.write(table(rows));
}

await runBench('lifecycle', main, cleanup);
