// P3 (PRODUCT.md §5): Vessel pull + convert of a Debian minbase image from a
// local registry, against skopeo copy + umoci unpack + mkfs.erofs -zlz4 on the
// same image and registry in the same run; plus the warm re-pull time.
//
//   npm run bench                      # builds, then 3 cold runs of each
//   node dist/bench/p3-pull.js --runs 5
//
// Prints a JSON object first, then a table. Exits 0 even when goals are missed.
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { defaultConfig } from '../src/core/config.js';
import { Paths } from '../src/core/paths.js';
import { ImageManager } from '../src/images/index.js';
import { ImagesRepo, openDatabase } from '../src/store/index.js';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.js';
import { LAYOUT_TAG, prepareBenchImage, type BenchImage } from './lib/bench-image.js';
import { cpuTimes, medianOf, parseRuns, round, stealPct, table, runBench } from './lib/measure.js';

const execFileAsync = promisify(execFile);

const GOAL_RATIO = 0.7;
const GOAL_WARM_MS = 50;
const WARM_REPEATS = 5;
const REPO = 'bench/debian:1';

interface BaselineRun {
  readonly steal_pct: number | null;
  readonly skopeo_ms: number;
  readonly umoci_ms: number;
  readonly mkfs_ms: number;
  readonly total_ms: number;
  readonly disk_bytes: number;
}

interface VesselRun {
  readonly steal_pct: number | null;
  readonly total_ms: number;
  /** From vessel_image_phase_seconds (ms resolution). */
  readonly resolve_ms: number;
  readonly download_ms: number;
  readonly convert_ms: number;
  /**
   * The convert phase split by wall-clock marks: the `converting` status event,
   * the DiskBuilder's "disk built" log line (its end time and `ms`) and `ready`.
   * unpack = converting → mkfs start; finalize = mkfs end → ready (removing the
   * unpacked tree, metadata, publish).
   */
  readonly unpack_ms: number | null;
  readonly mkfs_ms: number | null;
  readonly finalize_ms: number | null;
  readonly warm_ms: number[];
  readonly disk_bytes: number;
  readonly format: string | null;
  /** Where the layers were unpacked: `staging_dir` (tmpfs) or `data_dir` (the "disk built" log line). */
  readonly unpacked_in: string | null;
}

// ---------------------------------------------------------------- housekeeping

const tempDirs = new Set<string>();
let registry: TestRegistry | undefined;

async function tempDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

async function removeDir(dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

async function cleanup(): Promise<void> {
  await registry?.stop();
  registry = undefined;
  for (const dir of [...tempDirs]) await removeDir(dir);
}

async function tool(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`${cmd} ${args.join(' ')} failed: ${stderr.trim()}`, { cause: err });
  }
}

/** Flush dirty pages so one side's writeback is not billed to the other. */
const sync = (): Promise<string> => tool('sync', []);

// ---------------------------------------------------------------- the two sides

async function runBaseline(ref: string): Promise<BaselineRun> {
  const dir = await tempDir('vessel-bench-base-');
  try {
    const layout = path.join(dir, 'layout');
    const bundle = path.join(dir, 'bundle');
    const out = path.join(dir, 'rootfs.erofs');
    await sync();
    const cpu = await cpuTimes();
    const t0 = performance.now();
    await tool('skopeo', [
      '--insecure-policy',
      'copy',
      '--quiet',
      '--src-tls-verify=false',
      `docker://${ref}`,
      `oci:${layout}:x`,
    ]);
    const t1 = performance.now();
    await tool('umoci', ['unpack', '--image', `${layout}:x`, bundle]);
    const t2 = performance.now();
    // The exact mkfs invocation Vessel uses (src/images/convert.ts).
    await tool('mkfs.erofs', ['-zlz4', '--quiet', out, path.join(bundle, 'rootfs')]);
    const t3 = performance.now();
    return {
      steal_pct: await stealPct(cpu),
      skopeo_ms: t1 - t0,
      umoci_ms: t2 - t1,
      mkfs_ms: t3 - t2,
      total_ms: t3 - t0,
      disk_bytes: (await fs.stat(out)).size,
    };
  } finally {
    await removeDir(dir);
  }
}

/** Sum of a histogram's `_sum` samples for one phase, in ms. */
async function phaseMs(metrics: Registry, phase: string): Promise<number> {
  const all = await metrics.getMetricsAsJSON();
  const m = all.find((x) => x.name === 'vessel_image_phase_seconds');
  let total = 0;
  for (const v of (m?.values ?? []) as {
    value: number;
    labels: Record<string, string | number>;
    metricName?: string;
  }[]) {
    if (v.metricName === 'vessel_image_phase_seconds_sum' && v.labels.phase === phase)
      total += v.value;
  }
  return total * 1000;
}

