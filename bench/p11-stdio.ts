// P11 (issue 18): stdout throughput of `vessel exec box cat` of a 100 MB file, against ssh
// (dropbear in the guest, dbclient on the host, as in P2) `cat` of the same file in the same
// VM, alternating, in the same run. Goal: Vessel's MB/s ≥ 1× ssh's.
//
//   npm run bench:stdio                 # builds, then 5 runs of each side
//   node dist/bench/p11-stdio.js --runs 3
//
// The VM gets an address, so everything runs in a network namespace the bench creates and
// deletes (`runInNetns` in lib/ssh-guest.ts). Each run is a whole command, timed from
// spawn() until its process exited and its stdout closed; the bench counts the bytes from
// the pipe. Prints a JSON object first, then a table. Exits 0 even when the goal is missed.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { startDaemon } from '../test/helpers/vm-daemon.js';
import { cpuTimes, median, parseRuns, round, stealPct, table } from './lib/measure.js';
import {
  diffByKey,
  memoryOf,
  processCpuMs,
  reapedChildrenCpuMs,
  threadCpuMs,
  type Memory,
} from './lib/proc.js';
import { runInNetns, startSshGuest, type SshGuest } from './lib/ssh-guest.js';

const FILE_BYTES = 100_000_000;
const GUEST_FILE = '/tmp/big';
const GOAL_RATIO = 1;
const SSH_HOST_PORT = 2222;
const RUN_TIMEOUT_MS = 600_000;
const RSS_SAMPLE_MS = 100;
const IDLE_MS = 5_000;
const INNER_ENV = 'VESSEL_P11_DATA_DIR';
const VESSEL_BIN = fileURLToPath(new URL('../../bin/vessel.js', import.meta.url));
const USAGE = 'usage: node dist/bench/p11-stdio.js [--runs N]   (N transfers per side, default 5)';

type Side = 'vessel' | 'ssh';

interface Transfer {
  readonly ms: number;
  readonly bytes: number;
  readonly sha256: string | null;
}

/** Runs a command with stdout counted (and hashed when asked); rejects on a non-zero exit. */
function transfer(
  file: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  hash: boolean,
): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    const digest = hash ? createHash('sha256') : null;
    let bytes = 0;
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
      digest?.update(d);
    });
    child.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (code, sig) => {
      const ms = performance.now() - t0;
      clearTimeout(timer);
      if (code !== 0) {
        const how = sig ? `signal ${sig}` : `exit ${code}`;
        reject(new Error(`${file} ${args.join(' ')}: ${how}: ${stderr.trim()}`));
      } else {
        resolve({ ms, bytes, sha256: digest ? digest.digest('hex') : null });
      }
    });
  });
}

interface Sample {
  readonly side: Side;
  readonly ms: number;
  readonly mb_per_s: number;
  /** CPU time during the run: the command's process (CLI or dbclient), the daemon, QEMU. */
  readonly cpu_ms: {
    readonly client: number;
    readonly daemon: number;
    readonly vmm: number;
    readonly bench: number;
  };
  /** QEMU's CPU time during the run per thread (`main` is its I/O loop), threads that ran. */
  readonly vmm_threads_ms: Record<string, number>;
}

interface Pids {
  readonly daemon: number;
  readonly vmm: number;
}

/** One timed transfer of the whole file, with the CPU each process spent meanwhile. */
async function measure(
  side: Side,
  pids: Pids,
  command: { file: string; args: readonly string[]; env: NodeJS.ProcessEnv },
  hash = false,
): Promise<Sample & { sha256: string | null }> {
  const daemon0 = (await processCpuMs(pids.daemon)) ?? 0;
  const vmm0 = await threadCpuMs(pids.vmm);
  const children0 = await reapedChildrenCpuMs();
  const bench0 = process.cpuUsage();
  const t = await transfer(command.file, command.args, command.env, hash);
  const bench = process.cpuUsage(bench0);
  const vmmThreads = diffByKey(vmm0, await threadCpuMs(pids.vmm));
  if (t.bytes !== FILE_BYTES)
    throw new Error(`${side}: got ${t.bytes} bytes of ${GUEST_FILE}, expected ${FILE_BYTES}`);
  return {
    side,
    ms: round(t.ms, 1),
    mb_per_s: round(FILE_BYTES / 1e6 / (t.ms / 1000), 2),
    cpu_ms: {
      client: round((await reapedChildrenCpuMs()) - children0, 0),
      daemon: round(((await processCpuMs(pids.daemon)) ?? 0) - daemon0, 0),
      vmm: round(
        Object.values(vmmThreads).reduce((a, b) => a + b, 0),
        0,
      ),
      bench: round((bench.user + bench.system) / 1000, 0),
    },
    vmm_threads_ms: Object.fromEntries(
      Object.entries(vmmThreads)
        .filter(([, ms]) => ms > 0)
        .map(([k, ms]) => [k, round(ms, 0)]),
    ),
    sha256: t.sha256,
  };
}

