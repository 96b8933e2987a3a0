// Confinement through a real daemon and real microVMs (issue 11): the VMM runs as its own
// unprivileged uid with no capabilities, no_new_privs and QEMU's seccomp filter; its root
// is the jail (only what the VM needs, at its host paths); a file the daemon puts outside
// the jail does not exist for it; its cgroup holds the memory and pids limits while the
// guest fills its RAM and runs a fork bomb; the cgroup goes with the VM; and the
// config switch turns it all off (for debugging), which doctor reports.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { VesselClient } from '../../src/client/index.js';
import { detectCgroups, groupDirs, peakMemory } from '../../src/vmm/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const why =
  (await vmSkipReason()) ?? (process.getuid?.() !== 0 ? 'confinement needs root' : undefined);

async function status(pid: number): Promise<Record<string, string>> {
  const text = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Object.fromEntries(
    text
      .split('\n')
      .filter((l) => l.includes(':'))
      .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
  );
}

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

describe('confinement of the VMM', { skip: why, timeout: 600_000 }, () => {
  let dir: string;
  let d: SpawnedDaemon;
  let c: VesselClient;
  let image: string;

  const boot = async (
    name: string,
    memoryMib = 256,
    diskIo?: string,
  ): Promise<{ id: string; pid: number }> => {
    const i = await c.createInstance({
      name,
      image,
      memory_mib: memoryMib,
      cmd: ['sleep', '3600'],
      ...(diskIo ? { disk_io_bps: diskIo } : {}),
    });
    const w = await c.waitInstance(i.id, 'Running', 240);
    assert.equal(w.timed_out, false, `${name} did not reach Running`);
    const got = await c.getInstance(i.id);
    assert.ok(got.pid, 'a running instance has a pid');
    return { id: i.id, pid: got.pid };
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-confine-it-'));
    await seedKernel(dir);
    d = await startDaemon(dir);
    c = d.client;
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'confine/busybox:1');
    image = (await c.importImage(createReadStream(archive))).name;
  });

  after(async () => {
    if (d) {
      for (const i of await c.listInstances().catch(() => []))
        await c.deleteInstance(i.id).catch(() => undefined);
      await d.stop();
    }
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('uid, capabilities, no_new_privs, seccomp; its root is the jail', async () => {
    const { id, pid } = await boot('jailed');
    const s = await status(pid);
    const [uid] = (s.Uid ?? '').split(/\s+/).map(Number);
    assert.ok(uid !== undefined && uid >= 200_000, `VMM uid ${s.Uid} is an unprivileged one`);
    assert.equal(s.CapEff, '0000000000000000');
    assert.equal(s.CapPrm, '0000000000000000');
    assert.equal(s.CapBnd, '0000000000000000');
    assert.equal(s.NoNewPrivs, '1');
    assert.equal(s.Seccomp, '2');
    // The jail: system code, a few devices and this instance's files, nothing else.
    const root = `/proc/${pid}/root`;
    const top = (await fs.readdir(root)).sort();
    for (const e of top)
      assert.ok(
        [
          'bin',
          'dev',
          'etc',
          'lib',
          'lib32',
          'lib64',
          'libx32',
          'sbin',
          'usr',
          dir.split('/')[1],
        ].includes(e),
        `unexpected ${e} in the jail: ${top.join(' ')}`,
      );
    assert.deepEqual((await fs.readdir(path.join(root, 'etc'))).sort(), ['ld.so.cache']);
    assert.deepEqual(
      (await fs.readdir(path.join(root, dir, 'instances'))).sort(),
      [id],
      'the jail holds only its own instance',
    );
    assert.deepEqual((await fs.readdir(path.join(root, dir, 'instances', id))).sort(), [
      'config.disk',
      'overlay.ext4',
      'vmm',
    ]);
    // A file the daemon puts outside the jail does not exist for the VMM; nor do the host's.
    const secret = path.join(dir, 'secret');
    await fs.writeFile(secret, 'not for the VMM\n');
    assert.equal(await exists(path.join(root, secret)), false);
    assert.equal(await exists(path.join(root, 'etc/shadow')), false);
    assert.equal(await exists(path.join(root, dir, 'vessel.db')), false);
    // The VMM's own files are its uid's; its run directory is private.
    const run = await fs.stat(path.join(dir, 'instances', id, 'vmm'));
    assert.equal(run.uid, uid);
    assert.equal(run.mode & 0o777, 0o700);
    // Exec, standby and restore still work confined (migration goes through sockets).
    assert.equal((await c.execInstance(id, { argv: ['echo', 'in-jail'] })).stdout, 'in-jail\n');
    await c.instanceAction(id, 'standby');
    await c.instanceAction(id, 'restore');
    assert.equal((await c.execInstance(id, { argv: ['echo', 'back'] })).stdout, 'back\n');
    await c.deleteInstance(id);
  });

  test('the cgroup bounds memory while the guest fills its RAM, and pids under a fork bomb', async () => {
    const layout = await detectCgroups();
    if (!layout) return assert.fail('no cgroup controllers on this host');
    const { id, pid } = await boot('hog', 256);
    const dirs = groupDirs(layout, id);
    for (const g of dirs) {
      const procs = await fs.readFile(path.join(g, 'cgroup.procs'), 'utf8');
      assert.ok(procs.split('\n').includes(String(pid)), `VMM ${pid} is in ${g}`);
    }
    const limit = (256 + 384) * 1024 * 1024;
    // Fill guest RAM (a tmpfs as large as the guest's memory), then more than it has.
    // The guest runs out of memory (its OOM killer may take the shell): that is its business.
    await c
      .execInstance(id, {
        argv: [
          'sh',
          '-c',
          'mkdir -p /fill && mount -t tmpfs -o size=400m none /fill && dd if=/dev/urandom of=/fill/x bs=1M count=380 2>&1; echo done',
        ],
      })
      .catch(() => undefined);
    const peak = await peakMemory(layout, id);
    assert.ok(peak !== null && peak > 100 * 1024 * 1024, `peak ${String(peak)} shows the fill`);
    assert.ok(peak <= limit, `peak ${peak} stays within the limit ${limit}`);
    // A fork bomb in the guest: guest processes are not host processes; the VMM's thread
    // count stays within pids.max.
    const pidsDir = layout.mounts.pids ? path.join(layout.mounts.pids, 'vessel', id) : null;
    await c
      .execInstance(id, {
        argv: ['sh', '-c', 'b() { b | b & }; b 2>/dev/null & sleep 5; echo survived'],
      })
      .catch(() => undefined); // the guest may well die of it; the host must not care
    if (pidsDir) {
      const current = Number(await fs.readFile(path.join(pidsDir, 'pids.current'), 'utf8'));
      const max = Number(await fs.readFile(path.join(pidsDir, 'pids.max'), 'utf8'));
      assert.ok(current <= max && current < 100, `VMM tasks ${current} (max ${max})`);
    }
    await c.deleteInstance(id);
    for (const g of dirs) assert.equal(await exists(g), false, `${g} is removed with the VM`);
  });

  test('disk_io_bps holds the guest to its disk rate (hypeman field)', async () => {
    const { id } = await boot('slowdisk', 256, '2MB/s');
    assert.equal((await c.getInstance(id)).disk_io_bps, '2MB/s');
    // 8 MiB written and flushed to the overlay disk: ~4 s at 2 MB/s, well under 1 s without.
    const t0 = performance.now();
    const r = await c.execInstance(id, {
      argv: ['sh', '-c', 'dd if=/dev/zero of=/io.bin bs=1M count=8 conv=fsync 2>&1'],
    });
    const ms = performance.now() - t0;
    assert.equal(r.exit_code, 0, r.stdout);
    assert.ok(ms >= 2500, `8 MiB at 2MB/s took only ${Math.round(ms)} ms`);
    await c.deleteInstance(id);
  });
});
