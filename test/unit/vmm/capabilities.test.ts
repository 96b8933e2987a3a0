// QemuHypervisor.capabilities() keeps its answer while the binary file is unchanged.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { QemuHypervisor } from '../../../src/vmm/index.js';

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-caps-'));
after(() => fs.rm(dir, { recursive: true, force: true }));

/** A stand-in `qemu-system-x86_64` that logs each call and prints `version`. */
async function writeBinary(file: string, version: string): Promise<void> {
  const script = `#!/bin/sh
echo "$@" >> ${dir}/calls
case "$1" in
  --version) echo "QEMU emulator version ${version} (test)";;
  -machine) printf 'Supported machines are:\\nmicrovm              microvm (i386)\\n';;
esac
`;
  await fs.writeFile(file, script, { mode: 0o755 });
}

async function calls(): Promise<number> {
  const text = await fs.readFile(path.join(dir, 'calls'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).length;
}

test('the answer is reused until the binary changes, then probed again', async () => {
  const bin = path.join(dir, 'qemu-system-x86_64');
  await writeBinary(bin, '7.2.22');
  const qemu = new QemuHypervisor({ binary: bin });
  const first = await qemu.capabilities();
  assert.equal(first.version, '7.2.22');
  assert.equal(first.microvm, true);
  assert.equal(await calls(), 2);
  assert.deepEqual(await qemu.capabilities(), first);
  assert.equal(await calls(), 2, 'no spawn for an unchanged binary');
  await writeBinary(bin, '8.2.1-upgraded');
  assert.equal((await qemu.capabilities()).version, '8.2.1');
  assert.equal(await calls(), 4, 'an upgraded binary is probed again');
});

test('a missing binary is reported unavailable, and not cached', async () => {
  const qemu = new QemuHypervisor({ binary: path.join(dir, 'nope') });
  const caps = await qemu.capabilities();
  assert.equal(caps.available, false);
  assert.ok(caps.reason);
});