/** Samples the daemon's VmRSS every RSS_SAMPLE_MS while `fn` runs; returns the peak seen. */
async function withRssPeak<T>(pid: number, fn: () => Promise<T>): Promise<[T, number]> {
  let peak = (await memoryOf(pid))?.rss_kib ?? 0;
  const timer = setInterval(() => {
    void memoryOf(pid).then((m) => {
      if (m && m.rss_kib > peak) peak = m.rss_kib;
    });
  }, RSS_SAMPLE_MS);
  try {
    const r = await fn();
    peak = Math.max(peak, (await memoryOf(pid))?.rss_kib ?? 0);
    return [r, peak];
  } finally {
    clearInterval(timer);
  }
}

function sideStats(samples: readonly Sample[]): Record<string, number> {
  const mbps = samples.map((s) => s.mb_per_s);
  const med = (f: (s: Sample) => number): number => round(median(samples.map(f)), 0);
  return {
    median_mb_per_s: round(median(mbps), 2),
    min_mb_per_s: Math.min(...mbps),
    max_mb_per_s: Math.max(...mbps),
    median_ms: round(median(samples.map((s) => s.ms)), 1),
    median_cpu_client_ms: med((s) => s.cpu_ms.client),
    median_cpu_daemon_ms: med((s) => s.cpu_ms.daemon),
    median_cpu_vmm_ms: med((s) => s.cpu_ms.vmm),
    median_cpu_bench_ms: med((s) => s.cpu_ms.bench),
  };
}

const mib = (kib: number | undefined): string =>
  kib === undefined ? '?' : `${round(kib / 1024, 1)} MiB`;

/** CPU ms per second that the daemon and QEMU spend while nothing is asked of them. */
async function idleCpu(pids: Pids): Promise<{ daemon: number; vmm: number }> {
  const d0 = (await processCpuMs(pids.daemon)) ?? 0;
  const q0 = (await processCpuMs(pids.vmm)) ?? 0;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, IDLE_MS));
  const s = (performance.now() - t0) / 1000;
  return {
    daemon: round((((await processCpuMs(pids.daemon)) ?? 0) - d0) / s, 1),
    vmm: round((((await processCpuMs(pids.vmm)) ?? 0) - q0) / s, 1),
  };
}

/** Makes the file in the guest and returns its sha256 (from the guest's busybox). */
async function makeGuestFile(
  daemon: Awaited<ReturnType<typeof startDaemon>>,
  id: string,
): Promise<string> {
  const made = await daemon.client.execInstance(id, {
    argv: ['/bin/sh', '-c', `head -c ${FILE_BYTES} /dev/urandom > ${GUEST_FILE} && sync`],
  });
  if (made.exit_code !== 0) throw new Error(`creating ${GUEST_FILE} failed: ${made.stderr}`);
  const sum = await daemon.client.execInstance(id, {
    argv: ['/bin/busybox', 'sha256sum', GUEST_FILE],
  });
  const hex = /^[0-9a-f]{64}/.exec(sum.stdout)?.[0];
  if (sum.exit_code !== 0 || !hex) throw new Error(`sha256sum in the guest failed: ${sum.stderr}`);
  return hex;
}

