// Helpers of the COPY/ADD layer tests (test/unit/builds/copy-*.test.ts,
// image-paths.test.ts): a build context with files, modes, symlinks and a
// .dockerignore; the layer written and read back with tar-stream, GNU tar and
// the image unpacker; tars with any entry, hostile ones included.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { after, before } from 'node:test';
import { promisify } from 'node:util';
import { extract, pack, type Header } from 'tar-stream';
import { isVesselError, type ErrorCode } from '../../src/core/errors.js';
import { applyLayer } from '../../src/images/unpack/index.js';
import { writeCopyLayer, type CopyLayerOptions } from '../../src/builds/copy-layer.js';
import type { CopyPlan, PlanCopyOptions } from '../../src/builds/copy-model.js';
import { parseDockerignore } from '../../src/core/dockerignore.js';

export const execFileAsync = promisify(execFile);
export const T1 = new Date('2023-05-06T07:08:09Z');
export const BIG = randomBytes(200_000);

/**
 * The temporary directories of one test file, set by `useCopyDirs`: `base`
 * (with `outside/secret`, outside the context) and the build context `ctx` in it.
 */
export const dirs = { base: '', ctx: '' };
/** Probed when the module loads: `skip` options are read before any hook runs. */
export const gnuTar =
  spawnSync('tar', ['--version'], { encoding: 'utf8' }).stdout?.includes('GNU tar') ?? false;
export const zstdTool = spawnSync('zstd', ['--version']).status === 0;
export const MAX_BYTES = 64 * 1024 * 1024;

export interface Listed {
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

export async function write(
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

/** Registers the hooks that make `dirs` before the file's tests and remove them after. */
export function useCopyDirs(): void {
  before(async () => {
    dirs.base = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-copy-'));
    await write(dirs.base, 'outside/secret', 'OUTSIDE');
    dirs.ctx = path.join(dirs.base, 'ctx');
    await fs.mkdir(dirs.ctx);
    await makeContext(dirs.ctx);
  });

  after(async () => {
    await fs.rm(dirs.base, { recursive: true, force: true });
  });
}

export const ignore = (): ReturnType<typeof parseDockerignore> =>
  parseDockerignore('node_modules\n*.key\ndocs\n!docs/keep\n');

export function opts(
  o: Partial<PlanCopyOptions> & Pick<PlanCopyOptions, 'sources' | 'dest'>,
): PlanCopyOptions {
  return { root: dirs.ctx, workdir: '/', allowTarExtract: false, ...o };
}

/** The layer tar and the warnings of `writeCopyLayer` (root-owned, 64 MiB budget unless given). */
export async function written(
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

export async function layerOf(plan: CopyPlan, o: Partial<CopyLayerOptions> = {}): Promise<Buffer> {
  return (await written(plan, o)).tar;
}

export type TarEntry = Partial<Header> & { name: string; body?: string | Buffer };

/** A tar made with tar-stream: any entry, hostile ones included (GNU tar refuses most). */
export async function tarOf(entries: readonly TarEntry[]): Promise<Buffer> {
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

export async function list(tar: Buffer): Promise<Listed[]> {
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
export async function gnuList(tar: Buffer): Promise<string[][]> {
  const file = path.join(dirs.base, `layer-${Math.random().toString(36).slice(2)}.tar`);
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

export async function rejects(
  p: Promise<unknown>,
  code: ErrorCode,
  message: RegExp,
): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(isVesselError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
}

/** The layer applied by the image unpacker, onto an empty rootfs or the one `prepare` makes. */
export async function applied(
  tar: Buffer,
  prepare?: (rootfs: string) => Promise<void>,
): Promise<string> {
  const rootfs = await fs.mkdtemp(path.join(dirs.base, 'rootfs-'));
  await prepare?.(rootfs);
  await applyLayer(Readable.from([tar]), { rootfs, maxBytes: MAX_BYTES, canChown: false });
  return rootfs;
}

/** A merged-/usr rootfs, as Debian bookworm has it: /bin -> usr/bin. */
export async function mergedUsr(rootfs: string): Promise<void> {
  await fs.mkdir(path.join(rootfs, 'usr/bin'), { recursive: true });
  await fs.symlink('usr/bin', path.join(rootfs, 'bin'));
}

/** Writing `plan` to an output that fails with ENOSPC after 4 KiB is `disk_full`, not a hang. */
export async function rejectsOnFullDisk(plan: CopyPlan): Promise<void> {
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
}
