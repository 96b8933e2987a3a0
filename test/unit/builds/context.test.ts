// COPY/ADD layers: planning from real trees (files, modes, symlinks, .dockerignore),
// the layer tar checked with tar-stream, GNU tar and the image unpacker, images
// with symlinked directories (merged /usr), and hostile sources and archives
// (.., symlink escapes, absolute and escaping archive entries, gzip bombs).
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { extract, pack, type Header } from 'tar-stream';
import { isVesselError, type ErrorCode } from '../../../src/core/errors.js';
import { applyLayer } from '../../../src/images/unpack/index.js';
import {
  parseChmod,
  parseChown,
  planCopy,
  resolveInImage,
  writeCopyLayer,
  type CopyLayerOptions,
  type CopyPlan,
  type ExistingPath,
  type PlanCopyOptions,
} from '../../../src/builds/context.js';
import { parseDockerignore } from '../../../src/core/dockerignore.js';

const execFileAsync = promisify(execFile);
const T1 = new Date('2023-05-06T07:08:09Z');
const BIG = randomBytes(200_000);

let base = '';
let ctx = '';
/** Probed when the module loads: `skip` options are read before any hook runs. */
const gnuTar =
  spawnSync('tar', ['--version'], { encoding: 'utf8' }).stdout?.includes('GNU tar') ?? false;
const zstdTool = spawnSync('zstd', ['--version']).status === 0;
const MAX_BYTES = 64 * 1024 * 1024;

interface Listed {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string | null;
  uname: string;
  data: Buffer;
}

async function write(
  root: string,
  rel: string,
  content: string | Buffer,
  mode = 0o644,
): Promise<void> {
  const file = path.join(root, rel);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, content);
  await fs.chmod(file, mode);
  await fs.utimes(file, T1, T1);
}

/** The build context every test reads (never modified after `before`). */
async function makeContext(root: string): Promise<void> {
  await write(root, 'a.txt', 'hello\n');
  await write(root, 'b.txt', 'bee\n', 0o600);
  await write(root, 'bin/run.sh', '#!/bin/sh\necho hi\n', 0o755);
  await write(root, 'sub/deep/big.bin', BIG);
  await write(root, 'sub/.hidden', 'h');
  await write(root, 'node_modules/m.js', 'module');
  await write(root, 'secret.key', 'KEY');
  await write(root, 'docs/keep/k.md', 'keep');
  await write(root, 'docs/drop.md', 'drop');
  await write(root, 'Dockerfile', 'FROM scratch\n');
  await write(root, '.dockerignore', 'node_modules\n*.key\ndocs\n!docs/keep\n');
  await fs.symlink('a.txt', path.join(root, 'link-in'));
  await fs.symlink('/etc/passwd', path.join(root, 'sub/abs-link'));
  await fs.symlink('../../..', path.join(root, 'sub/evil'));
  await fs.symlink('sub', path.join(root, 'sub-link'));
  await fs.symlink('../outside', path.join(root, 'escape'));
  await fs.symlink('/sub', path.join(root, 'abs-sub'));
  await fs.chmod(path.join(root, 'sub'), 0o750);
  await fs.utimes(path.join(root, 'sub'), T1, T1);
}

before(async () => {
  base = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-copy-'));
  await write(base, 'outside/secret', 'OUTSIDE');
  ctx = path.join(base, 'ctx');
  await fs.mkdir(ctx);
  await makeContext(ctx);
});

after(async () => {
  await fs.rm(base, { recursive: true, force: true });
});

const ignore = (): ReturnType<typeof parseDockerignore> =>
  parseDockerignore('node_modules\n*.key\ndocs\n!docs/keep\n');

function opts(
  o: Partial<PlanCopyOptions> & Pick<PlanCopyOptions, 'sources' | 'dest'>,
): PlanCopyOptions {
  return { root: ctx, workdir: '/', allowTarExtract: false, ...o };
}

/** The layer tar and the warnings of `writeCopyLayer` (root-owned, 64 MiB budget unless given). */
async function written(
  plan: CopyPlan,
  o: Partial<CopyLayerOptions> = {},
): Promise<{ tar: Buffer; warnings: readonly string[] }> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const { warnings } = await writeCopyLayer(
    plan,
    { uid: 0, gid: 0, maxBytes: MAX_BYTES, ...o },
    out,
  );
  return { tar: Buffer.concat(chunks), warnings };
}

async function layerOf(plan: CopyPlan, o: Partial<CopyLayerOptions> = {}): Promise<Buffer> {
  return (await written(plan, o)).tar;
}

type TarEntry = Partial<Header> & { name: string; body?: string | Buffer };

