// Unit tests of the safe layer unpacker: normal layers, whiteouts, and a hostile
// corpus that must fail clearly (or be neutralised) without touching anything
// outside the root filesystem.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { createGzip, gzipSync } from 'node:zlib';
import { pack, type Header } from 'tar-stream';
import { errorMessage, isVesselError, type ErrorCode } from '../../../src/core/errors.js';
import {
  applyLayer,
  openLayerStream,
  type ApplyLayerResult,
} from '../../../src/images/unpack/index.js';

const execFileAsync = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const ROOT_REASON = 'needs root to chown and to check ownership';
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const T1 = new Date('2023-05-06T07:08:09Z');
const T2 = new Date('2022-01-02T03:04:05Z');

type Spec = Partial<Header> & { name: string; content?: string | Buffer };

let base = '';
const unhandled: unknown[] = [];
const onUnhandled = (err: unknown): void => {
  unhandled.push(err);
};

before(async () => {
  base = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-unpack-'));
  process.on('unhandledRejection', onUnhandled);
});

after(async () => {
  process.off('unhandledRejection', onUnhandled);
  await fs.rm(base, { recursive: true, force: true });
  assert.deepEqual(unhandled, [], 'no unhandled rejections');
});

/** A tar layer built with tar-stream's pack(). */
async function buildTar(specs: readonly Spec[]): Promise<Buffer> {
  const p = pack();
  const done = collect(p);
  for (const { content, ...header } of specs) {
    const body = typeof content === 'string' ? Buffer.from(content) : content;
    await new Promise<void>((resolve, reject) => {
      p.entry({ mtime: T1, ...header }, body ?? Buffer.alloc(0), (err) =>
        err ? reject(err) : resolve(),
      );
    });
  }
  p.finalize();
  return done;
}

async function collect(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** Feed a buffer in 64 KiB chunks, like a download would. */
function source(buf: Buffer): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += 64 * 1024) chunks.push(buf.subarray(i, i + 64 * 1024));
  return Readable.from(chunks);
}

function sha256(buf: Buffer): string {
  return `sha256:${createHash('sha256').update(buf).digest('hex')}`;
}

function blockHeader(last: boolean, type: number, size: number): Buffer {
  const v = (last ? 1 : 0) | (type << 1) | (size << 3);
  return Buffer.from([v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff]);
}

/**
 * A zstd frame built by hand, so no encoder is needed: `data` in raw (stored)
 * blocks, then `zeroBlocks` RLE blocks of 128 KiB zero bytes each.
 */
function zstdFrame(data: Buffer, zeroBlocks = 0): Buffer {
  const block = 128 * 1024;
  const parts: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 7 << 3])]; // 128 KiB window
  const pieces: Buffer[] = [];
  for (let off = 0; off < data.length; off += block) pieces.push(data.subarray(off, off + block));
  if (pieces.length === 0 && zeroBlocks === 0) pieces.push(Buffer.alloc(0));
  pieces.forEach((piece, i) => {
    parts.push(blockHeader(i === pieces.length - 1 && zeroBlocks === 0, 0, piece.length), piece);
  });
  for (let i = 0; i < zeroBlocks; i++)
    parts.push(blockHeader(i === zeroBlocks - 1, 1, block), Buffer.from([0]));
  return Buffer.concat(parts);
}

async function newRootfs(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(base, 'root-'));
  const rootfs = path.join(dir, 'rootfs');
  await fs.mkdir(rootfs);
  return rootfs;
}

async function apply(rootfs: string, tar: Buffer, maxBytes = 64 * MiB): Promise<ApplyLayerResult> {
  return applyLayer(source(tar), { rootfs, maxBytes, canChown: isRoot });
}