/** A real ImageManager on a fresh data dir, as test/helpers/image-env.ts builds it. */
async function runVessel(ref: string): Promise<VesselRun> {
  const dir = await tempDir('vessel-bench-data-');
  const paths = new Paths(dir);
  const db = openDatabase(path.join(dir, 'vessel.db'));
  const metrics = new Registry();
  const logLines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'info' },
    {
      write(line: string) {
        try {
          logLines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // not JSON: ignore
        }
      },
    },
  );
  const manager = new ImageManager({
    paths,
    repo: new ImagesRepo(db),
    logger,
    config: defaultConfig(dir).images,
    metrics,
  });
  const marks = new Map<string, number>();
  const unsubscribe = manager.subscribe((e) => {
    if (e.type === 'status' && !marks.has(e.image.status)) marks.set(e.image.status, Date.now());
  });
  try {
    await manager.init();
    await sync();
    const cpu = await cpuTimes();
    const t0 = performance.now();
    manager.pull(ref);
    const image = await manager.waitForReady(ref, { timeoutMs: 30 * 60_000 });
    const total = performance.now() - t0;
    const readyAt = Date.now();
    const steal = await stealPct(cpu);
    unsubscribe();

    const warm: number[] = [];
    for (let i = 0; i < WARM_REPEATS; i++) {
      const w0 = performance.now();
      manager.pull(ref);
      await manager.waitForReady(ref, { timeoutMs: 60_000 });
      warm.push(performance.now() - w0);
    }

    const built = logLines.find((l) => l.msg === 'disk built');
    const mkfs = typeof built?.ms === 'number' ? built.ms : null;
    const mkfsEnd = typeof built?.time === 'number' ? built.time : null;
    const converting = marks.get('converting');
    const split =
      mkfs !== null && mkfsEnd !== null && converting !== undefined
        ? {
            unpack_ms: mkfsEnd - mkfs - converting,
            mkfs_ms: mkfs,
            finalize_ms: (marks.get('ready') ?? readyAt) - mkfsEnd,
          }
        : { unpack_ms: null, mkfs_ms: null, finalize_ms: null };
    return {
      steal_pct: steal,
      total_ms: total,
      resolve_ms: await phaseMs(metrics, 'resolve'),
      download_ms: await phaseMs(metrics, 'download'),
      convert_ms: await phaseMs(metrics, 'convert'),
      ...split,
      warm_ms: warm,
      disk_bytes: image.size_bytes ?? 0,
      format: image.format,
      unpacked_in: typeof built?.unpacked_in === 'string' ? built.unpacked_in : null,
    };
  } finally {
    unsubscribe();
    await manager.drain();
    manager.close();
    db.close();
    await removeDir(dir);
  }
}

// ---------------------------------------------------------------- report

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

