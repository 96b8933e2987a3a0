// The volume manager on a real SQLite file, real mkfs.ext4 and archives made by GNU tar:
// create empty and from archives, containment, size limits (nothing left behind), the
// attachment rules through the store, delete while attached, fork plans and boot disks.
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import { silentLogger } from '../../../src/core/logger.js';
import { Paths } from '../../../src/core/paths.js';
import { run } from '../../../src/core/process.js';
import { openDatabase, type Db } from '../../../src/store/index.js';
import { VolumeManager, type ResolvedMount } from '../../../src/volumes/index.js';

async function rejectsWith(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isVesselError(err), String(err));
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** Files in `dir` and below (to prove nothing was left behind). */
async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true }))
    out.push(path.relative(dir, path.join(e.parentPath, e.name)));
  return out.sort();
}

/** `debugfs -R "cat PATH"` reads a file out of an ext4 image without mounting it. */
async function catFromDisk(disk: string, file: string): Promise<string> {
  return (await run('debugfs', ['-R', `cat ${file}`, disk])).stdout;
}

describe('VolumeManager', () => {
  let dir: string;
  let db: Db;
  let vols: VolumeManager;
  let paths: Paths;

  const instance = (id: string): void => {
    db.prepare(
      `INSERT INTO instances (id, name, image, image_digest, state, kernel, hypervisor, vcpus,
         memory_mib, disk_bytes, guest_json, created_at)
       VALUES (?, ?, 'img', 'sha256:x', 'Stopped', 'k/1', 'qemu', 1, 128, 1, '{}', '2026-01-01')`,
    ).run(id, id);
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-volumes-'));
    paths = new Paths(dir);
    db = openDatabase(paths.database);
    vols = new VolumeManager({ db, paths, logger: silentLogger() });
    await vols.init();
  });

  after(async () => {
    db.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('an empty volume is a sparse ext4 file of size_gb with a record', async () => {
    const v = await vols.create({ name: 'empty', size_gb: 1, tags: { team: 'a' } });
    assert.match(v.id, /^vol-[0-9a-f]{12}$/);
    assert.deepEqual(v.attachments, []);
    const st = await fs.stat(vols.disk(v.id));
    assert.equal(st.size, 1024 ** 3);
    assert.ok(st.blocks * 512 < 64 * 1024 * 1024, `sparse (${st.blocks * 512} bytes used)`);
    const { stdout } = await run('dumpe2fs', ['-h', vols.disk(v.id)]);
    assert.match(stdout, /Filesystem volume name:\s+vessel-volume/);
    assert.deepEqual(vols.get('empty'), v);
    assert.deepEqual(
      vols.list({ tags: { team: 'a' } }).map((x) => x.name),
      ['empty'],
    );
    assert.deepEqual(vols.list({ tags: { team: 'b' } }), []);
    await rejectsWith(vols.create({ name: 'empty', size_gb: 1 }), 'already_exists');
    await rejectsWith(vols.create({ name: 'Bad Name', size_gb: 1 }), 'invalid_argument');
    await rejectsWith(vols.create({ name: 'zero', size_gb: 0 }), 'invalid_argument');
  });

  test('from a GNU tar (.tar, .tar.gz, .tar.zst): files, modes and symlinks are in the disk', async () => {
    const src = path.join(dir, 'src');
    await fs.mkdir(path.join(src, 'sub'), { recursive: true });
    await fs.writeFile(path.join(src, 'hello.txt'), 'hello volume\n');
    await fs.writeFile(path.join(src, 'sub', 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    await fs.symlink('hello.txt', path.join(src, 'link'));
    for (const [flag, ext] of [
      ['', 'tar'],
      ['-z', 'tar.gz'],
      ['--zstd', 'tar.zst'],
    ] as const) {
      const file = path.join(dir, `data.${ext}`);
      await run('tar', ['-C', src, ...(flag ? [flag] : []), '-cf', file, '.']);
      const v = await vols.createFromArchive(createReadStream(file), {
        name: `from-${ext.replace('.', '-')}`,
        size_gb: 1,
      });
      const disk = vols.disk(v.id);
      assert.equal(await catFromDisk(disk, '/hello.txt'), 'hello volume\n', ext);
      const stat = (await run('debugfs', ['-R', 'stat /sub/run.sh', disk])).stdout;
      assert.match(stat, /Mode:\s+0755/, ext);
      const link = (await run('debugfs', ['-R', 'stat /link', disk])).stdout;
      assert.match(link, /Fast link dest: "hello.txt"/, ext);
    }
  });

  test('a hostile ../ entry is refused and nothing is left behind', async () => {
    const work = path.join(dir, 'evil');
    await fs.mkdir(work, { recursive: true });
    await fs.writeFile(path.join(work, 'a'), 'pwned');
    const file = path.join(dir, 'evil.tar');
    // GNU tar keeps the ../ with -P (absolute names).
    await run('tar', ['-C', work, '-P', '--transform=s,^a$,../escape,', '-cf', file, 'a']);
    assert.match((await run('tar', ['-tf', file])).stdout, /^\.\.\/escape$/m);
    const before = await listTree(vols.dir);
    await rejectsWith(
      vols.createFromArchive(createReadStream(file), { name: 'evil', size_gb: 1 }),
      'invalid_archive',
      /escape/,
    );
    assert.deepEqual(await listTree(vols.dir), before);
    await assert.rejects(fs.access(path.join(vols.dir, '..', 'escape')));
    await assert.rejects(fs.access(path.join(dir, 'escape')));
    assert.equal(vols.repo.get('evil'), undefined);
  });

  test('content larger than size_gb is volume_too_small and leaves nothing behind', async () => {
    const before = await listTree(vols.dir);
    // A 1.2 GiB sparse file: tiny on the host, 1.2 GiB of tar content.
    const big = path.join(dir, 'big');
    await fs.mkdir(big, { recursive: true });
    const fh = await fs.open(path.join(big, 'blob'), 'w');
    await fh.truncate(Math.round(1.2 * 1024 ** 3));
    await fh.close();
    const tar = Readable.from(
      (async function* () {
        const { spawn } = await import('node:child_process');
        const child = spawn('tar', ['-C', big, '-cf', '-', 'blob'], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        for await (const chunk of child.stdout) yield chunk as Buffer;
      })(),
    );
    await rejectsWith(
      vols.createFromArchive(tar, { name: 'toobig', size_gb: 1 }),
      'volume_too_small',
      /1 GiB/,
    );
    assert.deepEqual(await listTree(vols.dir), before);
    assert.equal(vols.repo.get('toobig'), undefined);
    await fs.rm(big, { recursive: true });
  });

  test('a body that is not an archive is invalid_archive', async () => {
    await rejectsWith(
      vols.createFromArchive(Readable.from([Buffer.from('just some text, not a tar')]), {
        name: 'text',
        size_gb: 1,
      }),
      'invalid_archive',
    );
  });

  test('attachments: one read-write or many read-only; delete refused while attached', async () => {
    const v = await vols.create({ name: 'shared', size_gb: 1 });
    for (const id of ['i1', 'i2', 'i3']) instance(id);
    const [ro] = vols.resolve([{ volume_id: 'shared', mount_path: '/data', readonly: true }]);
    const [rw] = vols.resolve([{ volume_id: v.id, mount_path: '/data' }]);
    vols.attach('i1', [ro!]);
    vols.attach('i2', [ro!]);
    assert.throws(
      () => vols.attach('i3', [rw!]),
      (e: unknown) => isVesselError(e, 'volume_in_use'),
    );
    assert.deepEqual(
      vols.get('shared').attachments.map((a) => [a.instance_id, a.readonly]),
      [
        ['i1', true],
        ['i2', true],
      ],
    );
    await rejectsWith(vols.delete('shared'), 'volume_in_use', /i1, i2/);
    await vols.detach('i1', 'shared');
    // Deleting an instance row drops its attachments (ON DELETE CASCADE).
    db.prepare('DELETE FROM instances WHERE id = ?').run('i2');
    assert.deepEqual(vols.get('shared').attachments, []);
    vols.attach('i3', [rw!]);
    assert.throws(
      () => vols.attach('i1', [ro!]),
      (e: unknown) => isVesselError(e, 'volume_in_use'),
    );
    // A fork of an instance with a read-write volume is refused, naming it.
    assert.throws(
      () => vols.forkPlan('i3', 'f1'),
      (e: unknown) => isVesselError(e, 'volume_in_use') && /"shared"/.test((e as Error).message),
    );
    await vols.detach('i3', 'shared');
    await vols.delete('shared');
    await assert.rejects(fs.access(vols.disk(v.id)));
    await rejectsWith(vols.delete('shared'), 'not_found');
  });

  test('overlay attachments: fork plan copies the upper disk; boot disks in mount-path order', async () => {
    await vols.create({ name: 'base', size_gb: 1 });
    await vols.create({ name: 'extra', size_gb: 1 });
    instance('o1');
    instance('f1');
    const mounts: ResolvedMount[] = vols.resolve([
      { volume_id: 'extra', mount_path: '/z', readonly: true },
      { volume_id: 'base', mount_path: '/a', overlay: true, overlay_size: '64MB' },
    ]);
    assert.equal(mounts[1]!.readonly, true);
    assert.equal(mounts[1]!.overlay_size, 64 * 1024 * 1024);
    vols.attach('o1', mounts);
    const boot = await vols.prepareBoot('o1');
    assert.deepEqual(
      boot.guest.map((g) => [
        g.mount_path,
        g.device_serial,
        g.overlay_device_serial ?? null,
        g.readonly,
      ]),
      [
        ['/a', 'vessel-vol-0', 'vessel-volo-0', false],
        ['/z', 'vessel-vol-1', null, true],
      ],
    );
    assert.deepEqual(
      boot.disks.map((d) => [d.serial, d.readonly]),
      [
        ['vessel-vol-0', true],
        ['vessel-volo-0', false],
        ['vessel-vol-1', true],
      ],
    );
    const upper = vols.upperDisk('o1', vols.get('base').id);
    assert.equal((await fs.stat(upper)).size, 64 * 1024 * 1024);
    const plan = vols.forkPlan('o1', 'f1');
    assert.deepEqual(plan, [{ from: upper, to: vols.upperDisk('f1', vols.get('base').id) }]);
    vols.forkAttach('o1', 'f1');
    assert.equal(vols.get('base').attachments.length, 2);
    assert.throws(
      () => vols.resolve([{ volume_id: 'base', mount_path: '/proc/x' }]),
      (e: unknown) => isVesselError(e, 'invalid_argument'),
    );
    assert.throws(
      () => vols.resolve([{ volume_id: 'nope', mount_path: '/x' }]),
      (e: unknown) => isVesselError(e, 'not_found'),
    );
  });

  test('a journal left by a read-write user is replayed before a read-only boot', async () => {
    const v = await vols.create({ name: 'journaled', size_gb: 1 });
    const disk = vols.disk(v.id);
    // Mark the superblock as needing recovery, as a guest killed mid-use leaves it.
    await run('debugfs', ['-w', '-R', 'feature needs_recovery', disk]);
    const fh = await fs.open(disk, 'r');
    const sb = Buffer.alloc(4);
    await fh.read(sb, 0, 4, 1024 + 0x60);
    await fh.close();
    assert.ok((sb.readUInt32LE(0) & 4) !== 0, 'needs_recovery set');
    instance('r1');
    vols.attach('r1', vols.resolve([{ volume_id: 'journaled', mount_path: '/j', readonly: true }]));
    await vols.prepareBoot('r1');
    const { stdout } = await run('dumpe2fs', ['-h', disk]);
    assert.doesNotMatch(stdout, /needs_recovery/);
  });
});