void describe('applyLayer: normal layers', () => {
  const specs: Spec[] = [
    { name: './', type: 'directory', mode: 0o751, mtime: T2 },
    { name: 'etc/', type: 'directory', mode: 0o750, mtime: T2, uid: 0, gid: 42 },
    { name: 'etc/hosts', content: '127.0.0.1 localhost\n', mode: 0o644, uid: 1000, gid: 1001 },
    { name: './bin/busybox', content: 'ELF...', mode: 0o755 },
    { name: '/bin/su', content: 'su', mode: 0o4755, uid: 0, gid: 0 },
    { name: 'bin/wall', content: 'wall', mode: 0o2755, uid: 0, gid: 5 },
    { name: 'bin/sh', type: 'symlink', linkname: 'busybox', uid: 7, gid: 8 },
    { name: 'bin/ls', type: 'link', linkname: './bin/busybox' },
    { name: 'var/empty/', type: 'directory', mode: 0o700, mtime: T2 },
    { name: 'tmp/', type: 'directory', mode: 0o1777 },
    { name: 'big', content: randomBytes(300 * 1024), mode: 0o600 },
    { name: 'paxowned', content: 'x', pax: { uid: '3000000', gid: '3000001' } },
  ];

  async function check(rootfs: string, tar: Buffer, result: ApplyLayerResult): Promise<void> {
    assert.equal(result.diffId, sha256(tar));
    assert.equal(result.tarBytes, tar.length);
    assert.deepEqual(result.warnings, []);
    assert.equal(
      await fs.readFile(path.join(rootfs, 'etc/hosts'), 'utf8'),
      '127.0.0.1 localhost\n',
    );
    assert.equal((await fs.stat(path.join(rootfs, 'etc'))).mode & 0o7777, 0o750);
    assert.equal((await fs.stat(path.join(rootfs, 'etc'))).mtime.getTime(), T2.getTime());
    assert.equal((await fs.stat(path.join(rootfs, 'var/empty'))).mode & 0o7777, 0o700);
    assert.equal((await fs.stat(path.join(rootfs, 'tmp'))).mode & 0o7777, 0o1777);
    assert.equal((await fs.stat(path.join(rootfs, 'bin/su'))).mode & 0o7777, 0o4755);
    assert.equal((await fs.stat(path.join(rootfs, 'bin/wall'))).mode & 0o7777, 0o2755);
    assert.equal((await fs.stat(path.join(rootfs, 'bin/busybox'))).mode & 0o7777, 0o755);
    assert.equal((await fs.stat(path.join(rootfs, 'etc/hosts'))).mtime.getTime(), T1.getTime());
    assert.equal(await fs.readlink(path.join(rootfs, 'bin/sh')), 'busybox');
    assert.equal((await fs.lstat(path.join(rootfs, 'bin/sh'))).mtime.getTime(), T1.getTime());
    const busybox = await fs.stat(path.join(rootfs, 'bin/busybox'));
    const ls = await fs.stat(path.join(rootfs, 'bin/ls'));
    assert.equal(ls.ino, busybox.ino);
    assert.equal(busybox.nlink, 2);
    const big = specs.find((s) => s.name === 'big')!.content as Buffer;
    assert.deepEqual(await fs.readFile(path.join(rootfs, 'big')), big);
    assert.equal((await fs.stat(rootfs)).mode & 0o7777, 0o751);
    assert.equal((await fs.stat(rootfs)).mtime.getTime(), T2.getTime());
  }

  void test('plain tar', async () => {
    const rootfs = await newRootfs();
    const tar = await buildTar(specs);
    await check(rootfs, tar, await apply(rootfs, tar));
  });

  void test('gzip', async () => {
    const rootfs = await newRootfs();
    const tar = await buildTar(specs);
    await check(rootfs, tar, await apply(rootfs, gzipSync(tar)));
  });

  void test('zstd (hand-built raw-block frame)', async () => {
    const rootfs = await newRootfs();
    const tar = await buildTar(specs);
    await check(rootfs, tar, await apply(rootfs, zstdFrame(tar)));
  });

  void test('zstd (compressed by the zstd tool)', async (t) => {
    const tar = await buildTar(specs);
    const dir = await fs.mkdtemp(path.join(base, 'zstd-'));
    await fs.writeFile(path.join(dir, 'layer.tar'), tar);
    try {
      await execFileAsync('zstd', [
        '-q',
        '-19',
        path.join(dir, 'layer.tar'),
        '-o',
        path.join(dir, 'layer.tar.zst'),
      ]);
    } catch {
      t.skip('the zstd tool is not installed');
      return;
    }
    const rootfs = await newRootfs();
    await check(
      rootfs,
      tar,
      await apply(rootfs, await fs.readFile(path.join(dir, 'layer.tar.zst'))),
    );
  });

  void test(
    'ownership is applied with lchown',
    { skip: isRoot ? false : ROOT_REASON },
    async () => {
      const rootfs = await newRootfs();
      await apply(rootfs, await buildTar(specs));
      const hosts = await fs.stat(path.join(rootfs, 'etc/hosts'));
      assert.deepEqual([hosts.uid, hosts.gid], [1000, 1001]);
      const etc = await fs.stat(path.join(rootfs, 'etc'));
      assert.deepEqual([etc.uid, etc.gid], [0, 42]);
      const sh = await fs.lstat(path.join(rootfs, 'bin/sh'));
      assert.deepEqual([sh.uid, sh.gid], [7, 8]);
      const wall = await fs.stat(path.join(rootfs, 'bin/wall'));
      assert.deepEqual([wall.gid, wall.mode & 0o7777], [5, 0o2755]);
      const pax = await fs.stat(path.join(rootfs, 'paxowned'));
      assert.deepEqual([pax.uid, pax.gid], [3000000, 3000001]);
    },
  );

  void test('openLayerStream passes plain and tiny streams through', async () => {
    assert.deepEqual(
      await collect(await openLayerStream(Readable.from([Buffer.from('ab')]))),
      Buffer.from('ab'),
    );
    assert.deepEqual(await collect(await openLayerStream(Readable.from([]))), Buffer.alloc(0));
    const gz = gzipSync(Buffer.from('hello'));
    const split = Readable.from([gz.subarray(0, 1), gz.subarray(1)]);
    assert.deepEqual(await collect(await openLayerStream(split)), Buffer.from('hello'));
  });
});

