// Where a layer's tar stream may end. Layers written by Go programs that never
// close their tar writer (umoci insert) end right after the last entry's data,
// without its padding or the two end-of-archive blocks: they must unpack, like
// with containerd and Docker. A stream cut inside a header or inside an entry's
// data must still fail, naming where it was cut, and the zero bytes used to
// complete the last block must never reach a file.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { extract } from 'tar-stream';
import { isVesselError } from '../../../src/core/errors.js';
import { applyLayer, type ApplyLayerResult } from '../../../src/images/unpack/index.js';

const execFileAsync = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const BLOCK = 512;

/** Files of the source tree, by path relative to its root; sizes chosen off block boundaries. */
const FILES: Record<string, { content: Buffer; mode: number }> = {
  'b.bin': { content: randomBytes(700), mode: 0o640 },
  'big.bin': { content: randomBytes(200_000), mode: 0o644 },
  'dir/a.txt': { content: Buffer.from('hello'), mode: 0o600 },
  'last.txt': { content: Buffer.from('the end\n'), mode: 0o755 },
};
/** The same without the big file, for the sweep over every cut point. */
const SMALL = ['b.bin', 'dir/a.txt', 'last.txt'];

/** Where one entry sits in the uncompressed stream. */
interface Span {
  name: string;
  dataStart: number;
  dataEnd: number;
  paddedEnd: number;
}

let base = '';
let gnuTar = false;

/** The name tar gives a source file (`./b.bin`). */
const entry = (rel: string): string => `./${rel}`;

async function writeTree(dir: string, files: readonly string[]): Promise<void> {
  for (const rel of files) {
    const file = FILES[rel]!;
    await fs.mkdir(path.join(dir, path.dirname(rel)), { recursive: true });
    await fs.writeFile(path.join(dir, rel), file.content);
    await fs.chmod(path.join(dir, rel), file.mode);
  }
}

/** A tar of `dir` made by GNU tar, entries sorted, with its end-of-archive blocks. */
async function gnuTarOf(dir: string): Promise<Buffer> {
  const { stdout } = await execFileAsync(
    'tar',
    ['--format=gnu', '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', '.'],
    { cwd: dir, encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 },
  );
  return stdout;
}

/** Each entry's data span, read from a complete archive (the test's oracle). */
async function spansOf(tar: Buffer): Promise<Span[]> {
  const spans: Span[] = [];
  const x = extract();
  x.on('entry', (header, stream, next) => {
    const start = (header as { byteOffset?: number }).byteOffset ?? 0;
    const size = header.type === 'directory' ? 0 : (header.size ?? 0);
    spans.push({
      name: header.name,
      dataStart: start,
      dataEnd: start + size,
      paddedEnd: start + Math.ceil(size / BLOCK) * BLOCK,
    });
    stream.on('end', () => next());
    stream.resume();
  });
  const done = new Promise<void>((resolve, reject) => {
    x.on('finish', resolve);
    x.on('error', reject);
  });
  x.end(tar);
  await done;
  return spans;
}

function span(spans: readonly Span[], name: string): Span {
  const s = spans.find((x) => x.name === name);
  assert.ok(s, `entry ${name} in the archive`);
  return s;
}

/** Feed a buffer in 64 KiB chunks, like a download would. */
function source(buf: Buffer): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += 64 * 1024) chunks.push(buf.subarray(i, i + 64 * 1024));
  return Readable.from(chunks);
}

const sha256 = (buf: Buffer): string => `sha256:${createHash('sha256').update(buf).digest('hex')}`;

async function newRootfs(): Promise<string> {
  return fs.mkdtemp(path.join(base, 'root-'));
}

async function apply(rootfs: string, blob: Buffer): Promise<ApplyLayerResult> {
  return applyLayer(source(blob), { rootfs, maxBytes: 64 * 1024 * 1024, canChown: isRoot });
}

/**
 * Every file of `files` present in `rootfs` holds a prefix of its real content
 * (never filler); with `complete`, every one is present, whole, with its mode.
 */
