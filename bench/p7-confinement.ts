// P7 (PRODUCT.md §5) and the cost of confinement (issue 11), measured in one run:
//   - confinement: create → Running through a real daemon with confinement on, against a
//     second daemon with it off (VESSEL_CONFINEMENT=off), alternating A B A B. Goal ≤ 1.05×.
//   - P7: host memory (RSS) of an idle confined Vessel VM's QEMU against QEMU started by
//     hand with the same guest (kernel, initramfs, disks, memory, vCPUs), both after the
//     same idle time. Goal ≤ 1.1×. The daemon's own growth per VM is printed beside it.
//
//   npm run build && node dist/bench/p7-confinement.js [--runs 5]
//
// Prints a JSON object, then a table. Exits 0 even when a goal is missed.
import type { ChildProcess } from 'node:child_process';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import type { VesselClient } from '../src/client/index.js';
import { createOverlayDisk } from '../src/instances/guest-config.js';
import { busyboxImage, writeDockerArchive } from '../test/helpers/oci-builder.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../test/helpers/vm-daemon.js';
import { bareQemuArgv, bootBareQemu } from './lib/bare-qemu.js';
import { median, parseRuns, round, runBench, table } from './lib/measure.js';
import { memoryOf } from './lib/proc.js';

const MEMORY_MIB = 256;
const IDLE_MS = 15_000;
const GUEST_CMD = ['sh', '-c', 'while :; do sleep 1; done'];
const USAGE = 'usage: node dist/bench/p7-confinement.js [--runs N]';

const cleanups: (() => Promise<void>)[] = [];

async function daemon(dir: string, confined: boolean): Promise<SpawnedDaemon> {
  await seedKernel(dir);
  const before = process.env.VESSEL_CONFINEMENT;
  process.env.VESSEL_CONFINEMENT = confined ? 'on' : 'off';
  try {
    const d = await startDaemon(dir);
    cleanups.push(() => d.stop());
    return d;
  } finally {
    if (before === undefined) delete process.env.VESSEL_CONFINEMENT;
    else process.env.VESSEL_CONFINEMENT = before;
  }
}

async function importImage(c: VesselClient, archive: string): Promise<string> {
  return (await c.importImage(createReadStream(archive))).name;
}

/** create → Running (ms), then delete. */
async function coldCreate(c: VesselClient, image: string, name: string): Promise<number> {
  const t0 = performance.now();
  const i = await c.createInstance({ image, name, memory_mib: MEMORY_MIB, cmd: GUEST_CMD });
  const w = await c.waitInstance(i.id, 'Running', 240);
  const ms = performance.now() - t0;
  await c.deleteInstance(i.id);
  if (w.timed_out) throw new Error(`${name} did not reach Running`);
  return ms;
}

function argAfter(argv: readonly string[], flag: string, nth = 0): string {
  const at = argv.map((a, i) => (a === flag ? i : -1)).filter((i) => i >= 0)[nth];
  const v = at === undefined ? undefined : argv[at + 1];
  if (v === undefined) throw new Error(`no ${flag} in the VMM's command line`);
  return v;
}

/** RSS (KiB) of the bare QEMU booted with the same guest as instance `pid`, after IDLE_MS. */
async function bareRss(vmmPid: number, instDir: string, work: string): Promise<number> {
  const argv = (await fs.readFile(`/proc/${vmmPid}/cmdline`, 'utf8')).split('\0');
  const file = (drive: string): string => /(?:^|,)file=([^,]+)/.exec(drive)?.[1] ?? '';
  const overlayDisk = path.join(work, 'overlay.ext4');
  const configDisk = path.join(work, 'config.disk');
  await createOverlayDisk(overlayDisk, 4 * 1024 ** 3);
  await fs.copyFile(path.join(instDir, 'config.disk'), configDisk);
  const vm = {
    kernel: argAfter(argv, '-kernel'),
    initrd: argAfter(argv, '-initrd'),
    rootDisk: file(argAfter(argv, '-drive', 0)),
    overlayDisk,
    configDisk,
    controlSocket: path.join(work, 'control.sock'),
    accel: 'tcg' as const,
    tscKhz: Number(/tsc_early_khz=(\d+)/.exec(argAfter(argv, '-append'))?.[1] ?? 0),
    vcpus: 1,
    memoryMiB: MEMORY_MIB,
  };
  let child: ChildProcess | undefined;
  try {
    await bootBareQemu(bareQemuArgv(vm), 240_000, (c) => (child = c));
    await delay(IDLE_MS);
    const m = await memoryOf(child!.pid!);
    if (!m) throw new Error('the bare QEMU is gone');
    return m.rss_kib;
  } finally {
    child?.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  const runs = parseRuns(process.argv.slice(2), 5, USAGE);
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-p7-'));
  cleanups.push(() => fs.rm(root, { recursive: true, force: true }));
  const archive = path.join(root, 'busybox.tar');
  await writeDockerArchive(archive, await busyboxImage(), 'bench/busybox:p7');
  const on = await daemon(path.join(root, 'on'), true);
  const off = await daemon(path.join(root, 'off'), false);
  const imgOn = await importImage(on.client, archive);
  const imgOff = await importImage(off.client, archive);
  await coldCreate(on.client, imgOn, 'warm-on'); // first boots build caches (initramfs)
  await coldCreate(off.client, imgOff, 'warm-off');
  const confined: number[] = [];
  const unconfined: number[] = [];
  for (let r = 0; r < runs; r++) {
    confined.push(await coldCreate(on.client, imgOn, `on-${r}`));
    unconfined.push(await coldCreate(off.client, imgOff, `off-${r}`));
  }
  // P7: one idle confined VM against the bare QEMU of the same guest.
  const daemonBefore = (await memoryOf(on.child.pid!))?.rss_kib ?? 0;
  const i = await on.client.createInstance({
    image: imgOn,
    name: 'idle',
    memory_mib: MEMORY_MIB,
    cmd: GUEST_CMD,
    network: { enabled: false },
  });
  await on.client.waitInstance(i.id, 'Running', 240);
  const pid = (await on.client.getInstance(i.id)).pid!;
  await delay(IDLE_MS);
  const vesselRss = (await memoryOf(pid))?.rss_kib ?? 0;
  const daemonAfter = (await memoryOf(on.child.pid!))?.rss_kib ?? 0;
  const bare = await bareRss(pid, path.join(on.dataDir, 'instances', i.id), root);
  const result = {
    runs,
    confinement: {
      confined_ms: round(median(confined)),
      unconfined_ms: round(median(unconfined)),
      ratio: round(median(confined) / median(unconfined), 3),
      goal: 1.05,
    },
    p7: {
      vessel_vmm_rss_mib: round(vesselRss / 1024),
      bare_qemu_rss_mib: round(bare / 1024),
      ratio: round(vesselRss / bare, 3),
      daemon_rss_growth_mib: round((daemonAfter - daemonBefore) / 1024),
      goal: 1.1,
    },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(
    table([
      ['measure', 'vessel', 'baseline', 'ratio', 'goal'],
      [
        'create→Running, confined vs not (ms)',
        String(result.confinement.confined_ms),
        String(result.confinement.unconfined_ms),
        String(result.confinement.ratio),
        '≤ 1.05',
      ],
      [
        'idle VM host RSS vs bare QEMU (MiB)',
        String(result.p7.vessel_vmm_rss_mib),
        String(result.p7.bare_qemu_rss_mib),
        String(result.p7.ratio),
        '≤ 1.1',
      ],
    ]),
  );
}

await runBench('p7-confinement', main, async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});