void describe('applyLayer: whiteouts', () => {
  void test('.wh. removes lower files and dirs; an opaque dir keeps only this layer', async () => {
    const rootfs = await newRootfs();
    await apply(
      rootfs,
      await buildTar([
        { name: 'a/keep', content: 'k' },
        { name: 'a/gone', content: 'g' },
        { name: 'd/sub/file', content: 'f' },
        { name: 'o/lower1', content: 'l' },
        { name: 'o/lowerdir/x', content: 'x' },
        { name: 'o/nested/deep', content: 'd' },
      ]),
    );
    const result = await apply(
      rootfs,
      await buildTar([
        { name: 'a/.wh.gone' },
        { name: '.wh.d' },
        { name: 'o/new1', content: '1' },
        { name: 'o/nested/newdeep', content: 'n' },
        { name: 'o/.wh..wh..opq' },
        { name: 'o/new2', content: '2' },
        { name: 'a/fresh', content: 'f' },
        { name: 'a/.wh.fresh' }, // same-layer entries are not hidden by a whiteout
      ]),
    );
    assert.deepEqual(result.warnings, []);
    assert.deepEqual((await fs.readdir(path.join(rootfs, 'a'))).sort(), ['fresh', 'keep']);
    assert.deepEqual((await fs.readdir(rootfs)).sort(), ['a', 'o']);
    assert.deepEqual((await fs.readdir(path.join(rootfs, 'o'))).sort(), ['nested', 'new1', 'new2']);
    assert.deepEqual(await fs.readdir(path.join(rootfs, 'o/nested')), ['newdeep']);
  });
});

