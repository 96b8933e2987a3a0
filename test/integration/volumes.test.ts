// Volumes end to end through real microVMs (issue 10): a volume made from a GNU tar archive
// (with a symlink) is in the guest with the right bytes; read-only is read-only; data written
// to a read-write volume survives `rm` of its instance and is seen by the next one; overlay
// attachments give each instance its own writes over an unchanged base; delete is refused
// while attached; two racing creates asking for one read-write volume: exactly one wins;
// attach to a stopped instance; fork refused over a read-write volume; and `vessel run -v
// ./dir:/data` from the CLI. Three VMs boot in all (TCG: each boot takes seconds).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Instance, VesselClient } from '../../src/client/index.js';
import { isVesselError } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { MAIN_JS, seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const why = await vmSkipReason(['/usr/bin/tar', '/usr/sbin/debugfs']);

const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

/** Run `sh -c script` in the guest; the exit code and output. */
async function sh(
  c: VesselClient,
  id: string,
  script: string,
): Promise<{ code: number | null; out: string; err: string }> {
  const r = await c.execInstance(id, { argv: ['sh', '-c', script] });
  return { code: r.exit_code, out: r.stdout, err: r.stderr };
}

async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isVesselError(err), String(err));
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

describe('volumes through real microVMs', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let d: SpawnedDaemon;
  let c: VesselClient;
  let image: string;
  const bigContent = Buffer.alloc(3 * 1024 * 1024 + 17, 'v');
  let a: Instance; // the race winner: data ro at /data, rwvol rw at /rw, base overlay at /ov
  let b: Instance; // base overlay at /ov

  const running = async (id: string): Promise<void> => {
    const w = await c.waitInstance(id, 'Running', 240);
    assert.equal(w.timed_out, false, `instance ${id} did not reach Running: ${JSON.stringify(w)}`);
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-volumes-it-'));
    await seedKernel(dir);
    d = await startDaemon(dir);
    c = d.client;
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'volumes/busybox:1');
    image = (await c.importImage(createReadStream(archive))).name;
    // The dataset: files, a nested dir and a symlink, packed by GNU tar (third-party input).
    const src = path.join(dir, 'dataset');
    await fs.mkdir(path.join(src, 'nested'), { recursive: true });
    await fs.writeFile(path.join(src, 'big.bin'), bigContent);
    await fs.writeFile(path.join(src, 'nested', 'note.txt'), 'from the host\n');
    await fs.symlink('nested/note.txt', path.join(src, 'link'));
    await run('tar', ['-C', src, '-czf', path.join(dir, 'dataset.tar.gz'), '.']);
    await c.createVolumeFromArchive(createReadStream(path.join(dir, 'dataset.tar.gz')), {
      name: 'data',
      size_gb: 1,
    });
    // The overlay base: one shared file.
    const base = path.join(dir, 'base');
    await fs.mkdir(base);
    await fs.writeFile(path.join(base, 'shared.txt'), 'base\n');
    await run('tar', ['-C', base, '-cf', path.join(dir, 'base.tar'), '.']);
    await c.createVolumeFromArchive(createReadStream(path.join(dir, 'base.tar')), {
      name: 'base',
      size_gb: 1,
    });
    await c.createVolume({ name: 'rwvol', size_gb: 1 });
  });

  after(async () => {
    if (d) {
      for (const i of await c.listInstances().catch(() => []))
        await c.deleteInstance(i.id).catch(() => undefined);
      await d.stop();
    }
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('an archive with a ../ entry is refused (400) and creates nothing', async () => {
    const evil = path.join(dir, 'evil');
    await fs.mkdir(evil);
    await fs.writeFile(path.join(evil, 'a'), 'pwned');
    const file = path.join(dir, 'evil.tar');
    await run('tar', ['-C', evil, '-P', '--transform=s,^a$,../escape,', '-cf', file, 'a']);
    await rejectsWith(
      c.createVolumeFromArchive(createReadStream(file), { name: 'evil', size_gb: 1 }),
      'invalid_archive',
    );
    await rejectsWith(c.getVolume('evil'), 'not_found');
    await assert.rejects(fs.access(path.join(dir, 'volumes', '..', 'escape')));
    const left = await fs.readdir(path.join(dir, 'volumes'), { recursive: true });
    assert.equal(
      left.filter((f) => !f.endsWith('.ext4') && f !== '.staging').length,
      0,
      left.join(', '),
    );
  });

  test('a bad mount path is a 400 at create', async () => {
    for (const mount_path of ['/proc', '/dev/x', '/', 'data', '/a/../b'])
      await rejectsWith(
        c.createInstance({ image, volumes: [{ volume_id: 'data', mount_path }] }),
        'invalid_argument',
      );
    assert.deepEqual(await c.listInstances(), []);
  });

  test('two racing creates asking for one read-write volume: exactly one wins', async () => {
    const req = (name: string) =>
      c.createInstance({
        image,
        name,
        network: { mode: 'none' },
        cmd: ['sh', '-c', 'while :; do sleep 1; done'],
        volumes: [
          { volume_id: 'data', mount_path: '/data', readonly: true },
          { volume_id: 'rwvol', mount_path: '/rw' },
          { volume_id: 'base', mount_path: '/ov', overlay: true, overlay_size: '64MB' },
        ],
      });
    const results = await Promise.allSettled([req('race-1'), req('race-2')]);
    const won = results.filter((r) => r.status === 'fulfilled');
    const lost = results.filter((r) => r.status === 'rejected');
    assert.equal(won.length, 1, `exactly one create wins: ${JSON.stringify(results)}`);
    const reason = (lost[0] as PromiseRejectedResult).reason as Error;
    assert.ok(isVesselError(reason, 'volume_in_use'), String(reason));
    assert.match(reason.message, /volume "rwvol" is attached read-write/);
    a = (won[0] as PromiseFulfilledResult<Instance>).value;
    assert.deepEqual(
      (await c.listInstances()).map((i) => i.name),
      [a.name],
    );
    assert.deepEqual((await c.getVolume('rwvol')).attachments, [
      { instance_id: a.id, mount_path: '/rw', readonly: false },
    ]);
    await running(a.id);
  });

  test('in the guest: the archive bytes, the symlink, read-only is read-only', async () => {
    const sum = await sh(c, a.id, 'busybox sha256sum /data/big.bin');
    assert.equal(sum.code, 0, sum.err);
    assert.equal(sum.out.split(' ')[0], sha256(bigContent));
    const link = await sh(c, a.id, 'readlink /data/link && cat /data/link');
    assert.equal(link.out, 'nested/note.txt\nfrom the host\n');
    const write = await sh(
      c,
      a.id,
      'echo x > /data/new 2>&1; echo rc=$?; touch /data/nested/note.txt; echo rc=$?',
    );
    assert.match(
      write.out,
      /rc=[1-9]\d*\nrc=[1-9]/,
      `writes to a read-only volume fail: ${write.out}${write.err}`,
    );
    const mounts = await sh(c, a.id, 'grep -E " /(data|rw|ov) " /proc/mounts');
    assert.match(mounts.out, / \/data ext4 ro[ ,]/);
    assert.match(mounts.out, / \/rw ext4 rw[ ,]/);
    assert.match(mounts.out, / \/ov overlay rw[ ,]/);
    const rw = await sh(
      c,
      a.id,
      'echo kept > /rw/file && echo A > /ov/mine && sync && cat /ov/shared.txt',
    );
    assert.equal(rw.code, 0, rw.err);
    assert.equal(rw.out, 'base\n');
  });

  test('delete is refused while attached (409)', async () => {
    await rejectsWith(c.deleteVolume('data'), 'volume_in_use', new RegExp(a.id));
    assert.equal((await c.getVolume('data')).name, 'data');
  });

  test('overlay: each instance sees its own writes, not the other’s; the base is unchanged', async () => {
    b = await c.createInstance({
      image,
      name: 'ov-b',
      network: { mode: 'none' },
      cmd: ['sh', '-c', 'while :; do sleep 1; done'],
      volumes: [{ volume_id: 'base', mount_path: '/ov', overlay: true, overlay_size: '64MB' }],
    });
    await running(b.id);
    const inB = await sh(
      c,
      b.id,
      'cat /ov/shared.txt; cat /ov/mine 2>/dev/null || echo none; echo B > /ov/mine; echo changed > /ov/shared.txt; sync',
    );
    assert.equal(inB.out, 'base\nnone\n');
    const inA = await sh(c, a.id, 'cat /ov/mine /ov/shared.txt');
    assert.equal(inA.out, 'A\nbase\n');
    const base = await c.getVolume('base');
    const disk = path.join(dir, 'volumes', `${base.id}.ext4`);
    const ls = await run('debugfs', ['-R', 'ls -p /', disk]);
    assert.doesNotMatch(ls.stdout, /\/mine\//);
    assert.equal((await run('debugfs', ['-R', 'cat /shared.txt', disk])).stdout, 'base\n');
    // Standby and restore keep the attachments and the private layer (same disks).
    await c.instanceAction(b.id, 'standby');
    await c.instanceAction(b.id, 'restore');
    await running(b.id);
    assert.equal((await sh(c, b.id, 'cat /ov/mine')).out, 'B\n');
    assert.deepEqual(
      base.attachments.map((x) => [x.instance_id, x.readonly, x.overlay]).sort(),
      [
        [a.id, true, true],
        [b.id, true, true],
      ].sort(),
    );
  });

  test('read-write data survives rm and is seen by the next instance (attached while stopped)', async () => {
    await c.deleteInstance(a.id);
    assert.deepEqual((await c.getVolume('rwvol')).attachments, []);
    await rejectsWith(
      c.attachVolume(b.id, 'rwvol', { mount_path: '/rw' }),
      'conflict',
      /needs it Stopped/,
    );
    await c.stopInstance(b.id, 30);
    await c.attachVolume(b.id, 'rwvol', { mount_path: '/rw' });
    // A fork cannot share the read-write volume.
    await rejectsWith(c.forkInstance(b.id, 'ov-b-fork'), 'volume_in_use', /"rwvol"/);
    await c.startInstance(b.id);
    await running(b.id);
    const r = await sh(c, b.id, 'cat /rw/file /ov/mine /ov/shared.txt');
    assert.equal(r.code, 0, r.err);
    // rwvol's data outlived A; B's private layer outlived B's reboot.
    assert.equal(r.out, 'kept\nB\nchanged\n');
    await c.stopInstance(b.id, 30);
    await c.detachVolume(b.id, 'rwvol');
    const fork = await c.forkInstance(b.id, 'ov-b-fork');
    assert.deepEqual(
      (await c.getVolume('base')).attachments.map((x) => x.instance_id).sort(),
      [b.id, fork.id].sort(),
    );
    await c.deleteInstance(fork.id);
    await c.deleteInstance(b.id);
    assert.deepEqual((await c.getVolume('base')).attachments, []);
    await c.deleteVolume('rwvol');
    await rejectsWith(c.getVolume('rwvol'), 'not_found');
  });

  test('vessel run -v ./dir:/data imports a snapshot copy of a host directory', async () => {
    const host = path.join(dir, 'host-dir');
    await fs.mkdir(host);
    await fs.writeFile(path.join(host, 'x.txt'), 'from the host dir\n');
    const r = await run(
      process.execPath,
      [
        MAIN_JS,
        '--data-dir',
        dir,
        'run',
        '--rm',
        '--network',
        'none',
        '-v',
        './host-dir:/data:ro',
        image,
        '--',
        'sh',
        '-c',
        'cat /data/x.txt; echo more > /data/y 2>/dev/null || echo ro',
      ],
      { cwd: dir, timeoutMs: 300_000, allowFailure: true },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'from the host dir\nro\n');
    assert.match(
      r.stderr,
      /imported .*host-dir as volume host-dir-[0-9a-f]{6} \(a snapshot copy, not a live share\)/,
    );
    const vols = await c.listVolumes();
    assert.ok(vols.some((v) => v.name.startsWith('host-dir-') && v.attachments.length === 0));
    const help = await d.cli(['run', '--help']);
    assert.match(help.stdout.replace(/\s+/g, ' '), /snapshot copy taken now, not a live share/);
  });
});
