// P13 (issue 12, "Measure"): `vessel build` of a small Dockerfile (2 COPY, 3 RUN) against
// `buildah bud` of the same context in the same run, and a fully cached `vessel build`
// against the cold one. Goals: cold Vessel ≤ 1.5× buildah; cached rebuild ≤ 0.05× cold.
//
//   npx tsc -p tsconfig.json && node dist/bench/p13-build.js --runs 3
//
// Both sides pull the base (busybox, from a local registry) before the clock starts. The
// cold builds run every step (`--no-cache` on both sides); buildah uses chroot isolation
// and vfs storage in a temp dir, and is timed in its default mode (the steps' changes
// committed as one layer) and with `--layers` (one layer per step, as Vessel makes). RUN
// steps boot builder microVMs with no network (Vessel's default). Prints a JSON object,
// then a table; exits 0 even when a goal is missed.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildahStore, type BuildahStore } from '../test/helpers/image-tree.js';
import { pushBusybox } from '../test/helpers/oci-builder.js';
import { startRegistry } from '../test/helpers/registry.js';
import { MAIN_JS, seedKernel, startDaemon } from '../test/helpers/vm-daemon.js';
import {
  cpuTimes,
  median,
  parseRuns,
  releaseResources,
  round,
  runBench,
  stealPct,
  table,
  timedProcess,
  type BenchResources,
} from './lib/measure.js';

const COLD_GOAL = 1.5;
const CACHED_GOAL = 0.05;
const USAGE = 'usage: node dist/bench/p13-build.js [--runs N]   (N builds per side, default 3)';

const dockerfile = (base: string): string => `FROM ${base}
COPY app/ /app/
RUN mkdir -p /app/data && sha256sum /app/lib/blob.bin > /app/data/sum && echo built > /app/data/stamp
COPY app.conf /etc/app.conf
RUN cat /etc/app.conf > /app/data/conf && ls -l /app > /app/data/list
RUN for i in 1 2 3 4 5; do echo line $i; done > /app/data/count && rm /bin/vi
WORKDIR /app
CMD ["/bin/sh", "-c", "cat data/stamp"]
`;

/** The context: a small app tree (20 text files and a 1 MiB binary) and a config file. */
async function writeContext(ctx: string, base: string): Promise<void> {
  await fs.mkdir(path.join(ctx, 'app', 'lib'), { recursive: true });
  await fs.mkdir(path.join(ctx, 'app', 'src'), { recursive: true });
  for (let i = 0; i < 20; i++)
    await fs.writeFile(path.join(ctx, 'app', 'src', `f${i}.txt`), `file ${i}\n`.repeat(50));
  await fs.writeFile(path.join(ctx, 'app', 'lib', 'blob.bin'), randomBytes(1024 * 1024));
  await fs.writeFile(path.join(ctx, 'app.conf'), 'mode=bench\n');
  await fs.writeFile(path.join(ctx, 'Dockerfile'), dockerfile(base));
}

function newSamples() {
  return {
    vessel_cold: [] as number[],
    buildah: [] as number[],
    buildah_layers: [] as number[],
    vessel_cached: [] as number[],
    vessel_cold_server: [] as number[],
    vessel_cached_server: [] as number[],
    /** The sum of the cached build's step durations. */
    vessel_cached_steps: [] as number[],
    /** CLI start → the build record's created_at (node start, packing and sending the context). */
    cached_before_record: [] as number[],
    /** The build record's completed_at → CLI exit (the last events, the process ending). */
    cached_after_ready: [] as number[],
    cli_floor: [] as number[],
    cached_same_image: [] as boolean[],
    steps: [] as { text: string; ms: number[] }[],
  };
}

