// Unpacking on a fast staging filesystem (images.unpack_staging_dir), end to end
// with a real ImageManager and a small real tmpfs: an image that fits is
// unpacked there; one that does not, or that turns out bigger on the tmpfs
// than estimated (many small files), ends up unpacked in the data dir; the
// disks are right either way and nothing is left on the tmpfs.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { watch } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar-stream';
import { run } from '../../src/core/process.js';
import { imageConfig, makeLayer, type EntrySpec } from '../helpers/oci-builder.js';
import { makeImageEnv, metricValue, withDisk, type ImageEnv } from '../helpers/image-env.js';

const MiB = 1024 * 1024;
const TMPFS_SIZE = 32 * MiB;
const why = process.getuid?.() !== 0 ? 'needs root to mount a tmpfs' : false;

/** A `docker save`-style archive whose layer files are the given blobs, as they are. */
function archive(tag: string, layers: { blob: Buffer; diffId: string }[]): Readable {
  const pack = tar.pack();
  const names = layers.map((_, i) => `layer${i}/layer.tar`);
  const config = imageConfig(
    { layers: [], config: { Cmd: ['/bin/true'] } },
    layers.map((l) => l.diffId),
  );
  pack.entry(
    { name: 'manifest.json' },
    JSON.stringify([{ Config: 'config.json', RepoTags: [tag], Layers: names }]),
  );
  pack.entry({ name: 'config.json' }, config);
  layers.forEach((l, i) => pack.entry({ name: names[i]! }, l.blob));
  pack.finalize();
  return pack as unknown as Readable;
}

/** One uncompressed tar layer and its diff_id. */
async function tarLayer(entries: EntrySpec[]): Promise<{ blob: Buffer; diffId: string }> {
  const layer = await makeLayer(entries, { compression: 'none' });
  return { blob: layer.blob, diffId: layer.diffId };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('unpack staging on a small tmpfs', { skip: why }, () => {
  let work = '';
  let mnt = '';
  let mounted = false;

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-staging-it-'));
    mnt = path.join(work, 'tmpfs');
    await fs.mkdir(mnt, { mode: 0o700 });
    await run('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_SIZE},mode=0700`, 'tmpfs', mnt]);
    mounted = true;
  });

  after(async () => {
    if (mounted) await run('umount', [mnt]);
    await fs.rm(work, { recursive: true, force: true });
  });

  /** Import an image on a fresh manager; returns where it was unpacked and the file's digest on disk. */
  async function importOn(
    env: ImageEnv,
    tag: string,
    layers: { blob: Buffer; diffId: string }[],
    file: string,
  ): Promise<{ placement: string; onDisk: string; tmpfsUsed: boolean }> {
    // Independent of the metric: did anything appear on the tmpfs during the conversion?
    const names = new Set<string>();
    const watcher = watch(mnt, (_event, name) => names.add(String(name)));
    let img;
    try {
      img = await env.manager.waitForReady((await env.manager.import(archive(tag, layers))).name);
    } finally {
      watcher.close();
    }
    const ours = path.basename(env.paths.unpackStagingDir(mnt));
    assert.ok(
      [...names].every((n) => n === ours),
      `only ${ours} on the tmpfs: ${[...names].join(', ')}`,
    );
    const placements = [];
    for (const location of ['staging_dir', 'data_dir']) {
      for (const reason of ['fits', 'disabled', 'no_room', 'unavailable', 'staging_full']) {
        const n = await metricValue(env.metrics, 'vessel_image_unpacks_total', {
          location,
          reason,
        });
        if (n > 0) placements.push(`${location}/${reason}`);
      }
    }
    assert.equal(placements.length, 1, `one unpack recorded: ${placements.join(', ')}`);
    const onDisk = await withDisk(
      env.paths.imageDisk(img.digest!.slice(7), img.format!),
      img.format!,
      async (root) => sha(await fs.readFile(path.join(root, file))),
    );
    return { placement: placements[0]!, onDisk, tmpfsUsed: names.size > 0 };
  }

  /** What the tmpfs holds (two levels deep). */
  async function tmpfsTree(): Promise<string[]> {
    const out: string[] = [];
    for (const name of await fs.readdir(mnt)) {
      out.push(name);
      const st = await fs.lstat(path.join(mnt, name));
      if (st.isDirectory())
        for (const inner of await fs.readdir(path.join(mnt, name))) out.push(`${name}/${inner}`);
    }
    return out;
  }

  test('an image that fits is unpacked on the tmpfs, and nothing is left there', async () => {
    const content = randomBytes(2 * MiB);
    const env = await makeImageEnv({ unpack_staging_dir: mnt });
    try {
      const layer = await tarLayer([
        { path: 'data', type: 'dir' },
        { path: 'data/blob', content },
      ]);
      const r = await importOn(env, 'staging/fits:1', [layer], 'data/blob');
      assert.equal(r.placement, 'staging_dir/fits');
      assert.ok(r.tmpfsUsed, 'the staging directory appeared on the tmpfs');
      assert.equal(r.onDisk, sha(content));
      assert.deepEqual(await tmpfsTree(), [], 'the tree and the staging directory are gone');
    } finally {
      await env.close();
    }
  });

  test('an image bigger than the tmpfs is unpacked in the data dir', async () => {
    const content = randomBytes(24 * MiB);
    const env = await makeImageEnv({ unpack_staging_dir: mnt });
    try {
      const layer = await tarLayer([{ path: 'big', content }]);
      const gz = { blob: gzipSync(layer.blob, { level: 1 }), diffId: layer.diffId };
      const r = await importOn(env, 'staging/big:1', [gz], 'big');
      assert.equal(r.placement, 'data_dir/no_room');
      assert.equal(r.tmpfsUsed, false, 'nothing was created on the tmpfs');
      assert.equal(r.onDisk, sha(content));
      assert.deepEqual(await tmpfsTree(), []);
    } finally {
      await env.close();
    }
  });

  test('a tmpfs that fills up mid-unpack (the size hint was low) falls back to the data dir', async () => {
    // 10 000 one-byte files: 10 MiB of tar (the estimate fits 32 MiB with its headroom),
    // but tmpfs spends a 4 KiB page on each: ~40 MiB.
    const files: EntrySpec[] = [{ path: 'many', type: 'dir' }];
    for (let i = 0; i < 10_000; i++) files.push({ path: `many/f${i}`, content: String(i % 10) });
    const env = await makeImageEnv({ unpack_staging_dir: mnt });
    try {
      const layer = await tarLayer(files);
      const gz = { blob: gzipSync(layer.blob), diffId: layer.diffId };
      const r = await importOn(env, 'staging/small-files:1', [gz], 'many/f9999');
      assert.equal(r.placement, 'data_dir/staging_full');
      assert.ok(r.tmpfsUsed, 'the first attempt ran on the tmpfs');
      assert.equal(r.onDisk, sha(Buffer.from('9')));
      assert.deepEqual(await tmpfsTree(), [], 'the partial unpack was removed from the tmpfs');
    } finally {
      await env.close();
    }
  });

  test('unpack_staging_dir: null unpacks in the data dir', async () => {
    const env = await makeImageEnv({ unpack_staging_dir: null });
    try {
      const layer = await tarLayer([{ path: 'small', content: 'small' }]);
      const r = await importOn(env, 'staging/off:1', [layer], 'small');
      assert.equal(r.placement, 'data_dir/disabled');
      assert.equal(r.tmpfsUsed, false);
      assert.equal(r.onDisk, sha(Buffer.from('small')));
      assert.deepEqual(await tmpfsTree(), []);
    } finally {
      await env.close();
    }
  });
});
