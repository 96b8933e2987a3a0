// probeHost for real on this machine: real QEMU, real /dev/kvm, real tools.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../src/core/process.js';
import { probeHost, type HostReport } from '../../src/host/index.js';

/** qemu-system-x86_64 processes that are children of this test process. */
async function qemuChildren(): Promise<string[]> {
  const res = await run('pgrep', ['-a', '-P', String(process.pid), '-x', 'qemu-system-x86_64'], {
    allowFailure: true,
  });
  return res.stdout.split('\n').filter((l) => l.trim() !== '');
}

async function probeDirs(): Promise<Set<string>> {
  const names = await fs.readdir(os.tmpdir());
  return new Set(names.filter((n) => n.startsWith('vessel-accel-probe-')));
}

function assertShape(report: HostReport): void {
  const r = report.resources;
  assert.ok(Number.isInteger(r.cpus) && r.cpus >= 1);
  assert.ok(r.memory_bytes > 0 && r.memory_free_bytes > 0 && r.memory_free_bytes <= r.memory_bytes);
  assert.ok(
    r.disk.total_bytes > 0 && r.disk.free_bytes >= 0 && r.disk.free_bytes <= r.disk.total_bytes,
  );
  assert.equal(r.arch, os.machine());
  assert.equal(r.kernel, os.release());
  assert.deepEqual(
    report.hypervisors.map((h) => h.name),
    ['qemu', 'firecracker', 'cloud-hypervisor'],
  );
  for (const c of report.checks) {
    assert.ok(['ok', 'warn', 'fail'].includes(c.status), `${c.id} status ${c.status}`);
    assert.ok(c.title !== '' && c.detail !== '', c.id);
    assert.equal(c.fix !== undefined, c.status !== 'ok', `${c.id}: fix iff not ok`);
  }
  const ids = report.checks.map((c) => c.id);
  for (const id of [
    'qemu',
    'qemu-microvm',
    'kvm',
    'tcg',
    'tun',
    'vsock',
    'mkfs-erofs',
    'mkfs-ext4',
    'disk',
  ]) {
    assert.ok(ids.includes(id), `check ${id} present`);
  }
  assert.equal(typeof report.accelerators.kvm.reason, 'string');
  assert.ok(report.accelerators.kvm.reason.length > 0);
}

void describe('probeHost on this machine', () => {
  void it('reports resources, tools and a tried KVM verdict, leaving no QEMU behind', async (t) => {
    const dirsBefore = await probeDirs();
    // A data dir that does not exist yet: statfs must fall back to its parent.
    const dataDir = path.join(os.tmpdir(), `vessel-host-probe-${process.pid}`, 'not', 'yet');
    const started = performance.now();
    const report = await probeHost({ dataDir, refreshKvm: true });
    const elapsed = performance.now() - started;
    t.diagnostic(
      `probe took ${Math.round(elapsed)} ms; kvm: ${JSON.stringify(report.accelerators.kvm)}`,
    );

    assertShape(report);
    assert.equal(report.resources.disk.path, os.tmpdir());
    assert.ok(elapsed < 15_000, `probe took ${Math.round(elapsed)} ms`);
    assert.deepEqual(await qemuChildren(), []);
    const leftover = [...(await probeDirs())].filter((d) => !dirsBefore.has(d));
    assert.deepEqual(leftover, [], 'probe temp dirs are removed');

    const qemu = report.hypervisors.find((h) => h.name === 'qemu');
    if (!qemu?.path) {
      t.skip(
        'qemu-system-x86_64 is not installed on this machine; the accelerator probe cannot run',
      );
      return;
    }
    assert.match(qemu.version ?? '', /^\d+\.\d+/);
    const kvm = report.accelerators.kvm;
    assert.equal(report.accelerators.tcg, true, 'TCG runs the payload wherever QEMU is installed');
    assert.ok(kvm.tcg_ms === undefined || kvm.tcg_ms > 0);
    if (kvm.usable) {
      assert.ok(kvm.kvm_ms !== undefined && kvm.kvm_ms >= 0);
      assert.equal(kvm.device_present, true);
    }
    const kvmCheck = report.checks.find((c) => c.id === 'kvm');
    assert.equal(kvmCheck?.status, kvm.usable ? 'ok' : 'warn');
  });

  void it('reuses the cached accelerator verdict unless refreshKvm is set', async () => {
    const first = await probeHost({ dataDir: os.tmpdir() });
    const second = await probeHost({ dataDir: os.tmpdir() });
    // The same object, not an equal one: the payload did not run again.
    assert.equal(second.accelerators.kvm, first.accelerators.kvm);
    const refreshed = await probeHost({ dataDir: os.tmpdir(), refreshKvm: true });
    assert.notEqual(refreshed.accelerators.kvm, first.accelerators.kvm);
    assert.deepEqual(await qemuChildren(), []);
  });
});