async function main(res: BenchResources): Promise<void> {
  const runs = parseRuns(process.argv.slice(2), 3, USAGE);
  for (const tool of ['/usr/bin/buildah', '/usr/bin/skopeo', '/usr/bin/qemu-system-x86_64'])
    await fs.access(tool).catch(() => {
      throw new Error(`${tool} is missing (run scripts/setup.sh)`);
    });
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-p13-'));
  res.work = work;
  const dataDir = path.join(work, 'data');
  await seedKernel(dataDir);
  const registry = await startRegistry();
  res.registry = registry;
  const base = await pushBusybox(registry.host, work);
  const daemon = await startDaemon(dataDir);
  res.daemon = daemon;
  const c = daemon.client;
  const buildah: BuildahStore = buildahStore(path.join(work, 'buildah'));
  const vessel = (args: readonly string[]): Promise<number> =>
    timedProcess(process.execPath, [MAIN_JS, '--data-dir', dataDir, 'build', ...args]);

  // Not timed: both sides pull the base, and one throw-away build each warms the page
  // cache (QEMU, kernel, initramfs, buildah) without leaving a cache entry the runs use.
  const ctx = path.join(work, 'ctx');
  await writeContext(ctx, base);
  const warm = path.join(work, 'warm');
  await fs.mkdir(warm);
  await fs.writeFile(path.join(warm, 'Dockerfile'), `FROM ${base}\nRUN echo warm > /warm\n`);
  await buildah.pull(base);
  await vessel(['-q', '-t', 'bench/warm:1', warm]);
  await buildah.bud(warm, 'localhost/warm:1');

  const m = newSamples();
  const cpu = await cpuTimes();
  for (let r = 0; r < runs; r++) {
    const buildahFirst = r % 2 === 1;
    if (buildahFirst) m.buildah.push(await timedBud(buildah, ctx, `p13-${r}`));
    m.vessel_cold.push(await vessel(['-q', '--no-cache', '-t', `bench/p13:cold-${r}`, ctx]));
    const cold = (await c.listBuilds()).at(-1)!;
    if (cold.status !== 'ready') throw new Error(`the cold build ended ${cold.status}`);
    m.vessel_cold_server.push(cold.duration_ms ?? NaN);
    for (const [i, s] of cold.steps.entries()) {
      m.steps[i] ??= { text: s.text, ms: [] };
      m.steps[i].ms.push(s.duration_ms ?? NaN);
    }
    const t0 = Date.now();
    m.vessel_cached.push(await vessel(['-q', '-t', `bench/p13:cached-${r}`, ctx]));
    const t1 = Date.now();
    const cached = (await c.listBuilds()).at(-1)!;
    const prov = cached.provenance as { steps_run?: number } | null;
    if (prov?.steps_run !== 0) throw new Error(`the cached rebuild ran ${prov?.steps_run} steps`);
    m.cached_before_record.push(Date.parse(cached.created_at) - t0);
    m.vessel_cached_server.push(cached.duration_ms ?? NaN);
    m.vessel_cached_steps.push(cached.steps.reduce((a, s) => a + (s.duration_ms ?? 0), 0));
    m.cached_after_ready.push(t1 - Date.parse(cached.completed_at ?? ''));
    m.cached_same_image.push(cached.image_digest === cold.image_digest);
    if (!buildahFirst) m.buildah.push(await timedBud(buildah, ctx, `p13-${r}`));
    m.buildah_layers.push(await timedBud(buildah, ctx, `p13-layers-${r}`, true));
    // The CLI's fixed cost: a process that starts, connects and makes one request.
    m.cli_floor.push(
      await timedProcess(process.execPath, [MAIN_JS, '--data-dir', dataDir, 'builds', 'ls']),
    );
  }
  report(
    runs,
    m,
    await stealPct(cpu),
    await fs.access('/dev/kvm').then(
      () => true,
      () => false,
    ),
  );
}

type Samples = ReturnType<typeof newSamples>;

