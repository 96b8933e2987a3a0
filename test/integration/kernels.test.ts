// Really pulls the Debian cloud kernel, builds an initramfs with a busybox
// /init that loads the selected modules in order, and boots it under QEMU.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isVesselError } from '../../src/core/errors.js';
import {
  buildInitramfs,
  ensureKernel,
  listKernels,
  pullKernel,
  removeKernel,
  resolveKernel,
  type Kernel,
} from '../../src/kernels/index.js';

const KERNEL = 'debian-cloud-6.1';
const BUSYBOX = '/bin/busybox';

function hostMHz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(spawnSync('cat', ['/proc/cpuinfo']).stdout.toString());
  return m ? Math.round(Number(m[1])) : 2000;
}

/** Boot with QEMU microvm (TCG) and return the serial output; qemu is always killed. */
async function boot(vmlinuz: string, initrd: string, timeoutMs: number): Promise<string> {
  const append = [
    'console=ttyS0',
    'panic=-1',
    'quiet',
    `tsc_early_khz=${hostMHz() * 1000}`,
    'i8042.noaux',
    'i8042.nopnp',
    '8250.nr_uarts=1',
    'mitigations=off',
    'random.trust_cpu=on',
    'no_timer_check',
  ].join(' ');
  // tsc_early_khz takes kHz: host MHz × 1000.
  const child = spawn(
    'qemu-system-x86_64',
    [
      '-M',
      'microvm,acpi=on',
      '-accel',
      'tcg',
      '-m',
      '256',
      '-nodefaults',
      '-no-user-config',
      '-nographic',
      '-no-reboot',
      '-serial',
      'stdio',
      '-kernel',
      vmlinuz,
      '-initrd',
      initrd,
      '-append',
      append,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }
  return out;
}

describe('kernels (real apt pull + QEMU boot)', () => {
  let dataDir: string;
  let kernel: Kernel | undefined;
  let skipReason: string | undefined;

  before(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-kern-'));
    const t0 = performance.now();
    try {
      // Two concurrent pulls share one run.
      const [a, b] = await Promise.all([
        pullKernel(KERNEL, { dataDir }),
        pullKernel(KERNEL, { dataDir }),
      ]);
      assert.equal(a, b);
      kernel = a;
      console.log(`# pull ${KERNEL} ${kernel.version}: ${Math.round(performance.now() - t0)} ms`);
    } catch (err) {
      if (isVesselError(err, 'tool_missing') || isVesselError(err, 'tool_failed')) {
        skipReason = `cannot pull ${KERNEL} here (${(err as Error).message})`;
      } else {
        throw err;
      }
    }
  });

  after(async () => {
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  test('the pulled kernel has vmlinuz, modules in dependency order and metadata', async (t) => {
    if (!kernel) return t.skip(skipReason);
    const st = await fs.stat(kernel.vmlinuz);
    assert.ok(st.size > 5_000_000, 'vmlinuz is a real kernel image');
    assert.match(kernel.version, /^6\.1\.\d+-\d+-cloud-amd64$/);
    assert.match(kernel.info.package ?? '', /^linux-image-6\.1\.0-\d+-cloud-amd64$/);
    assert.match(kernel.info.sha256, /^[0-9a-f]{64}$/);
    const order = (await fs.readFile(path.join(kernel.dir, 'modules.order'), 'utf8'))
      .trim()
      .split('\n');
    assert.deepEqual(order, kernel.moduleOrder);
    const files = (await fs.readdir(kernel.modulesDir)).sort();
    assert.deepEqual(files, [...order].sort(), 'only the selected modules are kept');
    const idx = (f: string): number => order.indexOf(f);
    for (const f of ['virtio_blk.ko', 'virtio-rng.ko', 'erofs.ko', 'overlay.ko', 'vsock.ko']) {
      assert.ok(idx(f) >= 0, `${f} selected`);
    }
    assert.ok(idx('virtio.ko') < idx('virtio_blk.ko'));
    assert.ok(idx('virtio_ring.ko') < idx('virtio_mmio.ko'));
    assert.ok(idx('libcrc32c.ko') < idx('erofs.ko'), 'depmod: erofs needs libcrc32c');
    assert.ok(idx('vsock.ko') < idx('vmw_vsock_virtio_transport.ko'));
    assert.ok(idx('vmw_vsock_virtio_transport_common.ko') < idx('vmw_vsock_virtio_transport.ko'));
  });

  test('resolve, ensure (no re-pull), list and remove', async (t) => {
    if (!kernel) return t.skip(skipReason);
    const resolved = await resolveKernel(KERNEL, { dataDir });
    assert.equal(resolved.dir, kernel.dir);
    const ensured = await ensureKernel(KERNEL, { dataDir });
    assert.equal(ensured.info.created_at, kernel.info.created_at);
    const listed = await listKernels({ dataDir });
    assert.deepEqual(
      listed.map((k) => [k.name, k.version]),
      [[KERNEL, kernel.version]],
    );
    const other = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-kern-empty-'));
    try {
      await assert.rejects(resolveKernel(KERNEL, { dataDir: other }), (e) =>
        isVesselError(e, 'not_found'),
      );
      await assert.rejects(removeKernel(KERNEL, { dataDir: other }), (e) =>
        isVesselError(e, 'not_found'),
      );
    } finally {
      await fs.rm(other, { recursive: true, force: true });
    }
  });

  test('boots under QEMU microvm: /init loads every module in order', async (t) => {
    if (!kernel) return t.skip(skipReason);
    if (spawnSync('qemu-system-x86_64', ['--version']).error) {
      return t.skip('qemu-system-x86_64 is not installed');
    }
    if (spawnSync(BUSYBOX, ['true']).error) {
      return t.skip(`${BUSYBOX} is missing (apt package busybox-static)`);
    }
    const work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-kern-init-'));
    try {
      const init = path.join(work, 'init');
      await fs.writeFile(
        init,
        [
          '#!/bin/busybox sh',
          'B=/bin/busybox',
          'ok=1',
          'for m in $($B cat /etc/vessel/modules); do',
          '  $B insmod /lib/modules/$($B uname -r)/$m || { echo "MODULE-FAIL $m"; ok=0; }',
          'done',
          '[ $ok = 1 ] && echo MODULES-LOADED',
          'echo VESSEL-KERNEL-OK',
          '$B poweroff -f',
          '',
        ].join('\n'),
      );
      const opts = {
        kernelDir: kernel.dir,
        guestBinary: init,
        dataDir,
        extraFiles: [{ path: '/bin/busybox', source: BUSYBOX, mode: 0o755 }],
      };
      const t0 = performance.now();
      const initrd = await buildInitramfs(opts);
      const buildMs = Math.round(performance.now() - t0);
      assert.match(path.basename(initrd), /^initramfs-[0-9a-f]{16}\.cpio\.gz$/);
      const mtime = (await fs.stat(initrd)).mtimeMs;
      assert.equal(await buildInitramfs(opts), initrd, 'same inputs reuse the cached file');
      assert.equal((await fs.stat(initrd)).mtimeMs, mtime);

      const b0 = performance.now();
      const out = await boot(kernel.vmlinuz, initrd, 60_000);
      const bootMs = Math.round(performance.now() - b0);
      const size = (await fs.stat(initrd)).size;
      console.log(`# initramfs ${size} bytes built in ${buildMs} ms; boot to marker ${bootMs} ms`);
      assert.match(out, /VESSEL-KERNEL-OK/, `serial output:\n${out.slice(-3000)}`);
      assert.doesNotMatch(out, /MODULE-FAIL/);
      assert.match(out, /MODULES-LOADED/);
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
    await removeKernel(KERNEL, { dataDir });
    assert.deepEqual(await listKernels({ dataDir }), []);
  });
});
