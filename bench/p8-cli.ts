// P8: what a CLI command costs before it does anything. `vessel ps` against a running
// daemon (a real `vessel daemon` process on a fresh data dir), and `vessel --version`,
// each a new `node bin/vessel.js` process, against a bare `node -e 0` in the same run,
// alternating. Goal: ps ≤ 2.5× the bare node start (median of the runs).
//
//   npm run bench:p8                    # builds, then 10 runs of each
//   node dist/bench/p8-cli.js --runs 20
//
// Prints a JSON object first, then a table. Exits 0 even when the goal is missed.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { startDaemon, type SpawnedDaemon } from '../test/helpers/vm-daemon.js';
import { cpuTimes, median, parseRuns, round, runBench, stealPct, table } from './lib/measure.js';

const GOAL_RATIO = 2.5;
const WARMUP = 2;
const RSS_RUNS = 3;
const TIME = '/usr/bin/time';
const BIN = fileURLToPath(new URL('../../bin/vessel.js', import.meta.url));
const USAGE = 'usage: node dist/bench/p8-cli.js [--runs N]   (N runs of each command, default 10)';

interface Stats {
  readonly median_ms: number;
  readonly min_ms: number;
  readonly max_ms: number;
}

const stats = (v: readonly number[]): Stats => ({
  median_ms: round(median(v), 1),
  min_ms: round(Math.min(...v), 1),
  max_ms: round(Math.max(...v), 1),
});

/** The environment of every timed process: no TCP daemon, nothing that changes Node's start. */
function childEnv(): NodeJS.ProcessEnv {
  const {
    VESSEL_HOST: _h,
    VESSEL_TOKEN: _t,
    NODE_OPTIONS: _o,
    NODE_DEBUG: _d,
    ...env
  } = process.env;
  return env;
}

/** Run `file args` to completion (stdout discarded); resolves with the wall time in ms. */
function timed(file: string, args: readonly string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'], env: childEnv() });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const ms = performance.now() - t0;
      if (code === 0) resolve(ms);
      else reject(new Error(`${[file, ...args].join(' ')} exited ${code}: ${stderr.trim()}`));
    });
  });
}

/** Peak RSS in MiB (GNU time's %M), median of a few untimed runs; null without GNU time. */
async function peakRss(args: readonly string[], dir: string): Promise<number | null> {
  try {
    await fs.access(TIME);
  } catch {
    return null;
  }
  const out = path.join(dir, 'time.out');
  const kib: number[] = [];
  for (let i = 0; i < RSS_RUNS; i++) {
    await timed(TIME, ['-f', '%M', '-o', out, process.execPath, ...args]);
    kib.push(Number((await fs.readFile(out, 'utf8')).trim().split('\n').pop()));
  }
  return round(median(kib) / 1024, 1);
}

let dataDir: string | undefined;
let daemon: SpawnedDaemon | undefined;

async function main(): Promise<void> {
  const runs = parseRuns(process.argv.slice(2), 10, USAGE);
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-p8-'));
  // No DNS listener: its fixed port may be taken by another daemon on this host.
  await fs.writeFile(path.join(dataDir, 'config.json'), '{"dns":{"enabled":false}}\n');
  daemon = await startDaemon(dataDir);
  const instances = (await daemon.client.listInstances()).length;

  const commands = {
    node: ['-e', '0'],
    ps: [BIN, '--data-dir', dataDir, 'ps'],
    version: [BIN, '--version'],
  } as const;
  type Name = keyof typeof commands;
  const once = (name: Name): Promise<number> => timed(process.execPath, commands[name]);

  for (let i = 0; i < WARMUP; i++) {
    for (const name of ['node', 'ps', 'version'] as const) await once(name);
  }
  // Each round: a (ps, node) pair, then a (--version, node) pair; which side of a pair goes
  // first alternates. Ratios are taken pair by pair, so a drift of the machine's speed during
  // the run cancels out; the goal is the median of the ps/node pair ratios.
  const rounds: Round[] = [];
  const cpu = await cpuTimes();
  for (let i = 0; i < runs; i++) {
    const pair = async (name: Name): Promise<[number, number]> => {
      if (i % 2 === 0) return [await once(name), await once('node')];
      const node = await once('node');
      return [await once(name), node];
    };
    const [ps, nodePs] = await pair('ps');
    const [version, nodeVersion] = await pair('version');
    rounds.push({ ps, node_ps: nodePs, version, node_version: nodeVersion });
  }
  const steal = await stealPct(cpu);
  const rss = {
    node: await peakRss(commands.node, dataDir),
    ps: await peakRss(commands.ps, dataDir),
    version: await peakRss(commands.version, dataDir),
  };
  report(rounds, rss, steal, instances);
}