/** The inner run, inside the namespace. */
async function inner(dataDir: string): Promise<void> {
  const runs = parseRuns(process.argv.slice(2), 5, USAGE);
  const daemon = await startDaemon(dataDir);
  let guest: SshGuest | undefined;
  try {
    guest = await startSshGuest(daemon, { name: 'box', hostPort: SSH_HOST_PORT });
    if (guest.vmmPid === null) throw new Error('the instance has no VMM pid');
    const pids: Pids = { daemon: daemon.child.pid!, vmm: guest.vmmPid };
    const guestSha = await makeGuestFile(daemon, guest.instanceId);

    const vesselCmd = {
      file: process.execPath,
      args: [VESSEL_BIN, '--data-dir', dataDir, 'exec', 'box', 'cat', GUEST_FILE],
      env: process.env,
    };
    const sshCmd = {
      file: guest.dbclient,
      args: guest.dbclientArgs(['cat', GUEST_FILE]),
      env: guest.env,
    };

    // One untimed transfer per side that also checks the bytes themselves, not only the count.
    const rssStart = await memoryOf(pids.daemon);
    for (const [side, cmd] of [
      ['vessel', vesselCmd],
      ['ssh', sshCmd],
    ] as const) {
      const w = await measure(side, pids, cmd, true);
      if (w.sha256 !== guestSha)
        throw new Error(`${side}: sha256 ${w.sha256} differs from the guest's ${guestSha}`);
    }

    const idle = await idleCpu(pids);
    const cpu = await cpuTimes();
    const rssBefore = await memoryOf(pids.daemon);
    const samples: Sample[] = [];
    const rssAfterEach: number[] = [];
    let rssPeak = 0;
    for (let i = 0; i < runs; i++) {
      const [v, peak] = await withRssPeak(pids.daemon, () => measure('vessel', pids, vesselCmd));
      rssPeak = Math.max(rssPeak, peak);
      rssAfterEach.push((await memoryOf(pids.daemon))?.rss_kib ?? 0);
      samples.push(v);
      samples.push(await measure('ssh', pids, sshCmd));
    }
    const steal = await stealPct(cpu);
    const rssAfter = await memoryOf(pids.daemon);

    const strip = ({ sha256: _s, ...rest }: Sample & { sha256?: string | null }): Sample => rest;
    const vs = samples.filter((s) => s.side === 'vessel').map(strip);
    const ss = samples.filter((s) => s.side === 'ssh').map(strip);
    const vStats = sideStats(vs);
    const sStats = sideStats(ss);
    const ratio = round(vStats.median_mb_per_s! / sStats.median_mb_per_s!, 3);
    const pairRatios = vs.map((v, i) => round(v.mb_per_s / ss[i]!.mb_per_s, 3));
    const rss = (m: Memory | null): number | undefined => m?.rss_kib;
    const result = {
      id: 'P11',
      what: `stdout throughput: \`vessel exec box cat\` vs ssh (dropbear) \`cat\` of the same ${FILE_BYTES}-byte file in the same VM`,
      runs,
      file_bytes: FILE_BYTES,
      mb: '10^6 bytes',
      vessel: vStats,
      ssh: sStats,
      ratio_median: ratio,
      ratio_pairs: pairRatios,
      goal: `>= ${GOAL_RATIO}`,
      goal_met: ratio >= GOAL_RATIO,
      daemon_rss_kib: {
        before_warmup: rss(rssStart),
        before: rss(rssBefore),
        after: rss(rssAfter),
        peak_during_vessel_runs: rssPeak,
        after_each_vessel_run: rssAfterEach,
        hwm_since_start: rssAfter?.hwm_kib,
      },
      idle_cpu_ms_per_s: idle,
      host: {
        cpus: os.cpus().length,
        accel: guest.accel,
        steal_pct: steal,
        loadavg_1m: round(os.loadavg()[0]!, 2),
      },
      commands: {
        vessel: [vesselCmd.file, ...vesselCmd.args],
        ssh: [sshCmd.file, ...sshCmd.args],
      },
      raw: { vessel: vs, ssh: ss },
      notes: [
        'each run: one new process, timed from spawn() until it exited and its stdout closed; the bench counts stdout bytes from a pipe and requires exactly file_bytes',
        'one untimed transfer per side first also compares the sha256 of the bytes with the guest’s sha256sum',
        'cpu_ms.client: the command’s process (vessel CLI or dbclient); daemon and vmm: /proc/<pid>/stat growth during the run; bench: this process (reading the pipe)',
        `idle_cpu_ms_per_s: daemon and QEMU CPU per second over ${IDLE_MS} ms with no request, before the timed runs`,
        `order: vessel, ssh, vessel, ssh, …; daemon RSS sampled every ${RSS_SAMPLE_MS} ms during the vessel runs`,
      ],
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);
    const row = (name: string, s: Record<string, number>): string[] => [
      name,
      String(s.median_mb_per_s),
      String(s.min_mb_per_s),
      String(s.max_mb_per_s),
      String(s.median_ms),
      `${s.median_cpu_client_ms} / ${s.median_cpu_daemon_ms} / ${s.median_cpu_vmm_ms}`,
    ];
    process.stdout.write(
      table([
        ['P11', 'median MB/s', 'min MB/s', 'max MB/s', 'median ms', 'CPU ms client/daemon/QEMU'],
        row('vessel exec cat', vStats),
        row('ssh cat (dropbear)', sStats),
        [
          'ratio vessel/ssh',
          String(ratio),
          `goal ${result.goal}`,
          result.goal_met ? 'met' : 'MISSED',
        ],
        [
          'daemon RSS',
          `before ${mib(rss(rssBefore))}`,
          `after ${mib(rss(rssAfter))}`,
          `peak ${mib(rssPeak)}`,
        ],
      ]),
    );
    await daemon.client.deleteInstance(guest.instanceId);
  } finally {
    await daemon.stop();
    await guest?.cleanup();
  }
}

const innerDir = process.env[INNER_ENV];
await (
  innerDir
    ? inner(innerDir)
    : (async () => {
        parseRuns(process.argv.slice(2), 5, USAGE); // validate before any setup
        return runInNetns({
          script: import.meta.url,
          innerEnv: INNER_ENV,
          tools: ['dropbear', 'dbclient', 'dropbearkey', 'qemu-system-x86_64'],
          prefix: 'vessel-p11-',
        });
      })()
).catch((err: unknown) => {
  process.stderr.write(`p11-stdio: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
