// COPY into an image with symlinked directories (merged /usr): `resolveInImage`
// follows the image's links as the kernel would, and the layer writes under
// their real paths without replacing them.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import type { CopyPlan } from '../../../src/builds/copy-model.js';
import { planCopy } from '../../../src/builds/copy-plan.js';
import { resolveInImage, type ExistingPath } from '../../../src/builds/image-paths.js';
import {
  T1,
  applied,
  layerOf,
  mergedUsr,
  opts,
  rejects,
  useCopyDirs,
} from '../../helpers/copy-layer.js';

useCopyDirs();

describe('COPY into an image with symlinked directories (merged /usr)', () => {
  const dir = (mode = 0o755, uid = 0): ExistingPath => ({
    isDir: true,
    mode,
    uid,
    gid: uid,
    mtime: T1,
  });
  const link = (linkTarget: string): ExistingPath => ({
    isDir: false,
    mode: 0o777,
    uid: 0,
    gid: 0,
    mtime: T1,
    linkTarget,
  });
  const image: Record<string, ExistingPath> = {
    '/usr': dir(),
    '/usr/bin': dir(0o755),
    '/usr/lib': dir(),
    '/usr/local': dir(),
    '/usr/share/zoneinfo/UTC': { isDir: false, mode: 0o644, uid: 0, gid: 0, mtime: T1 },
    '/etc': dir(),
    '/bin': link('usr/bin'),
    '/sbin': link('bin'), // a chain: /sbin -> bin -> usr/bin
    '/usr/local/etc': link('/etc'), // an absolute target restarts at the root
    '/lib': link('../../../usr/lib'), // `..` stops at the root
    '/etc/localtime': link('/usr/share/zoneinfo/UTC'), // a link to a file
    '/dangling': link('nowhere'),
    '/loop-a': link('loop-b'),
    '/loop-b': link('/loop-a'),
  };
  const existing = (p: string): ExistingPath | undefined => image[p];
  const paths = (plan: CopyPlan): [string, string][] => plan.entries.map((e) => [e.type, e.path]);

  test('resolveInImage follows the image links like the kernel, the last one only to a directory', () => {
    const cases: [string, string][] = [
      ['', ''],
      ['bin', 'usr/bin'],
      ['bin/', 'usr/bin'],
      ['bin/tool', 'usr/bin/tool'],
      ['sbin/tool', 'usr/bin/tool'],
      ['usr/local/etc/app.conf', 'etc/app.conf'],
      ['lib/x', 'usr/lib/x'],
      ['bin/../etc', 'usr/etc'], // `..` after a link leaves the link's target, as the kernel does
      ['etc/localtime', 'etc/localtime'],
      ['dangling', 'dangling'],
      ['new/dir', 'new/dir'],
    ];
    for (const [rel, want] of cases) assert.equal(resolveInImage(existing, rel), want, rel);
    for (const rel of ['loop-a', 'loop-b/x']) {
      assert.throws(
        () => resolveInImage(existing, rel),
        (err: unknown) =>
          isVesselError(err, 'invalid_argument') &&
          /too many levels of symbolic links/.test(err.message),
        rel,
      );
    }
  });

  test('COPY f /bin/ writes usr/bin/f and keeps the /bin link', async () => {
    const plan = await planCopy(opts({ sources: ['a.txt'], dest: '/bin/', existing }));
    assert.deepEqual(paths(plan), [
      ['dir', 'usr'],
      ['dir', 'usr/bin'],
      ['file', 'usr/bin/a.txt'],
    ]);
    const rootfs = await applied(await layerOf(plan), mergedUsr);
    assert.equal(await fs.readlink(path.join(rootfs, 'bin')), 'usr/bin');
    assert.equal(await fs.readFile(path.join(rootfs, 'bin/a.txt'), 'utf8'), 'hello\n');
  });

  test('COPY f /bin: the link leads to a directory, so the file goes into it', async () => {
    const plan = await planCopy(opts({ sources: ['a.txt'], dest: '/bin', existing }));
    assert.deepEqual(paths(plan), [
      ['dir', 'usr'],
      ['dir', 'usr/bin'],
      ['file', 'usr/bin/a.txt'],
    ]);
  });

  test('a chain of links, an absolute target, a relative dest and a directory source', async () => {
    const chain = await planCopy(opts({ sources: ['a.txt'], dest: '/sbin/', existing }));
    assert.deepEqual(paths(chain).at(-1), ['file', 'usr/bin/a.txt']);
    const absolute = await planCopy(
      opts({ sources: ['a.txt'], dest: '/usr/local/etc/app.conf', existing }),
    );
    assert.deepEqual(paths(absolute), [
      ['dir', 'etc'],
      ['file', 'etc/app.conf'],
    ]);
    const relative = await planCopy(
      opts({ sources: ['bin'], dest: 'tools/', workdir: '/bin', existing }),
    );
    assert.deepEqual(paths(relative), [
      ['dir', 'usr'],
      ['dir', 'usr/bin'],
      ['dir', 'usr/bin/tools'],
      ['file', 'usr/bin/tools/run.sh'],
    ]);
  });

  test('a dest that is a link to a file is replaced by the file, not written through', async () => {
    const plan = await planCopy(opts({ sources: ['a.txt'], dest: '/etc/localtime', existing }));
    assert.deepEqual(paths(plan), [
      ['dir', 'etc'],
      ['file', 'etc/localtime'],
    ]);
  });

  test('a symlink loop in the image fails the step', async () => {
    await rejects(
      planCopy(opts({ sources: ['a.txt'], dest: '/loop-a/', existing })),
      'invalid_argument',
      /path "\/loop-a" of the image: too many levels of symbolic links/,
    );
  });
});
