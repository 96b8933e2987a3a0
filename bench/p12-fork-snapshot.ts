// P12 (issue 10): fork from a memory snapshot → Running, against a cold create → Running
// of the same image, shape and command, measured in the same run through a real
// InstanceManager with real QEMU microVMs. Goal: ≤ 0.2×.
//
//   npm run build && node dist/bench/p12-fork-snapshot.js --runs 5 [--accel tcg|kvm] [--compress zstd|lz4]
//
// Prints a JSON object first, then a table. Exits 0 even when the goal is missed.
import { createReadStream, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { guestBinaryPath } from '../src/core/assets.js';
import { createLogger } from '../src/core/logger.js';
import type { InstanceManager } from '../src/instances/index.js';
import { DEFAULT_KERNEL, ensureKernel } from '../src/kernels/index.js';
import { SnapshotsRepo } from '../src/store/index.js';
import type { Accel } from '../src/vmm/index.js';
import { makeImageEnv, makeInstanceManager, type ImageEnv } from '../test/helpers/image-env.js';
import { busyboxImage, writeDockerArchive } from '../test/helpers/oci-builder.js';
import { seedKernel } from '../test/helpers/vm-daemon.js';
import { cpuTimes, median, round, stealPct, table, runBench } from './lib/measure.js';

const GOAL_RATIO = 0.2;
const BOOT_TIMEOUT_MS = 180_000;
const VCPUS = 1;
const MEMORY_MIB = 256;
const IMAGE_REF = 'bench/busybox:p12';
const GUEST_CMD = ['/bin/sh', '-c', 'while :; do sleep 1; done'];
const USAGE = `usage: node dist/bench/p12-fork-snapshot.js [--runs N] [--accel tcg|kvm] [--compress zstd|lz4]
  --runs N        rounds: one cold create and one fork per round (default 5)
  --accel A       tcg (default) or kvm
  --compress ALG  also compress the snapshot (forks then decompress first)`;

interface Options {
  readonly runs: number;
  readonly accel: Accel;
  readonly compress: 'zstd' | 'lz4' | null;
}

let env: ImageEnv | undefined;
let im: InstanceManager | undefined;
let dataDir: string | undefined;

async function cleanup(): Promise<void> {
  if (im) {
    for (const i of im.list())
      await im.delete(i.id, { deleteSnapshots: true }).catch(() => undefined);
    for (const s of im.snapshots.list()) await im.snapshots.delete(s.id).catch(() => undefined);
    im = undefined;
  }
  await env?.close();
  env = undefined;
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
  dataDir = undefined;
}

function parseArgs(argv: string[]): Options {
  let runs = 5;
  let accel: Accel = 'tcg';
  let compress: 'zstd' | 'lz4' | null = null;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value\n${USAGE}`);
      return v;
    };
    if (arg === '--runs') {
      runs = Number(value());
      if (!Number.isInteger(runs) || runs < 1) throw new Error(`--runs needs a positive integer`);
    } else if (arg === '--accel') {
      const a = value();
      if (a !== 'tcg' && a !== 'kvm') throw new Error(`--accel is tcg or kvm\n${USAGE}`);
      accel = a;
    } else if (arg === '--compress') {
      const c = value();
      if (c !== 'zstd' && c !== 'lz4') throw new Error(`--compress is zstd or lz4\n${USAGE}`);
      compress = c;
    } else {
      throw new Error(`unknown argument ${arg}\n${USAGE}`);
    }
  }
  return { runs, accel, compress };
}

function hostKhz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return Math.round(Number(m?.[1] ?? '2000') * 1000);
}

/** Resolve once `id` is Running; fail fast when it stops or reports an error. */
async function running(m: InstanceManager, id: string): Promise<void> {
  let off = (): void => undefined;
  const failed = new Promise<never>((_, reject) => {
    off = m.subscribe((e) => {
      if (e.type !== 'state' || e.id !== id) return;
      if (e.instance.state === 'Stopped' || e.instance.state_error)
        reject(new Error(`${id} is ${e.instance.state}: ${e.instance.state_error ?? 'no error'}`));
    });
  });
  try {
    const wait = m.waitForState(id, 'Running', BOOT_TIMEOUT_MS).then((w) => {
      if (w.timed_out) throw new Error(`${id} did not reach Running (is ${w.state})`);
    });
    await Promise.race([wait, failed]);
  } finally {
    off();
  }
}

async function coldCreate(m: InstanceManager, image: string, name: string): Promise<number> {
  const t0 = performance.now();
  const { id } = await m.create({
    image,
    name,
    cmd: GUEST_CMD,
    vcpus: VCPUS,
    memory_mib: MEMORY_MIB,
    network: { enabled: false },
  });
  await running(m, id);
  return performance.now() - t0;
}

/** The forked guest really runs: an exec answers. */
async function execOk(m: InstanceManager, id: string): Promise<boolean> {
  const s = await m.exec(id, { argv: ['true'] });
  s.stdout.resume();
  s.stderr.resume();
  return (await s.result).code === 0;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  await fs.access(guestBinaryPath()).catch(() => {
    throw new Error(`the guest program is not built (${guestBinaryPath()}); run npm run build`);
  });
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-bench-p12-'));
  await seedKernel(dataDir);
  env = await makeImageEnv({}, dataDir);
  const kernel = await ensureKernel(DEFAULT_KERNEL, { dataDir });
  const archive = path.join(dataDir, 'busybox.tar');
  await writeDockerArchive(archive, await busyboxImage(), IMAGE_REF);
  const image = await env.manager.waitForReady(
    (await env.manager.import(createReadStream(archive))).name,
  );
  const m = makeInstanceManager(env, {
    accel: () => Promise.resolve(opts.accel),
    tscKhz: hostKhz(),
    bootTimeoutMs: BOOT_TIMEOUT_MS,
    logger: createLogger({ level: 'warn' }),
    snapshots: new SnapshotsRepo(env.db),
  });
  im = m;
  await m.init();
  // Untimed: warm the initramfs cache and QEMU's binary, then the prepared source.
  const warm = await coldCreate(m, image.name, 'p12-warm');
  await m.delete('p12-warm');
  process.stderr.write(`p12: warm-up boot ${Math.round(warm)} ms\n`);
  await coldCreate(m, image.name, 'p12-src');
  const snap = await m.snapshots.create('p12-src', {
    kind: 'Standby',
    name: 'prepared',
    ...(opts.compress ? { compression: { enabled: true, algorithm: opts.compress } } : {}),
  });
  if (opts.compress) {
    const t0 = Date.now();
    while (m.snapshots.get(snap.id).compression_state !== 'compressed') {
      if (m.snapshots.get(snap.id).compression_state === 'error' || Date.now() - t0 > 120_000)
        throw new Error(`compression: ${JSON.stringify(m.snapshots.get(snap.id))}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await m.delete('p12-src'); // the snapshot outlives its source
  const sizes = m.snapshots.get(snap.id);

  const cpu = await cpuTimes();
  const raw: { cold_ms: number; fork_ms: number; fork_exec_ok: boolean }[] = [];
  for (let i = 0; i < opts.runs; i++) {
    // Alternate which side goes first, so neither always runs on a warmer host.
    const order = i % 2 === 0 ? (['cold', 'fork'] as const) : (['fork', 'cold'] as const);
    let cold = 0;
    let fork = 0;
    let ok = false;
    for (const side of order) {
      if (side === 'cold') {
        cold = await coldCreate(m, image.name, `p12-cold-${i}`);
        await m.delete(`p12-cold-${i}`);
      } else {
        const t0 = performance.now();
        const f = await m.snapshots.fork(snap.id, { name: `p12-fork-${i}` });
        fork = performance.now() - t0;
        if (f.state !== 'Running') throw new Error(`fork ${f.name} is ${f.state}`);
        ok = await execOk(m, f.id);
        await m.delete(f.id);
      }
    }
    raw.push({ cold_ms: round(cold), fork_ms: round(fork), fork_exec_ok: ok });
    process.stderr.write(
      `p12: ${i + 1}/${opts.runs}: cold ${round(cold)} ms, fork ${round(fork)} ms\n`,
    );
  }
  const steal = await stealPct(cpu);
  const cold = median(raw.map((r) => r.cold_ms));
  const fork = median(raw.map((r) => r.fork_ms));
  const ratio = round(fork / cold, 3);
  const result = {
    benchmark: 'P12',
    date: new Date().toISOString(),
    host: {
      cpus: os.availableParallelism(),
      node: process.version,
      arch: process.arch,
      steal_pct: steal,
    },
    params: { runs: opts.runs, compress: opts.compress },
    vm: {
      accel: opts.accel,
      kernel: `${kernel.name}/${kernel.version}`,
      image: image.name,
      vcpus: VCPUS,
      memory_mib: MEMORY_MIB,
      network: 'none',
      cmd: GUEST_CMD,
    },
    snapshot: {
      size_bytes: sizes.size_bytes,
      uncompressed_size_bytes: sizes.uncompressed_size_bytes,
      compressed_size_bytes: sizes.compressed_size_bytes,
    },
    cold_ms: round(cold),
    fork_ms: round(fork),
    fork_exec_ok: raw.every((r) => r.fork_exec_ok),
    ratio,
    goal: { ratio: GOAL_RATIO, met: ratio <= GOAL_RATIO },
    raw,
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);
  const mb = (b: number | null): string => (b === null ? '-' : `${(b / 1e6).toFixed(1)} MB`);
  process.stdout.write(
    table([
      ['P12', 'measured', 'goal'],
      ['cold create → Running', `${round(cold)} ms (median of ${opts.runs})`, ''],
      [
        'fork from memory snapshot → Running',
        `${round(fork)} ms (exec after fork ${result.fork_exec_ok ? 'ok' : 'FAILED'})`,
        '',
      ],
      ['ratio fork/cold', `${ratio}`, `<= ${GOAL_RATIO} ${ratio <= GOAL_RATIO ? 'met' : 'MISSED'}`],
      [
        'snapshot size',
        `${mb(sizes.size_bytes)} on disk (memory state ${mb(sizes.uncompressed_size_bytes)}${opts.compress ? `, ${opts.compress} ${mb(sizes.compressed_size_bytes)}` : ''})`,
        '',
      ],
      ['cpu steal', `${steal ?? '?'}% of CPU time stolen by the hypervisor`, ''],
    ]),
  );
}

void runBench('p12', main, cleanup);