async function main(): Promise<void> {
  const runs = parseRuns(process.argv.slice(2), 3, 'usage: node dist/bench/p3-pull.js [--runs N]');
  const image: BenchImage = await prepareBenchImage();
  for (const note of image.notes) process.stderr.write(`p3: ${note}\n`);

  const benchCpu = await cpuTimes();
  registry = await startRegistry();
  const ref = `${registry.host}/${REPO}`;
  const p0 = performance.now();
  await tool('skopeo', [
    '--insecure-policy',
    'copy',
    '--quiet',
    '--dest-tls-verify=false',
    `oci:${image.layoutDir}:${LAYOUT_TAG}`,
    `docker://${ref}`,
  ]);
  process.stderr.write(`p3: pushed ${ref} in ${Math.round(performance.now() - p0)} ms\n`);

  const baseline: BaselineRun[] = [];
  const vessel: VesselRun[] = [];
  for (let i = 0; i < runs; i++) {
    const order =
      i % 2 === 0 ? (['baseline', 'vessel'] as const) : (['vessel', 'baseline'] as const);
    for (const side of order) {
      if (side === 'baseline') {
        const r = await runBaseline(ref);
        baseline.push(r);
        process.stderr.write(
          `p3: run ${i + 1}/${runs} baseline ${Math.round(r.total_ms)} ms ` +
            `(skopeo ${Math.round(r.skopeo_ms)}, umoci ${Math.round(r.umoci_ms)}, mkfs ${Math.round(r.mkfs_ms)}); steal ${r.steal_pct ?? '?'}%\n`,
        );
      } else {
        const r = await runVessel(ref);
        vessel.push(r);
        process.stderr.write(
          `p3: run ${i + 1}/${runs} vessel ${Math.round(r.total_ms)} ms ` +
            `(resolve ${Math.round(r.resolve_ms)}, download ${Math.round(r.download_ms)}, ` +
            `convert ${Math.round(r.convert_ms)} = unpack ${r.unpack_ms ?? '?'} + mkfs ${r.mkfs_ms ?? '?'} + finalize ${r.finalize_ms ?? '?'}); ` +
            `unpacked in ${r.unpacked_in ?? '?'}; ` +
            `warm ${r.warm_ms.map((w) => w.toFixed(1)).join('/')} ms; steal ${r.steal_pct ?? '?'}%\n`,
        );
      }
    }
  }

  const med = medianOf;
  const baselineMs = med(baseline, (r) => r.total_ms);
  const vesselMs = med(vessel, (r) => r.total_ms);
  const warmMs = med(
    vessel.flatMap((r) => r.warm_ms),
    (w) => w,
  );
  const ratio = round(vesselMs / baselineMs, 3);
  const steal = await stealPct(benchCpu);
  const result = {
    benchmark: 'P3',
    date: new Date().toISOString(),
    host: {
      cpus: os.availableParallelism(),
      node: process.version,
      arch: process.arch,
      /** CPU time stolen by the hypervisor during the benchmark: high values mean noisy numbers. */
      steal_pct: steal,
    },
    runs,
    image: {
      source: image.source,
      ref,
      layers: image.layers.length,
      compressed_bytes: image.compressedBytes,
      uncompressed_bytes: image.uncompressedBytes,
      entries: image.entries,
      layer_detail: image.layers.map((l) => ({
        name: l.name,
        size: l.size,
        tar_bytes: l.tarBytes,
        entries: l.entries,
      })),
    },
    baseline: {
      total_ms: baselineMs,
      skopeo_ms: med(baseline, (r) => r.skopeo_ms),
      umoci_ms: med(baseline, (r) => r.umoci_ms),
      mkfs_ms: med(baseline, (r) => r.mkfs_ms),
      disk_bytes: baseline[0]?.disk_bytes ?? 0,
    },
    vessel: {
      total_ms: vesselMs,
      resolve_ms: med(vessel, (r) => r.resolve_ms),
      download_ms: med(vessel, (r) => r.download_ms),
      convert_ms: med(vessel, (r) => r.convert_ms),
      unpack_ms: med(vessel, (r) => r.unpack_ms),
      mkfs_ms: med(vessel, (r) => r.mkfs_ms),
      finalize_ms: med(vessel, (r) => r.finalize_ms),
      warm_repull_ms: warmMs,
      disk_bytes: vessel[0]?.disk_bytes ?? 0,
      format: vessel[0]?.format ?? null,
      unpacked_in: [...new Set(vessel.map((r) => r.unpacked_in))].join(', '),
    },
    ratio,
    goals: {
      ratio: { goal: GOAL_RATIO, met: ratio <= GOAL_RATIO },
      warm_repull_ms: { goal: GOAL_WARM_MS, met: warmMs <= GOAL_WARM_MS },
    },
    raw: { baseline, vessel },
    notes: image.notes,
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);

  const ok = (met: boolean): string => (met ? 'met' : 'MISSED');
  process.stdout.write(
    table([
      ['P3 pull + convert', `median of ${runs}`, 'goal'],
      [
        'image',
        `${image.source}, ${image.layers.length} gzip layers, ${mb(image.compressedBytes)} compressed, ${mb(image.uncompressedBytes)} unpacked, ${image.entries} entries`,
        '',
      ],
      [
        'baseline total',
        `${baselineMs} ms (skopeo ${result.baseline.skopeo_ms} + umoci ${result.baseline.umoci_ms} + mkfs ${result.baseline.mkfs_ms})`,
        '',
      ],
      [
        'vessel total',
        `${vesselMs} ms (resolve ${result.vessel.resolve_ms} + download ${result.vessel.download_ms} + convert ${result.vessel.convert_ms} [unpack ${result.vessel.unpack_ms} + mkfs ${result.vessel.mkfs_ms} + finalize ${result.vessel.finalize_ms}]); unpacked in ${result.vessel.unpacked_in}`,
        '',
      ],
      ['ratio vessel/baseline', `${ratio}`, `<= ${GOAL_RATIO} ${ok(result.goals.ratio.met)}`],
      [
        'warm re-pull',
        `${warmMs} ms (median of ${vessel.length * WARM_REPEATS})`,
        `<= ${GOAL_WARM_MS} ms ${ok(result.goals.warm_repull_ms.met)}`,
      ],
      ['cpu steal', `${steal ?? '?'}% of CPU time stolen by the hypervisor during the run`, ''],
      [
        'disk size',
        `vessel ${mb(result.vessel.disk_bytes)} (${result.vessel.format ?? '?'}), baseline ${mb(result.baseline.disk_bytes)} (erofs)`,
        '',
      ],
    ]),
  );
}

await runBench('p3', main, cleanup);