void describe('applyLayer: edge cases', () => {
  void test('an empty blob is an empty layer', async () => {
    const rootfs = await newRootfs();
    const result = await apply(rootfs, Buffer.alloc(0));
    assert.deepEqual(result, { tarBytes: 0, diffId: sha256(Buffer.alloc(0)), warnings: [] });
  });

  void test('replacements: file over dir, dir over file, read-only dirs still filled', async () => {
    const rootfs = await newRootfs();
    await apply(
      rootfs,
      await buildTar([
        { name: 'x/inner', content: 'i' },
        { name: 'y', content: 'file' },
        { name: 'keep/', type: 'directory', mode: 0o700 },
        { name: 'keep/lower', content: 'l' },
      ]),
    );
    await apply(
      rootfs,
      await buildTar([
        { name: 'x', content: 'now a file' },
        { name: 'y/', type: 'directory', mode: 0o711 },
        { name: 'keep/', type: 'directory', mode: 0o750, mtime: T2 },
        { name: 'ro/', type: 'directory', mode: 0o500, mtime: T2 },
        { name: 'ro/file', content: 'r', mode: 0o400 },
      ]),
    );
    assert.equal(await fs.readFile(path.join(rootfs, 'x'), 'utf8'), 'now a file');
    assert.equal((await fs.stat(path.join(rootfs, 'y'))).mode & 0o7777, 0o711);
    assert.equal(await fs.readFile(path.join(rootfs, 'keep/lower'), 'utf8'), 'l');
    assert.equal((await fs.stat(path.join(rootfs, 'keep'))).mode & 0o7777, 0o750);
    assert.equal((await fs.stat(path.join(rootfs, 'ro'))).mode & 0o7777, 0o500);
    assert.equal((await fs.stat(path.join(rootfs, 'ro'))).mtime.getTime(), T2.getTime());
    assert.equal(await fs.readFile(path.join(rootfs, 'ro/file'), 'utf8'), 'r');
  });

  void test('zstd output is back-pressured and exact (64 MiB of RLE padding)', async () => {
    const rootfs = await newRootfs();
    const tar = await buildTar([{ name: 'a', content: 'a' }]);
    const result = await apply(rootfs, zstdFrame(tar, 512), 128 * MiB);
    const padded = Buffer.concat([tar, Buffer.alloc(64 * MiB)]);
    assert.equal(result.tarBytes, padded.length);
    assert.equal(result.diffId, sha256(padded));
    assert.equal(await fs.readFile(path.join(rootfs, 'a'), 'utf8'), 'a');
  });

  void test('a source that fails mid-stream rejects with its error and is not left running', async () => {
    const rootfs = await newRootfs();
    const tar = await buildTar([{ name: 'a', content: randomBytes(512 * 1024) }]);
    for (const failWith of [new Error('connection reset'), undefined]) {
      const input = new Readable({ read() {} });
      input.push(tar.subarray(0, 100 * 1024));
      setImmediate(() => input.destroy(failWith));
      await assert.rejects(
        applyLayer(input, { rootfs, maxBytes: 64 * MiB, canChown: isRoot }),
        (err: unknown) =>
          isVesselError(err, 'internal') &&
          (failWith ? /connection reset/ : /closed before its end/).test(err.message),
      );
    }
  });
});

// ---------------------------------------------------------------- hostile corpus

interface Layout {
  readonly dir: string;
  readonly rootfs: string;
  readonly outside: string;
}

async function layout(): Promise<Layout> {
  const dir = await fs.mkdtemp(path.join(base, 'case-'));
  const rootfs = path.join(dir, 'rootfs');
  const outside = path.join(dir, 'outside');
  await fs.mkdir(rootfs);
  await fs.mkdir(outside);
  await fs.writeFile(path.join(outside, 'sentinel'), 'do not touch');
  return { dir, rootfs, outside };
}

