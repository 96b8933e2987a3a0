// P1 (PRODUCT.md §5): create → Running through a real InstanceManager, against
// bare QEMU started by hand with the same kernel, initramfs and disks, timed to
// the same marker (`VESSEL-MARKER agent-ready`), in the same run.
//
//   npm run bench:p1                    # builds, then 5 runs of each side
//   node dist/bench/p1-boot.js --runs 2
//
// Prints a JSON object first, then a table. Exits 0 even when the goal is missed.
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, createReadStream, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { guestBinaryPath } from '../src/core/assets.js';
import { createLogger } from '../src/core/logger.js';
import type { Image } from '../src/images/index.js';
import { InstanceManager, type Instance, type InstanceEvent } from '../src/instances/index.js';
import {
  buildGuestConfig,
  createOverlayDisk,
  writeConfigDisk,
} from '../src/instances/guest-config.js';
import { DEFAULT_KERNEL, buildInitramfs, ensureKernel, type Kernel } from '../src/kernels/index.js';
import { GUEST_KERNEL_ARGS, QemuHypervisor, type Accel } from '../src/vmm/index.js';
import { makeImageEnv, makeInstanceManager, type ImageEnv } from '../test/helpers/image-env.js';
import { busyboxImage, writeDockerArchive } from '../test/helpers/oci-builder.js';
import { BARE_KERNEL_ARGS, bareQemuArgv, bootBareQemu, type BareVm } from './lib/bare-qemu.js';
import { cacheDir } from './lib/bench-image.js';
import { cpuTimes, medianOf, parseRuns, round, stealPct, table, runBench } from './lib/measure.js';
import { TimingHypervisor } from './lib/timing-hypervisor.js';

const GOAL_RATIO = 1.05;
const BOOT_TIMEOUT_MS = 180_000;
const IMAGE_REF = 'bench/busybox:p1';
/** The guest's main command: keep running so the VM stays Running until it is deleted. */
const GUEST_CMD = ['/bin/sh', '-c', 'while true; do sleep 1; done'];
/** InstanceManager defaults (src/instances/manager.ts); the baseline uses the same. */
const VCPUS = 1;
const MEMORY_MIB = 512;
const OVERLAY_BYTES = 4 * 1024 ** 3;
interface BaselineRun {
  readonly steal_pct: number | null;
  /** spawn → `program-start` on the serial console. */
  readonly program_start_ms: number;
  /** spawn → `agent-ready` on the serial console (the total). */
  readonly agent_ready_ms: number;
}

/** Each field is ms since the `create()` call. */
interface VesselRun {
  readonly steal_pct: number | null;
  /** Resolve, reservation, overlay and config disks, initramfs lookup, until the VMM is spawned. */
  readonly vmm_spawn_ms: number;
  /** Hypervisor.start() resolved: QEMU up, QMP connected, console attached, `cont` sent. */
  readonly vmm_started_ms: number;
  readonly initializing_ms: number;
  readonly program_start_ms: number | null;
  readonly agent_ready_ms: number | null;
  /** State `Running` published (both markers and the agent's hello): the total. */
  readonly running_ms: number;
}

// ---------------------------------------------------------------- housekeeping

const tempDirs = new Set<string>();
const children = new Set<ChildProcess>();
let env: ImageEnv | undefined;
let instances: InstanceManager | undefined;

async function tempDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

async function removeDir(dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await gone;
  }
  children.delete(child);
}

async function cleanup(): Promise<void> {
  for (const child of [...children]) await killChild(child);
  if (instances) {
    for (const i of instances.list()) await instances.delete(i.id).catch(() => undefined);
    instances = undefined;
  }
  await env?.close();
  env = undefined;
  for (const dir of [...tempDirs]) await removeDir(dir);
}

function hostKhz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return Math.round(Number(m?.[1] ?? '2000') * 1000);
}

function parseArgs(argv: string[]): { runs: number; accel: Accel } {
  let accel: Accel = 'tcg';
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--accel' || arg.startsWith('--accel=')) {
      const value = arg === '--accel' ? argv[++i] : arg.slice('--accel='.length);
      if (value !== 'tcg' && value !== 'kvm') throw new Error('--accel must be tcg or kvm');
      accel = value;
    } else {
      rest.push(arg);
    }
  }
  const usage = 'usage: node dist/bench/p1-boot.js [--runs N] [--accel tcg|kvm]';
  return { runs: parseRuns(rest, 5, usage), accel };
}

// ---------------------------------------------------------------- setup

/**
 * The default kernel in `dataDir`: copied from the bench cache when a previous
 * run left it there, else pulled (apt) and then cached.
 */
