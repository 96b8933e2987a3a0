// ADD: local archives (plain, gzip, zstd, GNU tar's) extracted into dest with
// their owners, other files copied, and hostile archives (absolute and escaping
// entries, links leading out, gzip bombs, truncated or changing archives).
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { CopyPlan, PlanCopyOptions } from '../../../src/builds/copy-model.js';
import { planCopy } from '../../../src/builds/copy-plan.js';
import type { ExistingPath } from '../../../src/builds/image-paths.js';
import {
  BIG,
  T1,
  applied,
  dirs,
  execFileAsync,
  gnuList,
  gnuTar,
  layerOf,
  list,
  mergedUsr,
  opts,
  rejects,
  rejectsOnFullDisk,
  tarOf,
  useCopyDirs,
  write,
  written,
  zstdTool,
  type TarEntry,
} from '../../helpers/copy-layer.js';

useCopyDirs();

describe('ADD', () => {
  let archives = '';
  const PKG: TarEntry[] = [
    { name: 'pkg/', type: 'directory', mode: 0o755 },
    { name: 'pkg/README', body: 'readme' },
    { name: 'pkg/bin/', type: 'directory', mode: 0o755 },
    { name: 'pkg/bin/tool', mode: 0o755, body: '#!/bin/sh\n' },
    { name: 'pkg/tool-link', type: 'symlink', linkname: 'bin/tool' },
  ].map((e) => ({ uid: 1234, gid: 5678, ...e }) as TarEntry);

  before(async () => {
    archives = path.join(dirs.base, 'archives');
    await write(archives, 'text.gz', gzipSync('just text, not a tar'));
    await write(archives, 'plain.txt', 'plain');
    const pkg = await tarOf(PKG);
    await write(archives, 'pkg.tar', pkg);
    await write(archives, 'pkg.tgz', gzipSync(pkg));
    // Only their magic numbers are read: ADD refuses them before decompressing anything.
    await write(archives, 'pkg.tar.xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 4]));
    await write(archives, 'pkg.tar.bz2', Buffer.from('BZh91AY&SY'));
  });

  const add = (
    sources: string[],
    dest: string,
    o: Partial<PlanCopyOptions> = {},
  ): Promise<CopyPlan> =>
    planCopy(opts({ root: archives, sources, dest, allowTarExtract: true, ...o }));

  /** ADD <file> /opt: the pkg tree under /opt with the archive's owners and modes. */
  async function addsPkg(file: string): Promise<Buffer> {
    const plan = await add([file], '/opt');
    const tar = await layerOf(plan, { uid: 99, gid: 99 });
    const entries = await list(tar);
    assert.deepEqual(
      entries.map((e) => [e.name, e.type, e.uid, e.gid]),
      [
        ['opt/', 'directory', 0, 0],
        ['opt/pkg/', 'directory', 1234, 5678],
        ['opt/pkg/README', 'file', 1234, 5678],
        ['opt/pkg/bin/', 'directory', 1234, 5678],
        ['opt/pkg/bin/tool', 'file', 1234, 5678],
        ['opt/pkg/tool-link', 'symlink', 1234, 5678],
      ],
    );
    assert.equal(entries.find((e) => e.name === 'opt/pkg/bin/tool')!.mode, 0o755);
    const rootfs = await applied(tar);
    assert.equal(await fs.readFile(path.join(rootfs, 'opt/pkg/README'), 'utf8'), 'readme');
    assert.equal(await fs.readlink(path.join(rootfs, 'opt/pkg/tool-link')), 'bin/tool');
    return tar;
  }

  for (const file of ['pkg.tar', 'pkg.tgz']) {
    test(`an archive (${file}) is extracted into dest, keeping its owners`, async () => {
      await addsPkg(file);
    });
  }

  test(
    'a zstd-compressed archive is extracted',
    { skip: !zstdTool && 'the zstd tool is not installed' },
    async () => {
      const tar = path.join(archives, 'pkg.tar');
      await execFileAsync('zstd', ['-q', '-f', tar, '-o', `${tar}.zst`]);
      await addsPkg('pkg.tar.zst');
    },
  );

  test(
    'an archive GNU tar wrote is extracted, and GNU tar lists the layer',
    { skip: !gnuTar && 'GNU tar is not installed' },
    async () => {
      const src = path.join(dirs.base, 'pkg-src');
      await write(src, 'pkg/bin/tool', '#!/bin/sh\n', 0o755);
      await write(src, 'pkg/README', 'readme');
      await fs.symlink('bin/tool', path.join(src, 'pkg/tool-link'));
      await execFileAsync('tar', [
        ...['--owner=1234', '--group=5678', '--numeric-owner', '--sort=name', '-C', src],
        ...['-czf', path.join(archives, 'gnu.tgz'), 'pkg'],
      ]);
      const listed = await gnuList(await addsPkg('gnu.tgz'));
      assert.deepEqual(listed.map(([, owner, n]) => `${owner} ${n}`).slice(0, 3), [
        '0/0 opt/',
        '1234/5678 opt/pkg/',
        '1234/5678 opt/pkg/README',
      ]);
    },
  );

  test('xz and bzip2 archives are refused with a clear error', async () => {
    await rejects(
      add(['pkg.tar.xz'], '/opt/'),
      'invalid_argument',
      /ADD of "pkg.tar.xz": xz-compressed files are not supported/,
    );
    await rejects(
      add(['pkg.tar.bz2'], '/opt/'),
      'invalid_argument',
      /ADD of "pkg.tar.bz2": bzip2-compressed files are not supported/,
    );
  });

  test('a gzip file that is not a tar, and any file under COPY, are copied as files', async () => {
    const gz = await add(['text.gz'], '/d/');
    assert.deepEqual(
      gz.entries.map((e) => [e.type, e.path]),
      [
        ['dir', 'd'],
        ['file', 'd/text.gz'],
      ],
    );
    const copied = await planCopy(opts({ root: archives, sources: ['pkg.tgz'], dest: '/d/' }));
    assert.deepEqual(
      copied.entries.map((e) => e.type),
      ['dir', 'file'],
    );
    const plain = await add(['plain.txt'], '/p.txt');
    assert.deepEqual(
      (await list(await layerOf(plain, { uid: 3, gid: 4 }))).map((e) => [e.name, e.uid]),
      [['p.txt', 3]],
    );
  });

  test('ADD of a URL is refused', async () => {
    await rejects(
      add(['https://example.com/a.tgz'], '/'),
      'invalid_argument',
      /ADD of a URL is not supported: https:\/\/example.com\/a.tgz; use RUN curl/,
    );
  });

  /** Write `entries` as archives/<name>.tar; returns the file name. */
  async function archive(name: string, entries: TarEntry[]): Promise<string> {
    const file = `${name}.tar`;
    await fs.writeFile(path.join(archives, file), await tarOf(entries));
    return file;
  }

  const refused: [string, TarEntry[], RegExp][] = [
    [
      'dotdot',
      [{ name: '../../etc/cron.d/x', body: 'evil' }],
      /layer entry "\.\.\/\.\.\/etc\/cron\.d\/x": path escapes the root filesystem/,
    ],
    ['dotdot-mid', [{ name: 'a/../../x', body: 'evil' }], /path escapes the root filesystem/],
    [
      'symlink-out',
      [{ name: 'l', type: 'symlink', linkname: '../../..' }],
      /symlink to "..\/..\/..", outside the destination/,
    ],
    [
      'through-symlink',
      [
        { name: 'l', type: 'symlink', linkname: '/etc' },
        { name: 'l/passwd', body: 'root::0:0::/:/bin/sh' },
      ],
      /"l\/passwd" is written through a symlink/,
    ],
    [
      'hardlink-out',
      [{ name: 'h', type: 'link', linkname: '../x' }],
      /hard link target escapes the root filesystem/,
    ],
    [
      'hardlink-missing',
      [{ name: 'h', type: 'link', linkname: 'nothere' }],
      /hard link to "nothere", which is not an earlier file/,
    ],
  ];
  for (const [name, entries, message] of refused) {
    test(`hostile archive refused when the layer is written: ${name}`, async () => {
      const plan = await add([await archive(name, entries)], '/opt/');
      await rejects(layerOf(plan), 'invalid_argument', message);
    });
  }

  test('absolute names land under dest; absolute link targets and hard links inside are kept; devices skipped', async () => {
    const file = await archive('absolute', [
      { name: '/etc/passwd', body: 'not the host passwd' },
      { name: 'abs', type: 'symlink', linkname: '/usr/bin/env' },
      { name: 'hard', type: 'link', linkname: '/etc/passwd' },
      { name: 'null', type: 'character-device', devmajor: 1, devminor: 3 },
      { name: 'big-id', uid: 3_000_000, pax: { uid: '3000000' }, body: 'x' },
    ]);
    const plan = await add([file], '/opt/');
    assert.deepEqual(plan.warnings, []);
    const { tar, warnings } = await written(plan);
    assert.deepEqual(warnings, ['skipped character-device "null" of archive "absolute.tar"']);
    assert.deepEqual(
      (await list(tar)).map((e) => [e.name, e.type, e.linkname ?? null, e.uid]),
      [
        ['opt/', 'directory', null, 0],
        ['opt/etc/', 'directory', null, 0],
        ['opt/etc/passwd', 'file', null, 0],
        ['opt/abs', 'symlink', '/usr/bin/env', 0],
        ['opt/hard', 'link', 'opt/etc/passwd', 0],
        ['opt/big-id', 'file', null, 3_000_000],
      ],
    );
    const rootfs = await applied(tar);
    assert.equal(await fs.readFile(path.join(rootfs, 'opt/hard'), 'utf8'), 'not the host passwd');
  });

  test('implicit parents the image already has are not written (/tmp stays 1777)', async () => {
    const file = await archive('no-dirs', [
      { name: 'tmp/x', body: 'x' },
      { name: 'home/app/.bashrc', body: 'rc' },
      { name: 'bin/tool', body: 'tool' },
      { name: 'new/f', body: 'n' },
    ]);
    const image: Record<string, ExistingPath> = {
      '/tmp': { isDir: true, mode: 0o1777, uid: 0, gid: 0, mtime: T1 },
      '/home': { isDir: true, mode: 0o755, uid: 0, gid: 0, mtime: T1 },
      '/home/app': { isDir: true, mode: 0o700, uid: 1000, gid: 1000, mtime: T1 },
      '/usr': { isDir: true, mode: 0o755, uid: 0, gid: 0, mtime: T1 },
      '/usr/bin': { isDir: true, mode: 0o755, uid: 0, gid: 0, mtime: T1 },
      '/bin': { isDir: false, mode: 0o777, uid: 0, gid: 0, mtime: T1, linkTarget: 'usr/bin' },
    };
    const plan = await add([file], '/', { existing: (p) => image[p] });
    const tar = await layerOf(plan);
    assert.deepEqual(
      (await list(tar)).map((e) => [e.name, e.mode, e.uid]),
      [
        ['tmp/x', 0o644, 0],
        ['home/app/.bashrc', 0o644, 0],
        ['bin/tool', 0o644, 0],
        ['new/', 0o755, 0], // missing in the image: created 0755 root:root
        ['new/f', 0o644, 0],
      ],
    );
    const rootfs = await applied(tar, mergedUsr);
    assert.equal(await fs.readlink(path.join(rootfs, 'bin')), 'usr/bin');
    assert.equal(await fs.readFile(path.join(rootfs, 'usr/bin/tool'), 'utf8'), 'tool');
  });

  test('an archive that unpacks past maxBytes fails with layer_too_large (a gzip bomb)', async () => {
    const bomb = gzipSync(await tarOf([{ name: 'zeros', body: Buffer.alloc(16 * 1024 * 1024) }]));
    assert.ok(bomb.length < 64 * 1024, `the bomb is ${bomb.length} bytes`);
    await write(archives, 'bomb.tgz', bomb);
    // Planning only hashes the archive's bytes: the budget applies when it is extracted.
    const plan = await add(['bomb.tgz'], '/');
    await rejects(
      layerOf(plan, { maxBytes: 1024 * 1024 }),
      'layer_too_large',
      /ADD archive "bomb.tgz" unpacks to more than 1048576 bytes/,
    );
    const entries = await list(await layerOf(plan, { maxBytes: 32 * 1024 * 1024 }));
    assert.deepEqual(
      entries.map((e) => [e.name, e.size]),
      [['zeros', 16 * 1024 * 1024]],
    );
  });

  test('the budget is shared by all the archives of a step', async () => {
    await write(archives, 'half.tar', await tarOf([{ name: 'h', body: Buffer.alloc(600_000) }]));
    await write(archives, 'half2.tar', await tarOf([{ name: 'h2', body: Buffer.alloc(600_000) }]));
    const plan = await add(['half.tar', 'half2.tar'], '/halves/');
    await layerOf(plan, { maxBytes: 1024 * 1024 * 2 });
    await rejects(layerOf(plan, { maxBytes: 1024 * 1024 }), 'layer_too_large', /"half2.tar"/);
  });

  test('an archive that changes between planning and writing fails with conflict', async () => {
    await write(archives, 'changing.tar', await tarOf([{ name: 'a', body: 'one' }]));
    const plan = await add(['changing.tar'], '/c/');
    await write(archives, 'changing.tar', await tarOf([{ name: 'a', body: 'two' }]));
    await rejects(
      layerOf(plan),
      'conflict',
      /ADD archive "changing.tar" changed while the layer was being built/,
    );
  });

  test('an output that fails while an archive is extracted gives its own error', async () => {
    const file = await archive('big', [{ name: 'big', body: BIG }]);
    const plan = await add([file], '/big/');
    await rejectsOnFullDisk(plan);
  });

  test('garbage after a tar header is reported, not extracted', async () => {
    const file = await archive('good', [{ name: 'a', body: 'x'.repeat(1000) }]);
    const buf = await fs.readFile(path.join(archives, file));
    await fs.writeFile(path.join(archives, 'cut.tar'), buf.subarray(0, 700));
    await rejects(
      layerOf(await add(['cut.tar'], '/opt/')),
      'invalid_argument',
      /ADD archive "cut.tar" is not a readable tar archive/,
    );
  });
});