interface Round {
  readonly ps: number;
  readonly node_ps: number;
  readonly version: number;
  readonly node_version: number;
}

function report(
  rounds: readonly Round[],
  rss: Record<'node' | 'ps' | 'version', number | null>,
  steal: number | null,
  instances: number,
): void {
  const s = {
    node: stats(rounds.flatMap((r) => [r.node_ps, r.node_version])),
    ps: stats(rounds.map((r) => r.ps)),
    version: stats(rounds.map((r) => r.version)),
  };
  const psRatios = rounds.map((r) => round(r.ps / r.node_ps, 3));
  const versionRatios = rounds.map((r) => round(r.version / r.node_version, 3));
  const ratio = round(median(psRatios), 2);
  const ratioVersion = round(median(versionRatios), 2);
  const result = {
    id: 'P8',
    what: '`vessel ps` (a new CLI process against a running daemon) vs a bare `node -e 0`',
    runs: rounds.length,
    node: s.node,
    ps: s.ps,
    version: s.version,
    ratio_ps: ratio,
    ratio_ps_min_max: [Math.min(...psRatios), Math.max(...psRatios)],
    ratio_version: ratioVersion,
    goal: `ps <= ${GOAL_RATIO}x node (median of the pair ratios)`,
    goal_met: ratio <= GOAL_RATIO,
    peak_rss_mib: rss,
    host: { cpus: os.cpus().length, node: process.version, steal_pct: steal },
    raw: rounds.map((r) => ({
      ps: round(r.ps, 1),
      node_ps: round(r.node_ps, 1),
      version: round(r.version, 1),
      node_version: round(r.node_version, 1),
    })),
    notes: [
      `wall time from spawn() to exit of \`${path.basename(process.execPath)} bin/vessel.js …\`; stdout to /dev/null`,
      `the daemon is a real \`vessel daemon\` process (DNS off) with ${instances} instances: ps makes two requests (health, list)`,
      `${WARMUP} warm-up rounds; peak RSS: GNU time %M, median of ${RSS_RUNS} separate runs`,
    ],
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);
  const mib = (v: number | null): string => (v === null ? '-' : String(v));
  const row = (name: string, st: Stats, mem: number | null, r: string): string[] => [
    name,
    String(st.median_ms),
    String(st.min_ms),
    String(st.max_ms),
    mib(mem),
    r,
  ];
  process.stdout.write(
    table([
      ['P8', 'median ms', 'min ms', 'max ms', 'peak RSS MiB', 'ratio to node (pairs)'],
      row('node -e 0', s.node, rss.node, '1'),
      row('vessel --version', s.version, rss.version, String(ratioVersion)),
      row('vessel ps', s.ps, rss.ps, String(ratio)),
      [
        'goal',
        `ps ≤ ${GOAL_RATIO}× node`,
        result.goal_met ? 'met' : 'MISSED',
        `steal ${steal ?? '?'} %`,
      ],
    ]),
  );
}

await runBench('p8-cli', main, async () => {
  await daemon?.stop();
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
});