async function prepareKernel(dataDir: string): Promise<{ kernel: Kernel; note: string }> {
  const cached = path.join(await cacheDir(), 'kernels');
  const target = path.join(dataDir, 'kernels');
  try {
    await fs.access(path.join(cached, DEFAULT_KERNEL));
    await fs.cp(cached, target, { recursive: true });
    return {
      kernel: await ensureKernel(DEFAULT_KERNEL, { dataDir }),
      note: `kernel from cache: ${cached}`,
    };
  } catch {
    const kernel = await ensureKernel(DEFAULT_KERNEL, { dataDir });
    await fs.rm(cached, { recursive: true, force: true });
    await fs.cp(path.join(target, DEFAULT_KERNEL), path.join(cached, DEFAULT_KERNEL), {
      recursive: true,
    });
    return { kernel, note: `kernel pulled with apt and cached in ${cached}` };
  }
}

// ---------------------------------------------------------------- Vessel side

/** Resolves with the time `Running` is published for `name`; rejects on Stopped or an error. */
function runningAt(
  im: InstanceManager,
  name: string,
  onInitializing: (at: number) => void,
): { done: Promise<number>; cancel: () => void } {
  let off = (): void => undefined;
  let timer: NodeJS.Timeout | undefined;
  const done = new Promise<number>((resolve, reject) => {
    const finish = (err: Error | undefined, at = 0): void => {
      off();
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(at);
    };
    off = im.subscribe((e: InstanceEvent) => {
      if (e.type !== 'state' || e.instance.name !== name) return;
      const at = performance.now();
      const i: Instance = e.instance;
      if (i.state === 'Initializing' && e.from !== 'Initializing') onInitializing(at);
      if (i.state === 'Running') finish(undefined, at);
      else if (i.state === 'Stopped' || i.state_error)
        finish(new Error(`instance ${name} is ${i.state}: ${i.state_error ?? 'no error'}`));
    });
    timer = setTimeout(
      () => finish(new Error(`instance ${name} not Running after ${BOOT_TIMEOUT_MS} ms`)),
      BOOT_TIMEOUT_MS,
    );
  });
  return {
    done,
    cancel: () => {
      off();
      clearTimeout(timer);
    },
  };
}

const errorText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

async function runVessel(
  serialLog: (id: string) => string,
  im: InstanceManager,
  hv: TimingHypervisor,
  image: string,
  name: string,
): Promise<VesselRun> {
  let initializingAt: number | undefined;
  const waiter = runningAt(im, name, (at) => (initializingAt ??= at));
  let id: string | undefined;
  try {
    const cpu = await cpuTimes();
    const t0 = performance.now();
    // No NIC: the baseline VM has none (the devices must match).
    id = (await im.create({ image, name, cmd: GUEST_CMD, network: { enabled: false } })).id;
    const running = await waiter.done;
    const steal = await stealPct(cpu);
    const t = hv.times.get(id);
    if (t?.spawnAt === undefined || t.startedAt === undefined || initializingAt === undefined)
      throw new Error(`instance ${name}: missing timing marks`);
    const since = (at: number | undefined): number | null =>
      at === undefined ? null : round(at - t0);
    return {
      steal_pct: steal,
      vmm_spawn_ms: round(t.spawnAt - t0),
      vmm_started_ms: round(t.startedAt - t0),
      initializing_ms: round(initializingAt - t0),
      program_start_ms: since(t.programStartAt),
      agent_ready_ms: since(t.agentReadyAt),
      running_ms: round(running - t0),
    };
  } catch (err) {
    const text = id === undefined ? '' : await fs.readFile(serialLog(id), 'utf8').catch(() => '');
    const tail = text.trim().split('\n').slice(-15).join('\n');
    throw new Error(`${errorText(err)}${tail ? `\nserial console tail:\n${tail}` : ''}`, {
      cause: err,
    });
  } finally {
    waiter.cancel();
    if (id !== undefined) await im.delete(id);
  }
}

// ---------------------------------------------------------------- baseline

interface BaselineInputs {
  readonly kernel: string;
  readonly initrd: string;
  readonly rootDisk: string;
  readonly image: Image;
  readonly accel: Accel;
  readonly tscKhz: number;
}

function bareVm(inp: BaselineInputs, dir: string): BareVm {
  return {
    kernel: inp.kernel,
    initrd: inp.initrd,
    rootDisk: inp.rootDisk,
    overlayDisk: path.join(dir, 'overlay.ext4'),
    configDisk: path.join(dir, 'config.disk'),
    controlSocket: path.join(dir, 'control.sock'),
    accel: inp.accel,
    tscKhz: inp.tscKhz,
    vcpus: VCPUS,
    memoryMiB: MEMORY_MIB,
  };
}

