// Images built by umoci itself (`umoci new`, `insert`, `insert --whiteout`,
// `insert --opaque`), pushed with skopeo to a real registry and pulled by the
// ImageManager; the same layout imported. umoci's layers end right after the
// last entry's data (no padding, no end-of-archive blocks). Then layers cut
// short on purpose: a cut inside an entry fails naming the layer.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { isVesselError } from '../../src/core/errors.js';
import { pushLayout, tarDir, writeOciLayout } from '../helpers/oci-builder.js';
import { missingToolReason } from '../helpers/prereqs.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { withDisk, makeImageEnv, type ImageEnv } from '../helpers/image-env.js';
import type { Image } from '../../src/images/index.js';

const execFileAsync = promisify(execFile);
const BLOCK = 512;

const TOOLS = ['docker-registry', 'skopeo', 'umoci', 'mkfs.erofs', 'fsck.erofs'];
const skip = await missingToolReason(TOOLS, 'docker-registry skopeo umoci erofs-utils');

/** A file the test writes into an umoci source tree, and expects on the disk. */
interface FileSpec {
  content: Buffer;
  mode: number;
}

const sha256 = (buf: Buffer): string => createHash('sha256').update(buf).digest('hex');

/** Layer 1, inserted at `/`. */
const BASE: Record<string, FileSpec> = {
  'etc/keep': { content: Buffer.from('keep me\n'), mode: 0o600 },
  'etc/gone': { content: Buffer.from('removed by a whiteout layer\n'), mode: 0o644 },
  'opt/old/f': { content: Buffer.from('hidden by the opaque layer\n'), mode: 0o644 },
  'opt/top': { content: Buffer.from('also hidden\n'), mode: 0o644 },
  'usr/bin/tool': { content: Buffer.from('#!/bin/sh\necho tool\n'), mode: 0o4755 },
  'usr/lib/blob.bin': { content: randomBytes(300_001), mode: 0o644 },
  'srv/private': { content: Buffer.from('secret'), mode: 0o400 },
};
/** Layer 3, inserted with `--opaque` at `/opt`. */
const OPAQUE: Record<string, FileSpec> = {
  'new/n': { content: Buffer.from('new in layer 3\n'), mode: 0o640 },
  readme: { content: randomBytes(1_000), mode: 0o444 },
};
/** Layer 4, one file inserted at `/etc/motd`. */
const MOTD: FileSpec = { content: Buffer.from('hello from umoci\n'), mode: 0o644 };

async function writeTree(dir: string, files: Record<string, FileSpec>): Promise<void> {
  for (const [rel, f] of Object.entries(files)) {
    await fs.mkdir(path.join(dir, path.dirname(rel)), { recursive: true });
    await fs.writeFile(path.join(dir, rel), f.content);
    await fs.chmod(path.join(dir, rel), f.mode);
  }
}

async function umoci(args: string[]): Promise<void> {
  try {
    await execFileAsync('umoci', args);
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`umoci ${args.join(' ')} failed: ${stderr.trim()}`, { cause: err });
  }
}

/** Build `<layout>:v1` with umoci: four layers and a config change. */
async function buildWithUmoci(work: string): Promise<string> {
  const layout = path.join(work, 'umoci-layout');
  const image = `${layout}:v1`;
  const base = path.join(work, 'base');
  const opaque = path.join(work, 'opaque');
  const motd = path.join(work, 'motd');
  await writeTree(base, BASE);
  await fs.symlink('tool', path.join(base, 'usr/bin/alias'));
  await writeTree(opaque, OPAQUE);
  await fs.writeFile(motd, MOTD.content);
  await fs.chmod(motd, MOTD.mode);
  await umoci(['init', '--layout', layout]);
  await umoci(['new', '--image', image]);
  await umoci(['insert', '--image', image, base, '/']);
  await umoci(['insert', '--image', image, '--whiteout', '/etc/gone']);
  await umoci(['insert', '--image', image, '--opaque', opaque, '/opt']);
  await umoci(['insert', '--image', image, motd, '/etc/motd']);
  await umoci(['config', '--image', image, '--config.cmd', '/usr/bin/tool']);
  return layout;
}

