// The QEMU backend for real: boots Debian's cloud kernel (TCG) with a busybox
// initramfs, drives it over QMP, re-adopts it, stops it, and leaves nothing behind.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { errnoCode } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import {
  GUEST_KERNEL_ARGS,
  QemuHypervisor,
  type VmEvent,
  type VmSpec,
} from '../../src/vmm/index.js';
import { pidAlive } from '../../src/vmm/qemu/proc.js';

const CACHE_DIR = '/var/cache/vessel-test';
const CACHED_KERNEL = path.join(CACHE_DIR, 'vmlinuz');
const BUSYBOX = '/bin/busybox';
const MARKER = 'VESSEL-VMM-OK';
const KERNEL_ARGS = GUEST_KERNEL_ARGS;

async function exists(p: string): Promise<boolean> {
  return fs.access(p).then(
    () => true,
    () => false,
  );
}

/** A Debian cloud kernel: the test cache, /boot, or fetched with apt into the cache. */
async function findOrFetchKernel(): Promise<string> {
  if (await exists(CACHED_KERNEL)) return CACHED_KERNEL;
  const boot = (await fs.readdir('/boot').catch(() => [])).filter((n) =>
    /^vmlinuz-.*cloud-amd64$/.test(n),
  );
  if (boot[0] !== undefined) return path.join('/boot', boot[0]);
  const deps = await run('apt-cache', ['depends', 'linux-image-cloud-amd64']);
  const pkg = /Depends:\s*(linux-image-\S+-cloud-amd64)/.exec(deps.stdout)?.[1];
  if (pkg === undefined) throw new Error(`apt-cache depends named no kernel: ${deps.stdout}`);
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-kernel-'));
  try {
    await run('apt-get', ['download', pkg], { cwd: tmp, timeoutMs: 300_000 });
    const deb = (await fs.readdir(tmp)).find((n) => n.endsWith('.deb'));
    if (deb === undefined) throw new Error(`apt-get download ${pkg} produced no .deb`);
    await run('dpkg-deb', ['-x', path.join(tmp, deb), path.join(tmp, 'x')]);
    const vmlinuz = (await fs.readdir(path.join(tmp, 'x', 'boot'))).find((n) =>
      n.startsWith('vmlinuz-'),
    );
    if (vmlinuz === undefined) throw new Error(`${pkg} has no boot/vmlinuz-*`);
    await fs.mkdir(CACHE_DIR, { recursive: true });
    await fs.copyFile(path.join(tmp, 'x', 'boot', vmlinuz), `${CACHED_KERNEL}.tmp`);
    await fs.rename(`${CACHED_KERNEL}.tmp`, CACHED_KERNEL);
    return CACHED_KERNEL;
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

interface CpioEntry {
  readonly name: string;
  readonly mode: number;
  readonly data: Buffer;
}

/** A minimal newc ("070701") cpio archive writer. */
function newcCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad = (len: number): Buffer => Buffer.alloc((4 - (len % 4)) % 4);
  const all = [...entries, { name: 'TRAILER!!!', mode: 0, data: Buffer.alloc(0) }];
  all.forEach((e, i) => {
    const name = Buffer.from(`${e.name}\0`);
    const fields = [i + 1, e.mode, 0, 0, 1, 0, e.data.length, 0, 0, 0, 0, name.length, 0];
    const header = Buffer.from(
      '070701' + fields.map((f) => f.toString(16).toUpperCase().padStart(8, '0')).join(''),
    );
    parts.push(header, name, pad(header.length + name.length), e.data, pad(e.data.length));
  });
  return Buffer.concat(parts);
}

async function hostTscKhz(): Promise<number | undefined> {
  const info = await fs.readFile('/proc/cpuinfo', 'utf8');
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(info)?.[1];
  return mhz === undefined ? undefined : Math.round(Number(mhz) * 1000);
}

void describe('QemuHypervisor with a real QEMU (TCG)', () => {
  let dir: string;
  let kernel: string | undefined;
  let skipReason: string | undefined;
  const pids: number[] = [];

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-vmm-'));
    const caps = await new QemuHypervisor().capabilities();
    if (!caps.available || !caps.microvm) {
      skipReason = `QEMU with the microvm machine is not available: ${caps.reason ?? 'no microvm'}`;
      return;
    }
    if (!(await exists(BUSYBOX))) {
      skipReason = `${BUSYBOX} is missing (apt-get install busybox-static)`;
      return;
    }
    try {
      kernel = await findOrFetchKernel();
    } catch (err) {
      skipReason = `no Debian cloud kernel and fetching one failed: ${String(err)}`;
    }
  });

  after(async () => {
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch (err) {
        if (errnoCode(err) !== 'ESRCH') throw err;
      }
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  void it(
    'boots, pauses, resumes, snapshots, is re-adopted and stops',
    { timeout: 180_000 },
    async (t) => {
      if (skipReason !== undefined || kernel === undefined) {
        t.skip(skipReason);
        return;
      }
      const hv = new QemuHypervisor();
      const caps = await hv.capabilities();
      assert.match(caps.version ?? '', /^\d+\.\d+/);

      const initrd = path.join(dir, 'initrd.cpio');
      const init = `#!/bin/busybox sh\n/bin/busybox echo ${MARKER}\n/bin/busybox sleep 1000\n`;
      await fs.writeFile(
        initrd,
        newcCpio([
          { name: 'bin', mode: 0o040755, data: Buffer.alloc(0) },
          { name: 'bin/busybox', mode: 0o100755, data: await fs.readFile(BUSYBOX) },
          { name: 'init', mode: 0o100755, data: Buffer.from(init) },
        ]),
      );
      const tscKhz = await hostTscKhz();
      const spec: VmSpec = {
        id: 'itest',
        kernel,
        initrd,
        cmdline: KERNEL_ARGS,
        vcpus: 1,
        memoryMiB: 256,
        disks: [],
        controlSocket: path.join(dir, 'control.sock'),
        consoleSocket: path.join(dir, 'console.sock'),
        serialLog: path.join(dir, 'serial.log'),
        qmpSocket: path.join(dir, 'qmp.sock'),
        accel: 'tcg',
        ...(tscKhz === undefined ? {} : { tscKhz }),
        workDir: dir,
      };

      const t0 = performance.now();
      const handle = await hv.start(spec);
      pids.push(handle.pid);
      const startedMs = performance.now() - t0;
      let consoleText = '';
      const booted = new Promise<number>((resolve) => {
        handle.onConsole((chunk) => {
          consoleText += chunk.toString('utf8');
          if (consoleText.includes(MARKER)) resolve(performance.now() - t0);
        });
      });
      const bootMs = await Promise.race([
        booted,
        handle.exited.then((e) => {
          throw new Error(
            `QEMU exited before the marker: ${JSON.stringify(e)}; console: ${consoleText}`,
          );
        }),
      ]);
      t.diagnostic(
        `start() resolved in ${startedMs.toFixed(0)} ms; ${MARKER} after ${bootMs.toFixed(0)} ms`,
      );
      assert.ok(await exists(spec.controlSocket), 'control socket exists');

      const events: VmEvent[] = [];
      handle.onEvent((e) => events.push(e));
      assert.equal((await handle.info()).state, 'running');
      await handle.pause();
      assert.equal((await handle.info()).state, 'paused');
      await handle.resume();
      assert.equal((await handle.info()).state, 'running');
      assert.deepEqual(
        events.map((e) => e.type),
        ['stopped', 'resumed'],
      );

      const snap = path.join(dir, "snap shot's.bin");
      const s0 = performance.now();
      await handle.snapshot(snap);
      t.diagnostic(`snapshot in ${(performance.now() - s0).toFixed(0)} ms`);
      assert.ok((await fs.stat(snap)).size > 1024 * 1024, 'snapshot has the VM memory');
      assert.equal((await handle.info()).state, 'paused');
      await handle.resume();
      assert.equal((await handle.info()).state, 'running');

      // Daemon restart: drop the handle, re-adopt by pid and sockets.
      handle.detach();
      const adopted = await hv.adopt(handle.pid, {
        qmpSocket: spec.qmpSocket,
        consoleSocket: spec.consoleSocket,
        controlSocket: spec.controlSocket,
      });
      assert.equal(adopted.pid, handle.pid);
      assert.equal((await adopted.info()).state, 'running');
      await assert.rejects(hv.adopt(process.pid, adopted), /is not QEMU/);

      const adoptedEvents: VmEvent[] = [];
      adopted.onEvent((e) => adoptedEvents.push(e));
      const st0 = performance.now();
      await adopted.stop({ graceful: true, timeoutMs: 3000 });
      t.diagnostic(`stop in ${(performance.now() - st0).toFixed(0)} ms`);
      await adopted.exited;
      assert.equal((await adopted.info()).state, 'exited');
      assert.ok(adoptedEvents.some((e) => e.type === 'exited'));
      assert.equal(await pidAlive(handle.pid), false);

      const log = await fs.readFile(spec.serialLog, 'utf8');
      assert.ok(log.includes(MARKER), 'QEMU wrote the console to the serial log');
    },
  );

  void it(
    'notices a kill -9 of an adopted QEMU within a second',
    { timeout: 60_000 },
    async (t) => {
      if (skipReason !== undefined || kernel === undefined) {
        t.skip(skipReason);
        return;
      }
      const work = path.join(dir, 'killed');
      const hv = new QemuHypervisor();
      const sockets = {
        controlSocket: path.join(work, 'control.sock'),
        consoleSocket: path.join(work, 'console.sock'),
        qmpSocket: path.join(work, 'qmp.sock'),
      };
      const handle = await hv.start({
        id: 'killed',
        kernel,
        initrd: path.join(dir, 'initrd.cpio'),
        cmdline: KERNEL_ARGS,
        vcpus: 1,
        memoryMiB: 128,
        disks: [],
        ...sockets,
        serialLog: path.join(work, 'serial.log'),
        accel: 'tcg',
        workDir: work,
      });
      pids.push(handle.pid);
      handle.detach();
      const adopted = await hv.adopt(handle.pid, sockets);
      const k0 = performance.now();
      process.kill(handle.pid, 'SIGKILL');
      await adopted.exited;
      const ms = performance.now() - k0;
      t.diagnostic(`exit noticed after ${ms.toFixed(0)} ms`);
      assert.ok(ms < 1000, `exit noticed after ${ms} ms`);
      assert.equal((await adopted.info()).state, 'exited');
      await assert.rejects(adopted.pause(), (err: Error) => /has exited/.test(err.message));
    },
  );

  void it('reports a startup failure with the QEMU log tail', { timeout: 60_000 }, async (t) => {
    if (skipReason !== undefined) {
      t.skip(skipReason);
      return;
    }
    const work = path.join(dir, 'bad');
    const hv = new QemuHypervisor();
    await assert.rejects(
      hv.start({
        id: 'bad',
        kernel: path.join(dir, 'no-such-kernel'),
        initrd: path.join(dir, 'no-such-initrd'),
        cmdline: [],
        vcpus: 1,
        memoryMiB: 64,
        disks: [],
        controlSocket: path.join(work, 'control.sock'),
        consoleSocket: path.join(work, 'console.sock'),
        serialLog: path.join(work, 'serial.log'),
        qmpSocket: path.join(work, 'qmp.sock'),
        accel: 'tcg',
        workDir: work,
      }),
      (err: Error) => {
        assert.match(err.message, /failed to start/);
        assert.match(err.message, /no-such-kernel/);
        return true;
      },
    );
  });
});
