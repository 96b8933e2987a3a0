/**
 * A boot that fails is reported by the CLI on its own stderr, with the end of
 * the console, and a non-zero exit; nothing reaches stdout. The failure is
 * made real by a boot timeout shorter than any TCG boot (1 s).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const skip = await vmSkipReason();

describe('the CLI reports a failed boot', { skip, timeout: 240_000 }, () => {
  let dir: string;
  let daemon: SpawnedDaemon;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-bootfail-'));
    await seedKernel(dir);
    await fs.writeFile(
      path.join(dir, 'config.json'),
      JSON.stringify({ instances: { boot_timeout_seconds: 1 } }),
    );
    daemon = await startDaemon(dir);
    const archive = path.join(dir, 'img.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'bootfail/busybox:1');
    const imp = await daemon.cli(['image', 'import', archive]);
    assert.equal(imp.code, 0, imp.stderr);
  });

  after(async () => {
    for (const i of (await daemon?.client.listInstances().catch(() => [])) ?? [])
      await daemon.client.deleteInstance(i.id).catch(() => undefined);
    await daemon?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('run in the foreground: exit 1 and the reason on stderr, stdout empty', async () => {
    const r = await daemon.cli(['run', '--rm', 'bootfail/busybox:1', '--', 'echo', 'never']);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /did not become ready within 1 s/);
    assert.deepEqual(await daemon.client.listInstances(), [], '--rm removed it');
  });

  test('run -d: exit 1 with the reason instead of an id', async () => {
    const r = await daemon.cli([
      'run',
      '-d',
      '--name',
      'slow',
      'bootfail/busybox:1',
      '--',
      'sleep',
      '60',
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stdout, '', 'no id is printed for an instance that did not start');
    assert.match(r.stderr, /slow: .*did not become ready within 1 s/);
    // The console's last lines follow the reason, whatever the guest got to print.
    const con = await daemon.cli(['logs', '--source', 'console', 'slow']);
    assert.equal(con.code, 0, con.stderr);
    if (con.stdout.trim().length > 0) {
      assert.match(r.stderr, /last lines of the console/);
      assert.ok(
        r.stderr.includes(con.stdout.trim().split('\n').at(-1)!),
        'the console tail is shown',
      );
    }
  });
});