/** A tar made with tar-stream: any entry, hostile ones included (GNU tar refuses most). */
async function tarOf(entries: readonly TarEntry[]): Promise<Buffer> {
  const p = pack();
  for (const e of entries) {
    const { body, ...h } = e;
    p.entry({ mode: 0o644, mtime: T1, ...h }, body ?? '');
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function list(tar: Buffer): Promise<Listed[]> {
  const out: Listed[] = [];
  const x = extract();
  const done = (async () => {
    for await (const e of x) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      const h: Header = e.header;
      const pax = (h.pax ?? {}) as Record<string, string>;
      out.push({
        name: h.name,
        type: h.type,
        mode: h.mode,
        uid: pax.uid === undefined ? h.uid : Number(pax.uid),
        gid: pax.gid === undefined ? h.gid : Number(pax.gid),
        size: h.size,
        mtime: h.mtime.getTime(),
        linkname: h.linkname,
        uname: h.uname,
        data: Buffer.concat(chunks),
      });
    }
  })();
  x.end(tar);
  await done;
  return out;
}

/** `tar -tvf` of the layer: [mode string, owner, name] per entry, from GNU tar. */
async function gnuList(tar: Buffer): Promise<string[][]> {
  const file = path.join(base, `layer-${Math.random().toString(36).slice(2)}.tar`);
  await fs.writeFile(file, tar);
  const { stdout } = await execFileAsync('tar', ['--numeric-owner', '-tvf', file]);
  await fs.rm(file);
  return stdout
    .trim()
    .split('\n')
    .map((line) => {
      const f = line.split(/\s+/);
      return [f[0]!, f[1]!, f.slice(5).join(' ')];
    });
}

async function rejects(p: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isVesselError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
}

/** The layer applied by the image unpacker, onto an empty rootfs or the one `prepare` makes. */
async function applied(tar: Buffer, prepare?: (rootfs: string) => Promise<void>): Promise<string> {
  const rootfs = await fs.mkdtemp(path.join(base, 'rootfs-'));
  await prepare?.(rootfs);
  await applyLayer(Readable.from([tar]), { rootfs, maxBytes: MAX_BYTES, canChown: false });
  return rootfs;
}

/** A merged-/usr rootfs, as Debian bookworm has it: /bin -> usr/bin. */
async function mergedUsr(rootfs: string): Promise<void> {
  await fs.mkdir(path.join(rootfs, 'usr/bin'), { recursive: true });
  await fs.symlink('usr/bin', path.join(rootfs, 'bin'));
}

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
          root: path.join(ctx, 'sub'),
        }),
      ),
      'invalid_argument',
      /in stage "build"/,
    );
  });

  test('contentHash: stable across mtimes, changes with content, mode and layout', async () => {
    const tree = path.join(base, 'hash-tree');
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
    const tree = path.join(base, 'changing');
    await write(tree, 'f', 'abc');
    const plan = await planCopy(opts({ root: tree, sources: ['f'], dest: '/f' }));
    await fs.writeFile(path.join(tree, 'f'), 'abcdef');
    await rejects(layerOf(plan), 'conflict', /changed while the layer was being built/);
    await fs.writeFile(path.join(tree, 'f'), 'xyz');
    await rejects(layerOf(plan), 'conflict', /changed while/);
  });

  test('a failing output stream fails the write instead of hanging', async () => {
    const plan = await planCopy(opts({ sources: ['sub'], dest: '/s/' }));
    let written = 0;
    const out = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        written += chunk.length;
        cb(written > 4096 ? Object.assign(new Error('no space'), { code: 'ENOSPC' }) : null);
      },
    });
    await rejects(
      writeCopyLayer(plan, { uid: 0, gid: 0, maxBytes: MAX_BYTES }, out),
      'disk_full',
      /writing the COPY layer: no space/,
    );
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
      const tree = path.join(base, 'long');
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
    archives = path.join(base, 'archives');
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
      const src = path.join(base, 'pkg-src');
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
    let written = 0;
    const out = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        written += chunk.length;
        cb(written > 4096 ? Object.assign(new Error('no space'), { code: 'ENOSPC' }) : null);
      },
    });
    await rejects(
      writeCopyLayer(plan, { uid: 0, gid: 0, maxBytes: MAX_BYTES }, out),
      'disk_full',
      /writing the COPY layer: no space/,
    );
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

describe('parseChown and parseChmod', () => {
  const accounts = {
    user: (n: string): number | undefined => ({ app: 1000, root: 0 })[n],
    group: (n: string): number | undefined => ({ staff: 50, root: 0 })[n],
  };
  test('names, ids and the uid-as-gid default', () => {
    assert.deepEqual(parseChown('1000:1000', accounts), { uid: 1000, gid: 1000 });
    assert.deepEqual(parseChown('55', accounts), { uid: 55, gid: 55 });
    assert.deepEqual(parseChown('app', accounts), { uid: 1000, gid: 1000 });
    assert.deepEqual(parseChown('app:staff', accounts), { uid: 1000, gid: 50 });
    assert.deepEqual(parseChown('0:staff', accounts), { uid: 0, gid: 50 });
  });
  test('errors', () => {
    const bad: [string, RegExp][] = [
      ['', /invalid --chown/],
      [':1', /invalid --chown/],
      ['1:', /invalid --chown/],
      ['a:b:c', /invalid --chown/],
      ['nobody', /no user "nobody" in the image's \/etc\/passwd/],
      ['app:nogroup', /no group "nogroup" in the image's \/etc\/group/],
      ['99999999999', /too large/],
    ];
    for (const [spec, message] of bad) {
      assert.throws(
        () => parseChown(spec, accounts),
        (err: unknown) => isVesselError(err, 'invalid_argument') && message.test(err.message),
        spec,
      );
    }
  });
  test('--chmod is octal', () => {
    assert.equal(parseChmod('755'), 0o755);
    assert.equal(parseChmod('0600'), 0o600);
    assert.equal(parseChmod('4755'), 0o4755);
    for (const bad of ['u+x', '888', '75555', ''])
      assert.throws(() => parseChmod(bad), /invalid --chmod/);
  });
});