/** Every path under `dir` except the rootfs, with type, mode, size, content hash and link target. */
async function snapshot(dir: string, skip: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (current: string): Promise<void> => {
    for (const name of await fs.readdir(current)) {
      const p = path.join(current, name);
      if (p === skip) continue;
      const st = await fs.lstat(p);
      let detail = `${st.mode.toString(8)} ${st.size} ${st.nlink} ${st.mtimeMs}`;
      if (st.isSymbolicLink()) detail += ` -> ${await fs.readlink(p)}`;
      if (st.isFile()) detail += ` ${sha256(await fs.readFile(p))}`;
      out[path.relative(dir, p)] = detail;
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out;
}

async function exists(p: string): Promise<boolean> {
  return fs.lstat(p).then(
    () => true,
    () => false,
  );
}

interface HostileOutcome {
  readonly layout: Layout;
  readonly result?: ApplyLayerResult;
  readonly error?: unknown;
}

/**
 * Apply `layers` (the last one is the hostile one) to a fresh layout and check
 * that nothing outside the rootfs changed and that no payload file appeared in
 * the temp dir or at /.
 */
async function hostile(
  layersOrBuilder: readonly Buffer[] | ((l: Layout) => Promise<readonly Buffer[]>),
  options: { maxBytes?: number; payloads?: readonly string[] } = {},
): Promise<HostileOutcome> {
  const l = await layout();
  const layers = typeof layersOrBuilder === 'function' ? await layersOrBuilder(l) : layersOrBuilder;
  const before = await snapshot(l.dir, l.rootfs);
  const passwd = await fs.readFile('/etc/passwd');
  let result: ApplyLayerResult | undefined;
  let error: unknown;
  for (const [i, layer] of layers.entries()) {
    const input = source(layer);
    try {
      result = await applyLayer(input, {
        rootfs: l.rootfs,
        maxBytes: options.maxBytes ?? 64 * MiB,
        canChown: isRoot,
      });
    } catch (err) {
      assert.equal(i, layers.length - 1, `only the hostile layer may fail: ${String(err)}`);
      assert.ok(input.destroyed, 'the source is destroyed after a failure');
      error = err;
    }
  }
  assert.deepEqual(await snapshot(l.dir, l.rootfs), before, 'nothing outside the rootfs changed');
  assert.deepEqual(await fs.readFile('/etc/passwd'), passwd, '/etc/passwd is unchanged');
  for (const name of options.payloads ?? []) {
    assert.equal(await exists(path.join(os.tmpdir(), name)), false, `no ${name} in the temp dir`);
    assert.equal(await exists(path.join('/', name)), false, `no /${name}`);
    assert.equal(await exists(path.join(base, name)), false, `no ${name} next to the cases`);
  }
  return error === undefined ? { layout: l, result: result! } : { layout: l, error };
}

function assertCode(outcome: HostileOutcome, code: ErrorCode, pattern?: RegExp): void {
  assert.ok(outcome.error !== undefined, `expected ${code}, but the layer applied`);
  assert.ok(
    isVesselError(outcome.error, code),
    `expected ${code}, got ${errorMessage(outcome.error)}`,
  );
  if (pattern) assert.match(outcome.error.message, pattern);
}

const tag = randomBytes(4).toString('hex');
const payload = (name: string): string => `${name}-${tag}`;

void describe('applyLayer: hostile layers', () => {
  void test('../ traversal is refused', async () => {
    for (const name of [
      `../outside/${payload('pwned')}`,
      `a/../../${payload('pwned')}`,
      `../../../../${payload('pwned')}`,
    ]) {
      const outcome = await hostile([await buildTar([{ name, content: 'x' }])], {
        payloads: [payload('pwned')],
      });
      assertCode(outcome, 'unsafe_layer', /layer entry ".*": path escapes the root filesystem/);
      assert.ok(outcome.error instanceof Error && outcome.error.message.includes(name));
    }
  });

  void test('a pax path with .. is refused', async () => {
    const tar = await buildTar([
      { name: `../../${payload('paxpwn')}`, content: 'x', pax: { comment: 'hi' } },
    ]);
    assertCode(await hostile([tar], { payloads: [payload('paxpwn')] }), 'unsafe_layer', /escapes/);
  });

  void test('an absolute path is neutralised into the rootfs', async () => {
    const name = payload('outside-xyz');
    const outcome = await hostile([await buildTar([{ name: `/${name}`, content: 'x' }])], {
      payloads: [name],
    });
    assert.equal(await fs.readFile(path.join(outcome.layout.rootfs, name), 'utf8'), 'x');
  });

  void test('symlinked parents resolve inside the rootfs', async () => {
    const outcome = await hostile(
      [
        await buildTar([
          { name: 'evil', type: 'symlink', linkname: '../outside' },
          { name: `evil/${payload('pwned')}`, content: 'x' },
          { name: 'evil2', type: 'symlink', linkname: '/' },
          { name: `evil2/${payload('pwned2')}`, content: 'y' },
          { name: 'evil3', type: 'symlink', linkname: '../../../../../../tmp' },
          { name: `evil3/${payload('pwned3')}`, content: 'z' },
        ]),
      ],
      { payloads: [payload('pwned'), payload('pwned2'), payload('pwned3')] },
    );
    const { rootfs } = outcome.layout;
    assert.equal(await fs.readFile(path.join(rootfs, 'outside', payload('pwned')), 'utf8'), 'x');
    assert.equal(await fs.readFile(path.join(rootfs, payload('pwned2')), 'utf8'), 'y');
    assert.equal(await fs.readFile(path.join(rootfs, 'tmp', payload('pwned3')), 'utf8'), 'z');
  });

  void test('a symlink loop in a parent fails', async () => {
    const tar = await buildTar([
      { name: 'loop', type: 'symlink', linkname: 'loop' },
      { name: 'loop/x', content: 'x' },
    ]);
    assertCode(await hostile([tar]), 'unsafe_layer', /too many levels of symbolic links/);
  });

  void test('a hardlink escaping the rootfs is refused', async () => {
    const tar = await buildTar([{ name: 'link', type: 'link', linkname: '../outside/sentinel' }]);
    assertCode(
      await hostile([tar]),
      'unsafe_layer',
      /layer entry "link": hardlink target "..\/outside\/sentinel" escapes/,
    );
    const abs = await buildTar([{ name: 'link', type: 'link', linkname: '/etc/passwd' }]);
    assertCode(await hostile([abs]), 'unsafe_layer', /does not exist/);
  });

  void test('a hardlink through a symlinked parent resolves inside the rootfs', async () => {
    const missing = await buildTar([
      { name: 'evil', type: 'symlink', linkname: '../outside' },
      { name: 'h', type: 'link', linkname: 'evil/sentinel' },
    ]);
    assertCode(
      await hostile([missing]),
      'unsafe_layer',
      /hardlink target "evil\/sentinel" does not exist/,
    );

    const present = await buildTar([
      { name: 'outside/sentinel', content: 'inner' },
      { name: 'evil', type: 'symlink', linkname: '/../outside' },
      { name: 'h', type: 'link', linkname: 'evil/sentinel' },
    ]);
    const outcome = await hostile([present]);
    const h = await fs.stat(path.join(outcome.layout.rootfs, 'h'));
    assert.equal(h.ino, (await fs.stat(path.join(outcome.layout.rootfs, 'outside/sentinel'))).ino);
    assert.notEqual(h.ino, (await fs.stat(path.join(outcome.layout.outside, 'sentinel'))).ino);
  });

  void test('device nodes and FIFOs are skipped with a warning', async () => {
    const tar = await buildTar([
      { name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 },
      { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o660 },
      { name: 'run/fifo', type: 'fifo', mode: 0o644 },
      { name: 'ok', content: 'fine' },
    ]);
    const outcome = await hostile([tar]);
    const { rootfs } = outcome.layout;
    assert.equal(await exists(path.join(rootfs, 'dev/null')), false);
    assert.equal(await exists(path.join(rootfs, 'dev/sda')), false);
    assert.equal(await exists(path.join(rootfs, 'run/fifo')), false);
    assert.equal(await fs.readFile(path.join(rootfs, 'ok'), 'utf8'), 'fine');
    const warnings = outcome.result!.warnings;
    assert.equal(warnings.length, 3);
    assert.match(warnings[0]!, /layer entry "dev\/null": skipped character-device/);
    assert.match(warnings[1]!, /"dev\/sda": skipped block-device/);
    assert.match(warnings[2]!, /"run\/fifo": skipped fifo/);
  });

  void test('a file declaring 8 GiB with a 64 MiB budget fails fast', async () => {
    const p = pack();
    const entry = p.entry({ name: 'big', size: 8 * GiB });
    for (let i = 0; i < 4; i++) entry.write(Buffer.alloc(MiB));
    const chunks: Buffer[] = [];
    let length = 0;
    for await (const chunk of p) {
      chunks.push(Buffer.from(chunk as Uint8Array));
      length += (chunk as Uint8Array).length;
      if (length >= 512 + 4 * MiB) break;
    }
    const tar = Buffer.concat(chunks);
    const outcome = await hostile([tar], { maxBytes: 64 * MiB });
    assertCode(outcome, 'layer_too_large', /layer entry "big": declares 8589934592 bytes/);
    assert.equal(await exists(path.join(outcome.layout.rootfs, 'big')), false);

    // Within budget but truncated: a clear error, not a hang.
    const truncated = await hostile([tar], { maxBytes: 16 * GiB });
    assertCode(
      truncated,
      'unsafe_layer',
      /tar stream is truncated: it ends inside the data of entry "big" \(4194304 of 8589934592 bytes present\)/,
    );
    const st = await fs.stat(path.join(truncated.layout.rootfs, 'big')).catch(() => null);
    assert.ok(st === null || st.size <= 4 * MiB);
  });

  void test('a gzip bomb trips the budget quickly', async () => {
    const started = Date.now();
    const bomb = await gzipBomb(256 * MiB);
    assert.ok(bomb.length < 2 * MiB);
    assertCode(await hostile([bomb], { maxBytes: 32 * MiB }), 'layer_too_large');

    // Padding only (no entry declares a size): the byte meter trips.
    const padding = gzipSync(Buffer.alloc(256 * MiB), { level: 1 });
    assertCode(
      await hostile([padding], { maxBytes: 32 * MiB }),
      'layer_too_large',
      /more than 33554432 bytes/,
    );
    assert.ok(Date.now() - started < 20_000, 'bomb handling is quick');
  });

  void test('a zstd bomb trips the budget; a huge zstd window is refused', async () => {
    const bomb = zstdFrame(await buildTar([{ name: 'a', content: 'a' }]), 8 * 1024); // + 1 GiB of zeros
    assertCode(
      await hostile([bomb], { maxBytes: 32 * MiB }),
      'layer_too_large',
      /more than 33554432 bytes/,
    );
    const hugeWindow = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 18 << 3, 0x01, 0x00, 0x00]);
    assertCode(await hostile([hugeWindow]), 'layer_too_large', /zstd frame window/);
    assertCode(
      await hostile([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00])]),
      'unsafe_layer',
      /zstd/,
    );
  });

  void test('a symlink final component is replaced, never written through', async () => {
    // The absolute target is the case's own sentinel, standing in for /etc/passwd:
    // a regression must not be able to clobber the host's real files.
    const outcome = await hostile(async (l) => [
      await buildTar([
        { name: 'a', type: 'symlink', linkname: path.join(l.outside, 'sentinel') },
        { name: 'b', type: 'symlink', linkname: '../outside/sentinel' },
      ]),
      await buildTar([
        { name: 'a', content: 'owned' },
        { name: 'b', content: 'owned' },
        { name: 'c', type: 'symlink', linkname: '../outside' },
        { name: 'c', type: 'directory' },
      ]),
    ]);
    const { rootfs } = outcome.layout;
    for (const name of ['a', 'b']) {
      assert.ok((await fs.lstat(path.join(rootfs, name))).isFile());
      assert.equal(await fs.readFile(path.join(rootfs, name), 'utf8'), 'owned');
    }
    assert.ok((await fs.lstat(path.join(rootfs, 'c'))).isDirectory());
  });

  void test('whiteouts cannot reach outside', async () => {
    for (const name of ['.wh...', '../.wh.x', 'a/.wh..', '.wh.']) {
      assertCode(await hostile([await buildTar([{ name }])]), 'unsafe_layer', /layer entry/);
    }
    // Through a symlinked parent: whiteouts resolve inside the rootfs only.
    const outcome = await hostile([
      await buildTar([
        { name: 'outside/inner', content: 'i' },
        { name: 'outside/other', content: 'o' },
        { name: 'evil', type: 'symlink', linkname: '../outside' },
      ]),
      await buildTar([
        { name: 'evil/.wh.sentinel' },
        { name: 'evil/.wh..wh..opq' },
        { name: '.wh.evil' },
      ]),
    ]);
    assert.deepEqual(await fs.readdir(outcome.layout.rootfs), ['outside']);
    assert.deepEqual(await fs.readdir(path.join(outcome.layout.rootfs, 'outside')), []);
  });

  void test('GNU sparse files and unknown entry types are refused', async () => {
    const sparse = await buildTar([
      { name: 'sparse', content: 'x', pax: { 'GNU.sparse.major': '1' } },
    ]);
    assertCode(await hostile([sparse]), 'unsafe_layer', /layer entry "sparse": GNU sparse files/);
    const unknown = setTypeflag(await buildTar([{ name: 'oldsparse', content: 'x' }]), 0, 'S');
    assertCode(
      await hostile([unknown]),
      'unsafe_layer',
      /layer entry "oldsparse": unsupported entry type/,
    );
  });

  void test('garbage is a clear error', async () => {
    assertCode(await hostile([randomBytes(4096)]), 'unsafe_layer', /not a valid tar stream/);
    const gz = gzipSync(await buildTar([{ name: 'x', content: 'x' }]));
    assertCode(await hostile([gz.subarray(0, gz.length - 20)]), 'unsafe_layer', /not a valid/);
  });
});

/** A gzip-compressed tar with one file of `size` zero bytes, built as a stream. */
async function gzipBomb(size: number): Promise<Buffer> {
  const p = pack();
  const gzip = createGzip({ level: 1 });
  const compressed = collect(gzip);
  const pumped = (async () => {
    for await (const chunk of p) {
      if (!gzip.write(chunk)) await once(gzip, 'drain');
    }
    gzip.end();
  })();
  const entry = p.entry({ name: 'zeros', size }, () => p.finalize());
  const zeros = Buffer.alloc(MiB);
  for (let written = 0; written < size; written += zeros.length) {
    if (!entry.write(zeros)) await once(entry, 'drain');
  }
  entry.end(null);
  await pumped;
  return compressed;
}

/** Rewrite the type flag of the tar header at `offset` and fix its checksum. */
function setTypeflag(tar: Buffer, offset: number, flag: string): Buffer {
  const out = Buffer.from(tar);
  out[offset + 156] = flag.charCodeAt(0);
  out.fill(0x20, offset + 148, offset + 156);
  let sum = 0;
  for (let i = offset; i < offset + 512; i++) sum += out[i]!;
  out.write(`${sum.toString(8).padStart(6, '0')}\0 `, offset + 148, 'latin1');
  return out;
}
