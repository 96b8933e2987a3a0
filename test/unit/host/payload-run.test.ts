// runPayload's process handling, with small shell scripts standing in for
// QEMU: they print the serial markers the real payload would and then hang,
// so the kill paths are exercised without a VM.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../../src/core/process.js';
import { runPayload } from '../../../src/host/payload-run.js';

let dir = '';

async function fakeQemu(name: string, script: string): Promise<string> {
  const file = path.join(dir, name);
  await fs.writeFile(file, `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  return file;
}

/** Children of this test process (pgrep never lists itself). */
async function children(): Promise<string[]> {
  const res = await run('pgrep', ['-a', '-P', String(process.pid)], { allowFailure: true });
  return res.stdout.split('\n').filter((l) => l.trim() !== '');
}

const common = { machine: 'microvm', biosPath: '/nonexistent/bios.bin', accel: 'kvm' as const };

void describe('runPayload', () => {
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-payload-run-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  void it('times L → D and kills QEMU as soon as D arrives', async () => {
    const qemu = await fakeQemu('done.sh', 'printf RL; sleep 0.2; printf D; exec sleep 30');
    const started = performance.now();
    const res = await runPayload({ ...common, qemu, startupMs: 5000, deadlineMs: 5000 });
    assert.equal(res.outcome, 'done');
    assert.equal(res.stage, 'done');
    assert.ok(res.ms !== undefined && res.ms >= 150 && res.ms < 3000, `ms = ${res.ms}`);
    assert.ok(performance.now() - started < 3000, 'did not wait for the 30 s sleep');
    assert.deepEqual(await children(), []);
  });

  void it('SIGKILLs a payload that reaches long mode but misses the deadline', async () => {
    const qemu = await fakeQemu('slow.sh', 'printf RL; exec sleep 30');
    const res = await runPayload({ ...common, qemu, startupMs: 5000, deadlineMs: 200 });
    assert.equal(res.outcome, 'timeout');
    assert.equal(res.stage, 'long-mode');
    assert.equal(res.ms, undefined);
    assert.deepEqual(await children(), []);
  });

  void it('SIGKILLs a QEMU that never writes to the serial port', async () => {
    const qemu = await fakeQemu('silent.sh', 'exec sleep 30');
    const res = await runPayload({ ...common, qemu, startupMs: 200, deadlineMs: 5000 });
    assert.equal(res.outcome, 'timeout');
    assert.equal(res.stage, 'none');
    assert.deepEqual(await children(), []);
  });

  void it('reports a QEMU that exits early with its stderr', async () => {
    const qemu = await fakeQemu(
      'fail.sh',
      'printf R; echo "qemu-system-x86_64: error: failed to set MSR 0x345" >&2; exit 1',
    );
    const res = await runPayload({ ...common, qemu, startupMs: 5000, deadlineMs: 5000 });
    assert.equal(res.outcome, 'exited');
    assert.equal(res.stage, 'real-mode');
    assert.equal(res.exitCode, 1);
    assert.match(res.stderr, /failed to set MSR 0x345/);
  });

  void it('settles when the program does not exist', async () => {
    const res = await runPayload({
      ...common,
      qemu: path.join(dir, 'missing'),
      startupMs: 5000,
      deadlineMs: 5000,
    });
    assert.equal(res.outcome, 'exited');
    assert.equal(res.stage, 'none');
    assert.match(res.stderr, /ENOENT/);
  });
});
