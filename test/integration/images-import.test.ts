// Import from `docker save` tarballs and OCI layouts, and hostile layers end to end.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { isVesselError } from '../../src/core/errors.js';
import {
  tarDir,
  writeDockerArchive,
  writeOciLayout,
  type EntrySpec,
} from '../helpers/oci-builder.js';
import { makeImageEnv, withDisk, type ImageEnv } from '../helpers/image-env.js';

/** Snapshot of every path under `dir` except `skip`, for "nothing written outside" checks. */
async function listTree(dir: string, skip: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (p === skip) continue;
      out.push(path.relative(dir, p));
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out.sort();
}

describe('image import', () => {
  let env: ImageEnv;
  let work: string;
  before(async () => {
    env = await makeImageEnv();
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-import-'));
  });
  after(async () => {
    await env?.close();
    await fs.rm(work, { recursive: true, force: true });
  });

  test('a docker save tarball imports under its RepoTag', async () => {
    const file = path.join(work, 'app.tar');
    await writeDockerArchive(
      file,
      {
        layers: [
          [
            { path: 'app/', type: 'dir' },
            { path: 'app/main', content: 'docker archive' },
          ],
        ],
        config: { Cmd: ['/app/main'] },
      },
      'example/app:2.0',
    );
    const started = await env.manager.import(createReadStream(file));
    assert.equal(started.name, 'docker.io/example/app:2.0');
    const img = await env.manager.waitForReady(started.name);
    assert.equal(img.source, 'import');
    assert.deepEqual(img.cmd, ['/app/main']);
    await withDisk(
      env.paths.imageDisk(img.digest!.slice(7), img.format!),
      img.format!,
      async (root) => {
        assert.equal(await fs.readFile(path.join(root, 'app/main'), 'utf8'), 'docker archive');
      },
    );
  });

  test('an OCI layout imports; a layout with several images needs a name', async () => {
    const layout = path.join(work, 'layout');
    await writeOciLayout(layout, [
      { ref: 'one', image: { layers: [[{ path: 'which', content: 'one' }]] } },
      { ref: 'two', image: { layers: [[{ path: 'which', content: 'two' }]] } },
    ]);
    await assert.rejects(
      env.manager.import(await tarDir(layout)),
      /holds 2 images \(one, two\); choose one with a name/,
    );
    const img = await env.manager.waitForReady(
      (await env.manager.import(await tarDir(layout), 'local/pick:two')).name,
    );
    assert.equal(img.name, 'docker.io/local/pick:two');
    await withDisk(
      env.paths.imageDisk(img.digest!.slice(7), img.format!),
      img.format!,
      async (root) => {
        assert.equal(await fs.readFile(path.join(root, 'which'), 'utf8'), 'two');
      },
    );
  });

  test('garbage and unsafe archives are refused with a clear error and leave nothing behind', async () => {
    await assert.rejects(
      env.manager.import(Readable.from([Buffer.from('this is not a tar archive at all')])),
      (err) => isVesselError(err) && err.kind === 'InvalidArgument',
    );
    const pack = tar.pack();
    pack.entry({ name: '../escape.json' }, '{}');
    pack.finalize();
    await assert.rejects(env.manager.import(pack as unknown as Readable), /unsafe path/);
    await assert.rejects(fs.access(path.join(env.paths.tmpDir, '..', 'escape.json')));
    assert.deepEqual(
      await fs.readdir(env.paths.tmpDir),
      [],
      'temporary import directories are removed',
    );
    await assert.rejects(
      env.manager.import(await tarDir(path.join(work, 'layout')), 'Not A Valid Ref'),
      (err) => isVesselError(err, 'invalid_reference'),
    );
  });

  test('hostile layers fail or are neutralised, and nothing is written outside the image directory', async () => {
    const victim = path.join(work, 'victim');
    await fs.mkdir(victim);
    await fs.writeFile(path.join(victim, 'sentinel'), 'untouched');
    const cases: { name: string; entries: EntrySpec[]; expect: 'fail' | 'ready'; code?: string }[] =
      [
        {
          name: 'traversal',
          entries: [{ path: '../../../../../../../../tmp/vessel-pwned-traversal', content: 'x' }],
          expect: 'fail',
          code: 'unsafe_layer',
        },
        {
          name: 'absolute',
          entries: [{ path: '/tmp/vessel-pwned-absolute', content: 'x' }],
          expect: 'ready',
        },
        {
          name: 'symlink-parent',
          entries: [
            { path: 'evil', type: 'symlink', linkname: victim },
            { path: 'evil/pwned', content: 'x' },
          ],
          expect: 'ready',
        },
        {
          name: 'hardlink-escape',
          entries: [
            { path: 'link', type: 'link', linkname: `../../../../../../../..${victim}/sentinel` },
          ],
          expect: 'fail',
          code: 'unsafe_layer',
        },
        {
          name: 'device',
          entries: [
            { path: 'dev/', type: 'dir' },
            { path: 'dev/sda', type: 'block', devmajor: 8, devminor: 0 },
          ],
          expect: 'ready',
        },
      ];
    const before = await listTree(work, env.dir);
    for (const c of cases) {
      const file = path.join(work, `${c.name}.tar`);
      await writeDockerArchive(file, { layers: [c.entries] }, `hostile/${c.name}:1`);
      const img = await env.manager.import(createReadStream(file));
      if (c.expect === 'fail') {
        await assert.rejects(
          env.manager.waitForReady(img.name),
          new RegExp('escapes|outside|unsafe|\\.\\.'),
          c.name,
        );
        assert.equal(env.manager.get(img.name).error_code, c.code, c.name);
      } else {
        const ready = await env.manager.waitForReady(img.name);
        await withDisk(
          env.paths.imageDisk(ready.digest!.slice(7), ready.format!),
          ready.format!,
          async (root) => {
            if (c.name === 'absolute')
              assert.equal(
                await fs.readFile(path.join(root, 'tmp/vessel-pwned-absolute'), 'utf8'),
                'x',
              );
            if (c.name === 'symlink-parent') {
              assert.equal(
                await fs.readFile(path.join(root, victim, 'pwned'), 'utf8'),
                'x',
                'write landed inside the rootfs',
              );
            }
            if (c.name === 'device')
              await assert.rejects(
                fs.access(path.join(root, 'dev/sda')),
                'device node not materialised',
              );
          },
        );
      }
      await fs.rm(file);
    }
    assert.deepEqual(await listTree(work, env.dir), before);
    assert.equal(await fs.readFile(path.join(victim, 'sentinel'), 'utf8'), 'untouched');
    await assert.rejects(fs.access(path.join(victim, 'pwned')));
    await assert.rejects(fs.access('/tmp/vessel-pwned-traversal'));
    await assert.rejects(fs.access('/tmp/vessel-pwned-absolute'));
  });
});

describe('disks in use by other subsystems', () => {
  test('an image disk reported in use survives image rm and gc', async () => {
    const inUse = new Set<string>();
    const env = await makeImageEnv({}, undefined, () => inUse);
    const work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-inuse-'));
    try {
      const file = path.join(work, 'a.tar');
      await writeDockerArchive(file, { layers: [[{ path: 'f', content: 'in use' }]] }, 'use/me:1');
      const img = await env.manager.waitForReady(
        (await env.manager.import(createReadStream(file))).name,
      );
      inUse.add(img.digest!);
      await env.manager.delete(img.name);
      await env.manager.gc();
      await fs.access(env.paths.imageDisk(img.digest!.slice(7), img.format!));
      inUse.clear();
      const r = await env.manager.gc();
      assert.equal(r.removed_disks, 1, 'once nothing uses it, gc takes it');
    } finally {
      await env.close();
      await fs.rm(work, { recursive: true, force: true });
    }
  });
});