async function checkFiles(
  rootfs: string,
  files: readonly string[],
  complete: boolean,
  label = '',
): Promise<void> {
  for (const rel of files) {
    const want = FILES[rel]!;
    let got: Buffer;
    try {
      got = await fs.readFile(path.join(rootfs, rel));
    } catch (err) {
      if (!complete && (err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    if (complete) {
      assert.equal(sha256(got), sha256(want.content), `${label} ${rel} content`);
      assert.equal((await fs.stat(path.join(rootfs, rel))).mode & 0o7777, want.mode, rel);
    } else {
      assert.ok(got.length <= want.content.length, `${label} ${rel} not longer than its data`);
      assert.ok(
        got.equals(want.content.subarray(0, got.length)),
        `${label} ${rel} holds only real bytes`,
      );
    }
  }
}

async function rejectsTruncated(rootfs: string, blob: Buffer, message: RegExp): Promise<void> {
  await assert.rejects(apply(rootfs, blob), (err) => {
    assert.ok(isVesselError(err, 'unsafe_layer'), `unsafe_layer, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
}

before(async () => {
  base = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-tar-end-'));
  try {
    const { stdout } = await execFileAsync('tar', ['--version']);
    gnuTar = stdout.includes('GNU tar');
  } catch {
    // not installed
  }
});

after(async () => {
  await fs.rm(base, { recursive: true, force: true });
});

const NO_GNU_TAR = 'GNU tar is not installed (apt-get install tar)';

void describe('applyLayer: a tar stream without its end', () => {
  let full: Buffer;
  let spans: Span[];
  const all = Object.keys(FILES);

  before(async () => {
    if (!gnuTar) return;
    const src = await fs.mkdtemp(path.join(base, 'src-'));
    await writeTree(src, all);
    full = await gnuTarOf(src);
    spans = await spansOf(full);
  });

  void test('cut right after the last entry’s data (no padding, no end blocks)', async (t) => {
    if (!gnuTar) return t.skip(NO_GNU_TAR);
    const cut = span(spans, entry('last.txt')).dataEnd;
    assert.notEqual(cut % BLOCK, 0, 'the cut is off a block boundary');
    const blob = full.subarray(0, cut);
    const rootfs = await newRootfs();
    const res = await apply(rootfs, blob);
    assert.equal(res.tarBytes, cut, 'the filler is not counted');
    assert.equal(res.diffId, sha256(blob), 'the diff_id covers exactly the layer bytes');
    await checkFiles(rootfs, all, true);
  });

  void test('cut inside the last entry’s padding', async (t) => {
    if (!gnuTar) return t.skip(NO_GNU_TAR);
    const blob = full.subarray(0, span(spans, entry('last.txt')).dataEnd + 100);
    const rootfs = await newRootfs();
    assert.equal((await apply(rootfs, blob)).diffId, sha256(blob));
    await checkFiles(rootfs, all, true);
  });

  void test('cut at the entry boundary, or after one of the two end blocks', async (t) => {
    if (!gnuTar) return t.skip(NO_GNU_TAR);
    const end = span(spans, entry('last.txt')).paddedEnd;
    for (const cut of [end, end + BLOCK]) {
      const rootfs = await newRootfs();
      assert.equal((await apply(rootfs, full.subarray(0, cut))).tarBytes, cut);
      await checkFiles(rootfs, all, true, `cut ${cut}`);
    }
  });

  void test('cut inside a header: fails naming the entry before or the cut header', async (t) => {
    if (!gnuTar) return t.skip(NO_GNU_TAR);
    const last = span(spans, entry('last.txt'));
    const header = last.dataStart - BLOCK;
    // 100 bytes in: the rest of the header (mode, size, checksum) is missing.
    await rejectsTruncated(
      await newRootfs(),
      full.subarray(0, header + 100),
      /^tar stream is truncated: it ends inside the header block after entry "\.\/dir\/a\.txt"$/,
    );
    // 500 bytes in: only zero bytes are missing, so the header decodes; still cut.
    await rejectsTruncated(
      await newRootfs(),
      full.subarray(0, header + 500),
      /^tar stream is truncated: it ends inside the header of entry "\.\/last\.txt"$/,
    );
    // Inside the first header, and inside an end-of-archive block.
    await rejectsTruncated(
      await newRootfs(),
      full.subarray(0, 100),
      /it ends inside the first header block/,
    );
    await rejectsTruncated(
      await newRootfs(),
      full.subarray(0, last.paddedEnd + BLOCK + 100),
      /it ends inside the header block after entry "\.\/last\.txt"/,
    );
  });

  void test('cut inside an entry’s data: fails, and the file never gets filler', async (t) => {
    if (!gnuTar) return t.skip(NO_GNU_TAR);
    const small = span(spans, entry('b.bin'));
    // 600 of 700 bytes: the zero bytes completing the block would cover the missing 100.
    const rootfs = await newRootfs();
    await rejectsTruncated(
      rootfs,
      full.subarray(0, small.dataStart + 600),
      /^tar stream is truncated: it ends inside the data of entry "\.\/b\.bin" \(600 of 700 bytes present\)$/,
    );
    await checkFiles(rootfs, all, false);
    // Inside a file spread over several chunks, while its data is being written.
    const big = span(spans, entry('big.bin'));
    const rootfs2 = await newRootfs();
    await rejectsTruncated(
      rootfs2,
      full.subarray(0, big.dataStart + 150_001),
      /it ends inside the data of entry "\.\/big\.bin" \(150001 of 200000 bytes present\)/,
    );
    await checkFiles(rootfs2, all, false);
  });
});

void describe('applyLayer: a pax archive (an extended header before every entry)', () => {
  void test('cut inside the header after an extended header: truncated or corrupt', async (t) => {
    if (!gnuTar) return t.skip(NO_GNU_TAR);
    const src = await fs.mkdtemp(path.join(base, 'pax-'));
    await writeTree(src, SMALL);
    const { stdout: full } = await execFileAsync(
      'tar',
      ['--format=pax', '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', '.'],
      { cwd: src, encoding: 'buffer' },
    );
    const last = span(await spansOf(full), entry('last.txt'));
    const header = last.dataStart - BLOCK;
    assert.notEqual(
      header,
      span(await spansOf(full), entry('dir/a.txt')).paddedEnd,
      'an extended header sits between the two entries',
    );
    const rootfs = await newRootfs();
    await rejectsTruncated(
      rootfs,
      full.subarray(0, header + 1),
      /^tar stream is truncated or corrupt after entry "\.\/dir\/a\.txt": /,
    );
    await checkFiles(rootfs, SMALL, false);
    // Ending right after the extended header names no entry: the end, as with Go.
    const ended = await newRootfs();
    await apply(ended, full.subarray(0, header));
    await assert.rejects(fs.access(path.join(ended, 'last.txt')));
    await checkFiles(ended, ['b.bin', 'dir/a.txt'], true);
  });
});

void describe('applyLayer: every cut point of a small archive', () => {
  void test('accepted exactly where Go’s archive/tar ends cleanly; never a file with filler', async (t) => {
    if (!gnuTar) return t.skip(NO_GNU_TAR);
    const src = await fs.mkdtemp(path.join(base, 'sweep-'));
    await writeTree(src, SMALL);
    const full = await gnuTarOf(src);
    const spans = await spansOf(full);
    const entriesEnd = spans.at(-1)!.paddedEnd;
    // Go ends cleanly at a header boundary, inside an entry's padding, or between end blocks.
    const clean = (cut: number): boolean =>
      cut === 0 ||
      spans.some((s) => cut >= s.dataEnd && cut <= s.paddedEnd) ||
      (cut >= entriesEnd && (cut - entriesEnd) % BLOCK === 0);
    const cuts = new Set<number>();
    for (let b = 0; b <= entriesEnd + 2 * BLOCK; b += BLOCK) {
      for (const d of [-1, 0, 1, 100, 500]) if (b + d >= 0) cuts.add(b + d);
    }
    for (const s of spans) for (const d of [-1, 0, 1]) cuts.add(s.dataEnd + d);
    let accepted = 0;
    for (const cut of [...cuts].sort((a, b) => a - b)) {
      const rootfs = await newRootfs();
      let ok = true;
      try {
        await apply(rootfs, full.subarray(0, cut));
        accepted++;
      } catch (err) {
        ok = false;
        assert.ok(isVesselError(err, 'unsafe_layer'), `cut ${cut}: ${String(err)}`);
        assert.match(err.message, /truncated/, `cut ${cut}`);
      }
      assert.equal(ok, clean(cut), `cut at byte ${cut}`);
      // A complete entry is whole; any other file holds only real bytes.
      await checkFiles(rootfs, SMALL, false, `cut ${cut}`);
      await fs.rm(rootfs, { recursive: true, force: true });
    }
    assert.ok(accepted > 0 && accepted < cuts.size, 'both outcomes were exercised');
  });
});

void describe('applyLayer: a layer written by umoci insert', () => {
  void test('unpacks, although its tar stream stops after the last entry’s data', async (t) => {
    try {
      await execFileAsync('umoci', ['--version']);
    } catch {
      return t.skip('umoci is not installed (apt-get install umoci)');
    }
    const src = await fs.mkdtemp(path.join(base, 'umoci-src-'));
    await writeTree(src, Object.keys(FILES));
    const layout = path.join(base, 'umoci-layout');
    await execFileAsync('umoci', ['init', '--layout', layout]);
    await execFileAsync('umoci', ['new', '--image', `${layout}:t`]);
    await execFileAsync('umoci', ['insert', '--image', `${layout}:t`, src, '/app']);
    const blob = async (digest: string): Promise<Buffer> =>
      fs.readFile(path.join(layout, 'blobs/sha256', digest.slice('sha256:'.length)));
    const index = JSON.parse((await fs.readFile(path.join(layout, 'index.json'))).toString()) as {
      manifests: { digest: string }[];
    };
    const manifest = JSON.parse((await blob(index.manifests[0]!.digest)).toString()) as {
      layers: { digest: string }[];
    };
    const layer = await blob(manifest.layers[0]!.digest);
    const tar = gunzipSync(layer);
    const tail = tar.subarray(Math.max(0, tar.length - 2 * BLOCK));
    assert.ok(
      tar.length % BLOCK !== 0 || tail.some((b) => b !== 0),
      'umoci wrote no end-of-archive blocks (else this test proves nothing)',
    );

    const rootfs = await newRootfs();
    const res = await apply(rootfs, layer);
    assert.equal(res.diffId, sha256(tar));
    await checkFiles(path.join(rootfs, 'app'), Object.keys(FILES), true);
  });
});