function report(runs: number, m: Samples, steal: number | null, kvm: boolean): void {
  const med = (v: readonly number[]): number => round(median(v), 0);
  const cold = med(m.vessel_cold);
  const cached = med(m.vessel_cached);
  const coldRatio = round(cold / med(m.buildah), 3);
  const cachedRatio = round(cached / cold, 3);
  const stepRows = m.steps.map((s) => ({ step: s.text, median_ms: med(s.ms) }));
  const { steps: _steps, cached_same_image: sameImage, ...raw } = m;
  const result = {
    id: 'P13',
    what: 'vessel build (2 COPY, 3 RUN in builder microVMs, --no-cache) vs buildah bud of the same context; a fully cached vessel build vs the cold one',
    runs,
    median_ms: Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, med(v)])),
    ratio_cold_buildah: coldRatio,
    ratio_cold_buildah_layers: round(cold / med(m.buildah_layers), 3),
    ratio_cached_cold: cachedRatio,
    goals: {
      cold: `vessel cold <= ${COLD_GOAL} × buildah bud`,
      cached: `vessel cached <= ${CACHED_GOAL} × vessel cold`,
    },
    goal_met: { cold: coldRatio <= COLD_GOAL, cached: cachedRatio <= CACHED_GOAL },
    cached_rebuild_same_image: sameImage.every(Boolean),
    vessel_cold_steps: stepRows,
    host: { cpus: os.cpus().length, kvm, steal_pct: steal, loadavg_1m: round(os.loadavg()[0]!) },
    raw_ms: raw,
    notes: [
      'vessel_cold, vessel_cached: whole `vessel build -q` CLI processes (node start, context upload, build, image commit and disk conversion, the end of the event stream)',
      'vessel_*_server: the build records’ own durations (started to completed); vessel_cached_steps: the sum of the cached build’s step durations (cache look-ups, COPY sources hashed); the rest of the server time is exporting the image',
      'cached_before_record: CLI start to the build record’s created_at; cached_after_ready: completed_at to CLI exit',
      'cli_floor: `vessel builds ls` (node start, connect, one request)',
      'cached_rebuild_same_image: whether the fully cached rebuild produced the cold build’s image digest',
      'buildah: `buildah bud --no-cache --isolation chroot --storage-driver vfs`, default (one layer for all steps); buildah_layers: the same with --layers',
      'vessel_cold_steps: duration_ms of each step in the cold builds’ records (FROM: resolving the base image)',
    ],
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);
  const met = (ok: boolean): string => (ok ? 'met' : 'MISSED');
  process.stdout.write(
    table([
      ['P13', 'median ms', 'ratio', 'goal'],
      ['vessel build, cold', String(cold), '', ''],
      [
        'buildah bud',
        String(med(m.buildah)),
        String(coldRatio),
        `≤ ${COLD_GOAL}: ${met(result.goal_met.cold)}`,
      ],
      [
        'buildah bud --layers',
        String(med(m.buildah_layers)),
        String(result.ratio_cold_buildah_layers),
        '',
      ],
      [
        'vessel build, cached',
        String(cached),
        String(cachedRatio),
        `≤ ${CACHED_GOAL}: ${met(result.goal_met.cached)}`,
      ],
    ]),
  );
  process.stdout.write('\nwhere the cold vessel build goes (median ms per step):\n');
  process.stdout.write(table(stepRows.map((s) => [String(s.median_ms).padStart(7), s.step])));
  process.stdout.write(
    `\nwhere the cached rebuild goes: ${med(m.cached_before_record)} ms CLI start + context upload ` +
      `(the CLI floor alone: ${med(m.cli_floor)} ms), ${med(m.vessel_cached_server)} ms in the daemon ` +
      `(${med(m.vessel_cached_steps)} ms of steps, the rest exporting the image), ` +
      `${med(m.cached_after_ready)} ms to the CLI's exit; same image as the cold build: ` +
      `${result.cached_rebuild_same_image ? 'yes' : 'no'}\n`,
  );
}

async function timedBud(
  buildah: BuildahStore,
  ctx: string,
  tag: string,
  layers = false,
): Promise<number> {
  const t0 = performance.now();
  await buildah.bud(ctx, `localhost/${tag}:1`, { noCache: true, layers });
  return performance.now() - t0;
}

const res: BenchResources = {};
await runBench(
  'p13-build',
  () => main(res),
  () => releaseResources(res),
);