/** The uncompressed tar of every layer of the layout's only image. */
async function layoutLayers(layout: string): Promise<Buffer[]> {
  const blob = (digest: string): Promise<Buffer> =>
    fs.readFile(path.join(layout, 'blobs/sha256', digest.slice('sha256:'.length)));
  const index = JSON.parse((await fs.readFile(path.join(layout, 'index.json'))).toString()) as {
    manifests: { digest: string }[];
  };
  const manifest = JSON.parse((await blob(index.manifests[0]!.digest)).toString()) as {
    layers: { digest: string }[];
  };
  return Promise.all(manifest.layers.map(async (l) => gunzipSync(await blob(l.digest))));
}

async function expectFile(root: string, rel: string, want: FileSpec): Promise<void> {
  const file = path.join(root, rel);
  assert.equal(sha256(await fs.readFile(file)), sha256(want.content), `${rel} content`);
  assert.equal((await fs.stat(file)).mode & 0o7777, want.mode, `${rel} mode`);
}

/** The disk holds exactly what the four umoci layers say. */
async function checkUmociDisk(env: ImageEnv, img: Image): Promise<void> {
  assert.equal(img.status, 'ready');
  assert.deepEqual(img.cmd, ['/usr/bin/tool']);
  const disk = env.paths.imageDisk(img.digest!.slice(7), img.format!);
  await withDisk(disk, img.format!, async (root) => {
    for (const rel of ['etc/keep', 'usr/bin/tool', 'usr/lib/blob.bin', 'srv/private'])
      await expectFile(root, rel, BASE[rel]!);
    assert.equal(await fs.readlink(path.join(root, 'usr/bin/alias')), 'tool');
    await assert.rejects(fs.lstat(path.join(root, 'etc/gone')), 'the whiteout removed etc/gone');
    assert.deepEqual(
      (await fs.readdir(path.join(root, 'opt'))).sort(),
      ['new', 'readme'],
      'the opaque layer hides every lower entry of /opt',
    );
    for (const [rel, f] of Object.entries(OPAQUE)) await expectFile(root, `opt/${rel}`, f);
    await expectFile(root, 'etc/motd', MOTD);
    assert.deepEqual((await fs.readdir(path.join(root, 'etc'))).sort(), ['keep', 'motd']);
  });
}

describe('images built by umoci', { skip }, () => {
  let registry: TestRegistry;
  let env: ImageEnv;
  let work: string;
  let layout: string;

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-umoci-'));
    registry = await startRegistry();
    env = await makeImageEnv();
    layout = await buildWithUmoci(work);
    await pushLayout(layout, 'v1', registry.host, 'umoci/app:v1');
  });

  after(async () => {
    await env?.close();
    await registry?.stop();
    await fs.rm(work, { recursive: true, force: true });
  });

  test('umoci writes layers without end-of-archive blocks (what this suite is about)', async () => {
    const layers = await layoutLayers(layout);
    assert.equal(layers.length, 4);
    const unterminated = layers.filter((tar) => {
      const tail = tar.subarray(Math.max(0, tar.length - 2 * BLOCK));
      return tar.length % BLOCK !== 0 || tail.some((b) => b !== 0);
    });
    assert.ok(unterminated.length > 0, 'at least one layer lacks the two zero blocks');
  });

  test('pulled from the registry: whiteout, opaque dir, contents and modes reach the disk', async () => {
    const name = `${registry.host}/umoci/app:v1`;
    const img = await env.manager.waitForReady(env.manager.pull(name).name, {
      timeoutMs: 60_000,
    });
    await checkUmociDisk(env, img);
  });

  test('the same layout imported gives the same disk', async () => {
    const started = await env.manager.import(await tarDir(layout), 'local/umoci:v1');
    const img = await env.manager.waitForReady(started.name, { timeoutMs: 60_000 });
    assert.equal(img.source, 'import');
    await checkUmociDisk(env, img);
  });
});

