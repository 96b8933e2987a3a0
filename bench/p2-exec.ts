// P2 (PRODUCT.md §5): the round trip of `exec true` through Vessel (the daemon's
// non-interactive `POST /instances/{id}/exec`, through the typed client over the unix
// socket) against ssh into the same VM (dropbear in the guest, dbclient on the host, a
// published port), alternating, in the same run.
//
//   npm run bench:p2                    # builds, then 30 round trips of each
//   node dist/bench/p2-exec.js --runs 10
//
// The VM gets an address, so everything runs in a network namespace the bench creates
// (`vessel-test-<random>`, only `lo`) and deletes (`runInNetns` in lib/ssh-guest.ts): this
// process seeds the kernel (apt, in the host namespace), creates the namespace and runs itself
// again inside it; that inner run starts the daemon, builds the image (`startSshGuest`),
// measures and prints. Prints a JSON object first, then a table. Exits 0 even when the goal
// is missed.
import { spawn } from 'node:child_process';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { startDaemon } from '../test/helpers/vm-daemon.js';
import { cpuTimes, parseRuns, round, stealPct, table } from './lib/measure.js';
import { runInNetns, startSshGuest, type SshGuest } from './lib/ssh-guest.js';

const GOAL_RATIO = 0.2;
const WARMUP = 3;
const SSH_HOST_PORT = 2222;
const INNER_ENV = 'VESSEL_P2_DATA_DIR';
const USAGE = 'usage: node dist/bench/p2-exec.js [--runs N]   (N round trips per side, default 30)';

interface Stats {
  readonly median_ms: number;
  readonly p90_ms: number;
  readonly min_ms: number;
  readonly max_ms: number;
}

/** Nearest-rank percentile. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[
    Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  ]!;
}

function stats(values: readonly number[]): Stats {
  return {
    median_ms: round(percentile(values, 50), 2),
    p90_ms: round(percentile(values, 90), 2),
    min_ms: round(Math.min(...values), 2),
    max_ms: round(Math.max(...values), 2),
  };
}

/** The inner run, inside the namespace. */
async function inner(dataDir: string): Promise<void> {
  const runs = parseRuns(process.argv.slice(2), 30, USAGE);
  const daemon = await startDaemon(dataDir);
  let guest: SshGuest | undefined;
  try {
    guest = await startSshGuest(daemon, { name: 'p2', hostPort: SSH_HOST_PORT });
    const { instanceId, dbclient, env } = guest;
    const sshArgs = guest.dbclientArgs(['true']);
    const ssh = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const t0 = performance.now();
        const child = spawn(dbclient, sshArgs, { stdio: 'ignore', env });
        child.once('error', reject);
        child.once('exit', (code) =>
          code === 0
            ? resolve(performance.now() - t0)
            : reject(new Error(`dbclient exited ${code}`)),
        );
      });
    const vessel = async (): Promise<number> => {
      const t0 = performance.now();
      const r = await daemon.client.execInstance(instanceId, { argv: ['true'] });
      const ms = performance.now() - t0;
      if (r.exit_code !== 0) throw new Error(`exec true exited ${r.exit_code}`);
      return ms;
    };
    for (let i = 0; i < WARMUP; i++) {
      await vessel();
      await ssh();
    }

    const cpu = await cpuTimes();
    const v: number[] = [];
    const s: number[] = [];
    for (let i = 0; i < runs; i++) {
      // Alternate which side goes first.
      if (i % 2 === 0) {
        v.push(await vessel());
        s.push(await ssh());
      } else {
        s.push(await ssh());
        v.push(await vessel());
      }
    }
    const steal = await stealPct(cpu);
    const vs = stats(v);
    const ss = stats(s);
    const ratio = round(vs.median_ms / ss.median_ms, 3);
    const result = {
      id: 'P2',
      what: 'exec `true` round trip: Vessel API exec vs ssh (dropbear) into the same VM',
      runs,
      vessel: vs,
      ssh: ss,
      ratio_median: ratio,
      ratio_p90: round(vs.p90_ms / ss.p90_ms, 3),
      goal: `<= ${GOAL_RATIO}`,
      goal_met: ratio <= GOAL_RATIO,
      host: { cpus: os.cpus().length, accel: guest.accel, steal_pct: steal },
      raw: { vessel_ms: v.map((x) => round(x, 2)), ssh_ms: s.map((x) => round(x, 2)) },
      notes: [
        'Vessel: client.execInstance() (POST /instances/{id}/exec over the unix socket, keep-alive) until the JSON result arrives',
        'ssh: a new dbclient process per round trip (connect, key exchange, ed25519 auth, exec, exit) to a published guest port',
        `${WARMUP} warm-up round trips per side are not counted`,
      ],
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);
    process.stdout.write(
      table([
        ['P2', 'median ms', 'p90 ms', 'min ms', 'max ms'],
        ['vessel exec', ...Object.values(vs).map(String)],
        ['ssh (dropbear)', ...Object.values(ss).map(String)],
        [
          'ratio vessel/ssh',
          String(ratio),
          String(result.ratio_p90),
          `goal ${result.goal}`,
          result.goal_met ? 'met' : 'MISSED',
        ],
      ]),
    );
    await daemon.client.deleteInstance(instanceId);
  } finally {
    await daemon.stop();
    await guest?.cleanup();
  }
}

/** The outer run: the namespace, and this script again inside it (lib/ssh-guest.ts). */
async function outer(): Promise<void> {
  parseRuns(process.argv.slice(2), 30, USAGE); // validate before any setup
  return runInNetns({
    script: import.meta.url,
    innerEnv: INNER_ENV,
    tools: ['dropbear', 'dbclient', 'dropbearkey', 'qemu-system-x86_64'],
    prefix: 'vessel-p2-',
  });
}

const innerDir = process.env[INNER_ENV];
await (innerDir ? inner(innerDir) : outer()).catch((err: unknown) => {
  process.stderr.write(`p2-exec: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
