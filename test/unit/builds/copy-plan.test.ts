// COPY layers from a build context: planning from real trees (files, modes,
// symlinks, .dockerignore), the layer tar checked with tar-stream, GNU tar and
// the image unpacker, and hostile sources (.., symlinks leading out of the root).
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import type { ExistingPath } from '../../../src/builds/image-paths.js';
import type { PlanCopyOptions } from '../../../src/builds/copy-model.js';
import { planCopy } from '../../../src/builds/copy-plan.js';
import {
  BIG,
  T1,
  applied,
  dirs,
  gnuList,
  gnuTar,
  ignore,
  layerOf,
  list,
  opts,
  rejects,
  rejectsOnFullDisk,
  useCopyDirs,
  write,
} from '../../helpers/copy-layer.js';

useCopyDirs();

describe('planCopy + writeCopyLayer: COPY from a build context', () => {
  test('COPY . /app/ with .dockerignore: entries, order, modes, owners, symlinks', async () => {
    const plan = await planCopy(opts({ sources: ['.'], dest: '/app/', ignore: ignore() }));
    assert.deepEqual(plan.warnings, []);
    const tar = await layerOf(plan, { uid: 1000, gid: 1001 });
    const entries = await list(tar);
    assert.deepEqual(
      entries.map((e) => e.name),
      [
        'app/',
        'app/.dockerignore',
        'app/Dockerfile',
        'app/a.txt',
        'app/abs-sub',
        'app/b.txt',
        'app/bin/',
        'app/bin/run.sh',
        'app/docs/',
        'app/docs/keep/',
        'app/docs/keep/k.md',
        'app/escape',
        'app/link-in',
        'app/sub/',
        'app/sub/.hidden',
        'app/sub/abs-link',
        'app/sub/deep/',
        'app/sub/deep/big.bin',
        'app/sub/evil',
        'app/sub-link',
      ],
    );
    const by = new Map(entries.map((e) => [e.name, e]));
    assert.ok(entries.every((e) => e.uname === '' && e.uid === 1000 && e.gid === 1001));
    assert.deepEqual(
      [by.get('app/b.txt')!.mode, by.get('app/bin/run.sh')!.mode, by.get('app/sub/')!.mode],
      [0o600, 0o755, 0o750],
    );
    assert.equal(by.get('app/')!.mode, 0o755); // dest/ is created 0755, as BuildKit does
    assert.equal(by.get('app/a.txt')!.mtime, T1.getTime());
    assert.equal(by.get('app/sub/')!.mtime, T1.getTime());
    assert.deepEqual(by.get('app/sub/deep/big.bin')!.data, BIG);
    assert.deepEqual(
      ['app/link-in', 'app/sub/abs-link', 'app/sub/evil', 'app/escape'].map((n) => [
        by.get(n)!.type,
        by.get(n)!.linkname,
      ]),
      [
        ['symlink', 'a.txt'],
        ['symlink', '/etc/passwd'],
        ['symlink', '../../..'],
        ['symlink', '../outside'],
      ],
    );
    // The image unpacker applies it: files land with their content, links stay links.
    const rootfs = await applied(tar);
    assert.equal(await fs.readFile(path.join(rootfs, 'app/a.txt'), 'utf8'), 'hello\n');
    assert.equal(await fs.readlink(path.join(rootfs, 'app/sub/evil')), '../../..');
    assert.equal((await fs.stat(path.join(rootfs, 'app/bin/run.sh'))).mode & 0o777, 0o755);
  });

  test(
    'GNU tar lists the layer the same way',
    { skip: !gnuTar && 'GNU tar is not installed' },
    async () => {
      const plan = await planCopy(
        opts({
          sources: ['bin', 'a.txt', 'link-in'],
          dest: 'dst/',
          workdir: '/srv',
          ignore: ignore(),
        }),
      );
      const listed = await gnuList(await layerOf(plan, { uid: 7, gid: 8 }));
      assert.deepEqual(listed, [
        ['drwxr-xr-x', '0/0', 'srv/'],
        ['drwxr-xr-x', '7/8', 'srv/dst/'],
        ['-rw-r--r--', '7/8', 'srv/dst/a.txt'],
        ['-rw-r--r--', '7/8', 'srv/dst/link-in'], // a top-level symlink source is followed
        ['-rwxr-xr-x', '7/8', 'srv/dst/run.sh'],
      ]);
      const all = await planCopy(opts({ sources: ['.'], dest: '/app/', ignore: ignore() }));
      const whole = await gnuList(await layerOf(all, { uid: 1000, gid: 1001 }));
      assert.equal(whole.length, all.entries.length);
      assert.deepEqual(whole[0], ['drwxr-xr-x', '1000/1001', 'app/']);
      assert.deepEqual(
        whole.find(([, , n]) => n?.startsWith('app/sub/evil')),
        ['lrwxrwxrwx', '1000/1001', 'app/sub/evil -> ../../..'],
      );
    },
  );

  test('a single file goes to dest itself, or into dest/ when it ends in /', async () => {
    const asFile = await planCopy(opts({ sources: ['a.txt'], dest: '/etc/app.conf' }));
    assert.deepEqual(
      asFile.entries.map((e) => [e.type, e.path]),
      [
        ['dir', 'etc'],
        ['file', 'etc/app.conf'],
      ],
    );
    const intoDir = await planCopy(opts({ sources: ['/a.txt'], dest: 'conf/', workdir: '/etc' }));
    assert.deepEqual(
      intoDir.entries.map((e) => [e.type, e.path]),
      [
        ['dir', 'etc'],
        ['dir', 'etc/conf'],
        ['file', 'etc/conf/a.txt'],
      ],
    );
    const dot = await planCopy(opts({ sources: ['a.txt', 'b.txt'], dest: '.', workdir: '/w' }));
    assert.deepEqual(
      dot.entries.map((e) => e.path),
      ['w', 'w/a.txt', 'w/b.txt'],
    );
  });

  test('a directory source copies its contents; a top-level symlink is followed inside the root', async () => {
    const viaLink = await planCopy(opts({ sources: ['sub-link'], dest: '/x' }));
    // Without a trailing `/`, dest is made from the source directory (mode 0750 here).
    assert.deepEqual(viaLink.entries[0], {
      ...viaLink.entries[0],
      path: 'x',
      mode: 0o750,
      role: 'copied',
    });
    assert.deepEqual(
      viaLink.entries.map((e) => e.path),
      ['x', 'x/.hidden', 'x/abs-link', 'x/deep', 'x/deep/big.bin', 'x/evil'],
    );
    // An absolute link target is read from the root, as the image would see it.
    const absolute = await planCopy(opts({ sources: ['abs-sub/.hidden'], dest: '/h' }));
    assert.deepEqual(
      absolute.entries.map((e) => e.path),
      ['h'],
    );
    // A symlinked file source copies the target's content under the link's name.
    const file = await planCopy(opts({ sources: ['link-in'], dest: '/d/' }));
    const names = (await list(await layerOf(file))).map((e) => [e.name, e.type, e.data.toString()]);
    assert.deepEqual(names, [
      ['d/', 'directory', ''],
      ['d/link-in', 'file', 'hello\n'],
    ]);
  });

  test('globs match per path component, hidden files included, sorted', async () => {
    const plan = await planCopy(opts({ sources: ['*.txt', 's?b/.h*'], dest: '/g/' }));
    assert.deepEqual(
      plan.entries.map((e) => e.path),
      ['g', 'g/.hidden', 'g/a.txt', 'g/b.txt'],
    );
    const one = await planCopy(opts({ sources: ['[a]*.txt'], dest: '/one' }));
    assert.deepEqual(
      one.entries.map((e) => e.path),
      ['one'],
    );
  });

  test('several sources need a dest ending in /', async () => {
    await rejects(
      planCopy(opts({ sources: ['*.txt'], dest: '/d' })),
      'invalid_argument',
      /more than one source file needs a destination directory ending in "\/"/,
    );
    await rejects(
      planCopy(opts({ sources: ['a.txt', 'bin'], dest: '/d' })),
      'invalid_argument',
      /ending in "\/"/,
    );
  });

  test('missing, unmatched and ignored sources fail naming the source', async () => {
    await rejects(
      planCopy(opts({ sources: ['nope.txt'], dest: '/' })),
      'invalid_argument',
      /COPY source "nope.txt" does not exist in the build context/,
    );
    await rejects(
      planCopy(opts({ sources: ['*.nomatch'], dest: '/' })),
      'invalid_argument',
      /"\*\.nomatch" matches no files/,
    );
    await rejects(
      planCopy(opts({ sources: ['secret.key'], dest: '/', ignore: ignore() })),
      'invalid_argument',
      /"secret.key" does not exist .*excluded by \.dockerignore/,
    );
    await rejects(
      planCopy(opts({ sources: ['node_modules'], dest: '/', ignore: ignore() })),
      'invalid_argument',
      /excluded by \.dockerignore/,
    );
    await rejects(
      planCopy(opts({ sources: ['[bad'], dest: '/' })),
      'invalid_argument',
      /syntax error in pattern/,
    );
  });

  test('hostile sources: .. and symlinks leading out of the root are refused', async () => {
    await rejects(
      planCopy(opts({ sources: ['../outside/secret'], dest: '/' })),
      'invalid_argument',
      /outside the build context/,
    );
    await rejects(
      planCopy(opts({ sources: ['sub/../../outside'], dest: '/' })),
      'invalid_argument',
      /outside the build context/,
    );
    await rejects(
      planCopy(opts({ sources: ['escape/secret'], dest: '/' })),
      'invalid_argument',
      /leads outside the build context through a symlink/,
    );
    await rejects(
      planCopy(opts({ sources: ['sub/evil/outside'], dest: '/' })),
      'invalid_argument',
      /leads outside/,
    );
    await rejects(
      planCopy(
        opts({
          sources: ['x'],
          dest: '/',
          rootLabel: 'stage "build"',
          root: path.join(dirs.ctx, 'sub'),
        }),
      ),
      'invalid_argument',
      /in stage "build"/,
    );
  });

  test('contentHash: stable across mtimes, changes with content, mode and layout', async () => {
    const tree = path.join(dirs.base, 'hash-tree');
    await write(tree, 'f', 'one');
    const hashOf = async (o: Partial<PlanCopyOptions> = {}): Promise<string> =>
      (await planCopy(opts({ root: tree, sources: ['.'], dest: '/h/', ...o }))).contentHash;
    const h1 = await hashOf();
    assert.match(h1, /^sha256:[0-9a-f]{64}$/);
    await fs.utimes(path.join(tree, 'f'), new Date(), new Date());
    assert.equal(await hashOf(), h1);
    assert.notEqual(await hashOf({ dest: '/other/' }), h1);
    await fs.chmod(path.join(tree, 'f'), 0o600);
    const h2 = await hashOf();
    assert.notEqual(h2, h1);
    await fs.writeFile(path.join(tree, 'f'), 'two');
    assert.notEqual(await hashOf(), h2);
  });

  test('a source that changes between planning and writing fails with conflict', async () => {
    const tree = path.join(dirs.base, 'changing');
    await write(tree, 'f', 'abc');
    const plan = await planCopy(opts({ root: tree, sources: ['f'], dest: '/f' }));
    await fs.writeFile(path.join(tree, 'f'), 'abcdef');
    await rejects(layerOf(plan), 'conflict', /changed while the layer was being built/);
    await fs.writeFile(path.join(tree, 'f'), 'xyz');
    await rejects(layerOf(plan), 'conflict', /changed while/);
  });

  test('a failing output stream fails the write instead of hanging', async () => {
    const plan = await planCopy(opts({ sources: ['sub'], dest: '/s/' }));
    await rejectsOnFullDisk(plan);
  });

  test('--chmod applies to copied files and directories, not links or parents', async () => {
    const plan = await planCopy(
      opts({ sources: ['bin', 'sub', 'link-in'], dest: '/usr/local/bin/' }),
    );
    const entries = await list(await layerOf(plan, { uid: 0, gid: 0, chmod: 0o700 }));
    const modes = Object.fromEntries(entries.map((e) => [e.name, e.mode]));
    assert.deepEqual(
      [
        'usr/',
        'usr/local/',
        'usr/local/bin/',
        'usr/local/bin/run.sh',
        'usr/local/bin/deep/',
        'usr/local/bin/abs-link',
        'usr/local/bin/link-in', // a top-level symlink source is followed: a file
      ].map((n) => modes[n]),
      [0o755, 0o755, 0o755, 0o700, 0o700, 0o777, 0o700],
    );
  });

  test('existing directories of the image keep their mode and owner (/tmp stays 1777)', async () => {
    const image: Record<string, ExistingPath> = {
      '/tmp': { isDir: true, mode: 0o1777, uid: 0, gid: 0, mtime: T1 },
      '/home': { isDir: true, mode: 0o755, uid: 0, gid: 0, mtime: T1 },
      '/home/app': { isDir: true, mode: 0o700, uid: 1000, gid: 1000, mtime: T1 },
    };
    const existing = (p: string): ExistingPath | undefined => image[p];
    const tmp = await planCopy(opts({ sources: ['a.txt'], dest: '/tmp/', existing }));
    const e1 = await list(await layerOf(tmp, { uid: 5, gid: 5 }));
    assert.deepEqual(
      e1.map((e) => [e.name, e.mode, e.uid]),
      [
        ['tmp/', 0o1777, 0],
        ['tmp/a.txt', 0o644, 5],
      ],
    );
    // No trailing slash, but dest is an existing directory: the file goes into it.
    const home = await planCopy(opts({ sources: ['a.txt'], dest: '/home/app', existing }));
    const e2 = await list(await layerOf(home));
    assert.deepEqual(
      e2.map((e) => [e.name, e.mode, e.uid]),
      [
        ['home/', 0o755, 0],
        ['home/app/', 0o700, 1000],
        ['home/app/a.txt', 0o644, 0],
      ],
    );
  });

  test(
    'long and non-ASCII names and large ids use pax records',
    { skip: !gnuTar && 'GNU tar is not installed' },
    async () => {
      const tree = path.join(dirs.base, 'long');
      const long = `${'d'.repeat(80)}/${'e'.repeat(80)}/${'f'.repeat(120)}.txt`;
      await write(tree, long, 'L');
      await write(tree, 'ünïcödé.txt', 'U');
      await fs.symlink('x'.repeat(150), path.join(tree, 'longlink'));
      const plan = await planCopy(opts({ root: tree, sources: ['.'], dest: '/p/' }));
      const tar = await layerOf(plan, { uid: 3_000_000, gid: 70_000 });
      const names = (await list(tar)).map((e) => [e.name, e.uid, e.gid]);
      assert.ok(names.some(([n]) => n === `p/${long}`));
      assert.ok(names.some(([n]) => n === 'p/ünïcödé.txt'));
      assert.ok(names.every(([, u, g]) => u === 3_000_000 && g === 70_000));
      const listed = await gnuList(tar);
      assert.ok(listed.some(([, owner, n]) => owner === '3000000/70000' && n === `p/${long}`));
      assert.ok(listed.some(([, , n]) => n === `p/longlink -> ${'x'.repeat(150)}`));
    },
  );
});