describe('layers cut short, pulled from a registry', { skip }, () => {
  let registry: TestRegistry;
  let env: ImageEnv;
  let work: string;
  const DATA = randomBytes(3_000);

  /** Cut layer 1 (the second) `cut(tar)` bytes in; layer 0 is whole. */
  async function push(tag: string, cut: (tar: Buffer) => number): Promise<string> {
    const layout = path.join(work, tag);
    await writeOciLayout(layout, [
      {
        ref: tag,
        image: {
          layers: [
            [{ path: 'base', content: 'base layer' }],
            [
              { path: 'app/', type: 'dir' },
              { path: 'app/data', content: DATA, mode: 0o640 },
              { path: 'app/last', content: 'last entry' },
            ],
          ],
          editTar: (tar, index) => (index === 1 ? tar.subarray(0, cut(tar)) : tar),
        },
      },
    ]);
    await pushLayout(layout, tag, registry.host, `cut/app:${tag}`);
    return `${registry.host}/cut/app:${tag}`;
  }

  /** Offset of the end of `name`'s data in a tar-stream pack() output (ustar, no pax). */
  function dataEnd(tar: Buffer, name: string): number {
    for (let off = 0; off + BLOCK <= tar.length;) {
      const header = tar.subarray(off, off + BLOCK);
      const entry = header.subarray(0, 100).toString('utf8').replace(/\0.*$/s, '');
      const size = Number.parseInt(header.subarray(124, 136).toString('ascii').trim(), 8) || 0;
      if (entry === name) return off + BLOCK + size;
      off += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    }
    throw new Error(`${name} not in the tar`);
  }

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-cut-'));
    registry = await startRegistry();
    env = await makeImageEnv();
  });

  after(async () => {
    await env?.close();
    await registry?.stop();
    await fs.rm(work, { recursive: true, force: true });
  });

  test('ending right after the last entry’s data (as Go writers do) pulls', async () => {
    const name = await push('noend', (tar) => dataEnd(tar, 'app/last'));
    const img = await env.manager.waitForReady(env.manager.pull(name).name, {
      timeoutMs: 60_000,
    });
    await withDisk(
      env.paths.imageDisk(img.digest!.slice(7), img.format!),
      img.format!,
      async (root) => {
        assert.equal(sha256(await fs.readFile(path.join(root, 'app/data'))), sha256(DATA));
        assert.equal(await fs.readFile(path.join(root, 'app/last'), 'utf8'), 'last entry');
      },
    );
  });

  test('cut inside an entry’s data or header: unsafe_layer naming the layer and entry', async () => {
    const cases = [
      {
        tag: 'middata',
        cut: (tar: Buffer) => dataEnd(tar, 'app/data') - 100,
        message: /ends inside the data of entry "app\/data" \(2900 of 3000 bytes present\)/,
      },
      {
        tag: 'midheader',
        cut: (tar: Buffer) => dataEnd(tar, 'app/last') - 'last entry'.length - BLOCK + 200,
        message: /ends inside the header block after entry "app\/data"/,
      },
    ];
    for (const c of cases) {
      const name = await push(c.tag, c.cut);
      await assert.rejects(env.manager.waitForReady(env.manager.pull(name).name), (err) => {
        assert.ok(isVesselError(err, 'image_failed'), `${c.tag}: ${String(err)}`);
        return true;
      });
      const rec = env.manager.get(name);
      assert.equal(rec.error_code, 'unsafe_layer', c.tag);
      const layer = rec.layers?.[1];
      assert.match(layer ?? '', /^sha256:[a-f0-9]{64}$/);
      assert.ok(
        rec.error?.startsWith(`layer 2 of 2 (${layer}): tar stream is truncated: it `),
        `${c.tag}: ${rec.error}`,
      );
      assert.match(rec.error ?? '', c.message, c.tag);
    }
  });
});