async function runBaseline(inp: BaselineInputs, name: string): Promise<BaselineRun> {
  const dir = await tempDir('vessel-p1-base-');
  let child: ChildProcess | undefined;
  try {
    const vm = bareVm(inp, dir);
    // Disk preparation (not timed) with Vessel's own functions: a fresh overlay, the config.
    await createOverlayDisk(vm.overlayDisk, OVERLAY_BYTES);
    await writeConfigDisk(
      vm.configDisk,
      buildGuestConfig({ image: inp.image, hostname: name, cmd: GUEST_CMD }),
    );
    const cpu = await cpuTimes();
    const t = await bootBareQemu(bareQemuArgv(vm), BOOT_TIMEOUT_MS, (c) => {
      child = c;
      children.add(c);
    });
    return {
      steal_pct: await stealPct(cpu),
      program_start_ms: round(t.programStartAt - t.spawnedAt),
      agent_ready_ms: round(t.agentReadyAt - t.spawnedAt),
    };
  } finally {
    if (child) await killChild(child);
    await removeDir(dir);
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const { runs, accel } = parseArgs(process.argv.slice(2));
  if (BARE_KERNEL_ARGS.join(' ') !== GUEST_KERNEL_ARGS.join(' ')) {
    throw new Error(
      `the baseline's kernel arguments differ from Vessel's GUEST_KERNEL_ARGS ` +
        `(${GUEST_KERNEL_ARGS.join(' ')}); update BARE_KERNEL_ARGS in bench/lib/bare-qemu.ts`,
    );
  }
  for (const tool of ['qemu-system-x86_64', 'mkfs.ext4', 'busybox']) {
    const found = (process.env.PATH ?? '')
      .split(':')
      .some((d) => d !== '' && readable(path.join(d, tool)));
    if (!found) throw new Error(`${tool} is not installed (needed by P1)`);
  }
  const guestBinary = guestBinaryPath();
  if (!readable(guestBinary))
    throw new Error(`the guest program is not built (${guestBinary}); run npm run build`);

  const notes: string[] = [];
  const dataDir = await tempDir('vessel-p1-data-');
  env = await makeImageEnv({}, dataDir);
  const { kernel, note } = await prepareKernel(dataDir);
  notes.push(note);
  const archive = path.join(dataDir, 'busybox.tar');
  await writeDockerArchive(archive, await busyboxImage(), IMAGE_REF);
  const image = await env.manager.waitForReady(
    (await env.manager.import(createReadStream(archive))).name,
  );
  const tscKhz = hostKhz();
  const hv = new TimingHypervisor(new QemuHypervisor());
  instances = makeInstanceManager(env, {
    hypervisor: hv,
    accel: () => Promise.resolve(accel),
    tscKhz,
    bootTimeoutMs: BOOT_TIMEOUT_MS,
    logger: createLogger({ level: 'warn' }),
  });
  await instances.init();
  const paths = env.paths;
  const serial = (id: string): string => paths.instanceFile(id, 'vmm/serial.log');
  const inputs: BaselineInputs = {
    kernel: kernel.vmlinuz,
    // The same cached initramfs file Vessel boots (built here once, like Vessel's first create).
    initrd: await buildInitramfs({ kernelDir: kernel.dir, guestBinary, dataDir }),
    rootDisk: env.paths.imageDisk(image.digest!.slice('sha256:'.length), image.format ?? 'erofs'),
    image,
    accel,
    tscKhz,
  };
  process.stderr.write(
    `p1: ${kernel.name}/${kernel.version}, image ${image.name} (${image.format}), accel ${accel}\n`,
  );

  // One untimed boot per side: page cache, initramfs cache and QEMU's binary warm for both.
  await runBaseline(inputs, 'p1-warmup-base');
  await runVessel(serial, instances, hv, image.name, 'p1-warmup');
  process.stderr.write('p1: warm-up boots done\n');

  const benchCpu = await cpuTimes();
  const baseline: BaselineRun[] = [];
  const vessel: VesselRun[] = [];
  let vesselArgv: string[] = [];
  for (let i = 0; i < runs; i++) {
    const order =
      i % 2 === 0 ? (['baseline', 'vessel'] as const) : (['vessel', 'baseline'] as const);
    for (const side of order) {
      if (side === 'baseline') {
        const r = await runBaseline(inputs, `p1-base-${i}`);
        baseline.push(r);
        process.stderr.write(
          `p1: run ${i + 1}/${runs} baseline ${r.agent_ready_ms} ms ` +
            `(program-start ${r.program_start_ms}); steal ${r.steal_pct ?? '?'}%\n`,
        );
      } else {
        const name = `p1-vessel-${i}`;
        const r = await runVessel(serial, instances, hv, image.name, name);
        vessel.push(r);
        vesselArgv = [...hv.times.values()].at(-1)?.argv ?? vesselArgv;
        process.stderr.write(
          `p1: run ${i + 1}/${runs} vessel ${r.running_ms} ms (vmm spawn ${r.vmm_spawn_ms}, ` +
            `started ${r.vmm_started_ms}, Initializing ${r.initializing_ms}, ` +
            `program-start ${r.program_start_ms ?? '?'}, agent-ready ${r.agent_ready_ms ?? '?'}); ` +
            `steal ${r.steal_pct ?? '?'}%\n`,
        );
      }
    }
  }

  if (vesselArgv.includes('-netdev') || vesselArgv.includes('-nic'))
    notes.push('Vessel VMs had a network device; the baseline VM has none');
  const baselineMs = medianOf(baseline, (r) => r.agent_ready_ms);
  const vesselMs = medianOf(vessel, (r) => r.running_ms);
  const ratio = round(vesselMs / baselineMs, 3);
  const steal = await stealPct(benchCpu);
  const v = {
    vmm_spawn_ms: medianOf(vessel, (r) => r.vmm_spawn_ms),
    vmm_started_ms: medianOf(vessel, (r) => r.vmm_started_ms),
    initializing_ms: medianOf(vessel, (r) => r.initializing_ms),
    program_start_ms: medianOf(vessel, (r) => r.program_start_ms),
    agent_ready_ms: medianOf(vessel, (r) => r.agent_ready_ms),
    running_ms: vesselMs,
  };
  // Per run: guest boot (VMM started → agent-ready) and what Vessel adds around it.
  const segments = {
    before_vmm_ms: v.vmm_spawn_ms,
    vmm_start_ms: medianOf(vessel, (r) => r.vmm_started_ms - r.vmm_spawn_ms),
    guest_boot_ms: medianOf(vessel, (r) =>
      r.agent_ready_ms === null ? null : r.agent_ready_ms - r.vmm_started_ms,
    ),
    agent_ready_to_running_ms: medianOf(vessel, (r) =>
      r.agent_ready_ms === null ? null : r.running_ms - r.agent_ready_ms,
    ),
  };
  const result = {
    benchmark: 'P1',
    date: new Date().toISOString(),
    host: {
      cpus: os.availableParallelism(),
      node: process.version,
      arch: process.arch,
      /** CPU time stolen by the hypervisor during the timed runs: high values mean noisy numbers. */
      steal_pct: steal,
    },
    runs,
    vm: {
      accel,
      kernel: `${kernel.name}/${kernel.version}`,
      image: image.name,
      image_format: image.format,
      vcpus: VCPUS,
      memory_mib: MEMORY_MIB,
      overlay_bytes: OVERLAY_BYTES,
      cmd: GUEST_CMD,
    },
    baseline: {
      /** QEMU spawn → agent-ready marker on its serial console. */
      total_ms: baselineMs,
      program_start_ms: medianOf(baseline, (r) => r.program_start_ms),
    },
    vessel: { total_ms: vesselMs, ...v, segments },
    ratio,
    goals: { ratio: { goal: GOAL_RATIO, met: ratio <= GOAL_RATIO } },
    argv: { vessel: vesselArgv, baseline: bareQemuArgv(bareVm(inputs, '<dir>')) },
    raw: { baseline, vessel },
    notes,
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);

  const ok = (met: boolean): string => (met ? 'met' : 'MISSED');
  process.stdout.write(
    table([
      ['P1 create → Running', `median of ${runs}`, 'goal'],
      [
        'vm',
        `${kernel.version}, ${image.name} (${image.format}), ${accel}, ${VCPUS} vCPU, ${MEMORY_MIB} MiB`,
        '',
      ],
      [
        'baseline',
        `${baselineMs} ms spawn → agent-ready (program-start at ${result.baseline.program_start_ms})`,
        '',
      ],
      [
        'vessel',
        `${vesselMs} ms create → Running (VMM spawned at ${v.vmm_spawn_ms}, started ${v.vmm_started_ms}, ` +
          `Initializing ${v.initializing_ms}, program-start ${v.program_start_ms}, agent-ready ${v.agent_ready_ms})`,
        '',
      ],
      [
        'vessel segments',
        `before VMM ${segments.before_vmm_ms} + VMM start ${segments.vmm_start_ms} + guest boot ` +
          `${segments.guest_boot_ms} + agent-ready → Running ${segments.agent_ready_to_running_ms} ms`,
        '',
      ],
      ['ratio vessel/baseline', `${ratio}`, `<= ${GOAL_RATIO} ${ok(result.goals.ratio.met)}`],
      ['cpu steal', `${steal ?? '?'}% of CPU time stolen by the hypervisor during the runs`, ''],
    ]),
  );
}

function readable(file: string): boolean {
  try {
    accessSync(file, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

await runBench('p1', main, cleanup);
