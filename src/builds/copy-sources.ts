// The sources of a COPY or ADD step in the build context (or a stage's root for
// COPY --from): arguments expanded (Go globs per component), resolved inside
// the root through its symlinks (a path never leaves it), hidden by
// .dockerignore, walked into plan entries, and read chunk by chunk, failing when
// a file changed since it was planned.
import { createHash } from 'node:crypto';
import { constants as fsc, type Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errnoCode } from '../core/errors.js';
import { cleanPath, compileGlob, hasGlobMeta } from '../core/dockerignore.js';
import { MAX_SYMLINKS } from '../images/unpack/index.js';
import {
  invalid,
  join,
  seconds,
  type EntryRole,
  type PlanCopyOptions,
  type PlanEntry,
} from './copy-model.js';

const CHUNK = 64 * 1024;

/** A source resolved inside the root. */
export interface Source {
  /** The path as named (glob matched), for the name of a copied file. */
  readonly named: string;
  /** Real path relative to the root after following symlinks ('' is the root). */
  readonly rel: string;
  readonly host: string;
  readonly stat: Stats;
}

/** One planCopy call: its options, the step's name for messages, where the sources are, and its warnings. */
export interface PlanCtx {
  readonly o: PlanCopyOptions;
  readonly what: 'COPY' | 'ADD';
  readonly where: string;
  readonly warnings: string[];
}

/**
 * Resolve `rel` inside `root` the way the image would see `root` as `/`:
 * symlinks are followed (absolute targets from `root`), a `..` above `root`
 * is refused. `undefined` when a component is missing or not a directory.
 */
async function resolveInRoot(c: PlanCtx, rel: string): Promise<Source | undefined> {
  const pending = rel === '' ? [] : rel.split('/');
  const stack: string[] = [];
  const stats: Stats[] = [];
  let links = 0;
  for (let part = pending.shift(); part !== undefined; part = pending.shift()) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (stack.length === 0) {
        throw invalid(
          `${c.what} source ${JSON.stringify(rel)} leads outside ${c.where} through a symlink`,
          { source: rel },
        );
      }
      stack.pop();
      stats.pop();
      continue;
    }
    const host = path.join(c.o.root, ...stack, part);
    const st = await lstatOrUndefined(host);
    if (st === undefined) return undefined;
    if (st.isSymbolicLink()) {
      links += 1;
      if (links > MAX_SYMLINKS)
        throw invalid(`${c.what} source ${JSON.stringify(rel)}: too many symlinks`);
      const target = await fs.readlink(host);
      if (target.startsWith('/')) {
        stack.length = 0;
        stats.length = 0;
      }
      pending.unshift(...target.split('/'));
      continue;
    }
    if (pending.length > 0 && !st.isDirectory()) return undefined;
    stack.push(part);
    stats.push(st);
  }
  const host = path.join(c.o.root, ...stack);
  const stat = stats.at(-1) ?? (await fs.stat(host));
  return { named: rel, rel: stack.join('/'), host, stat };
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(p);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
}

/** True when .dockerignore hides `s` (by its name or its real path). */
function hidden(c: PlanCtx, s: Source): boolean {
  const ig = c.o.ignore;
  if (ig === undefined) return false;
  const hides = (rel: string): boolean =>
    rel !== '' && ig.excluded(rel) && (!s.stat.isDirectory() || ig.skipDir(rel));
  return hides(s.named) || hides(s.rel);
}

/** The sources one COPY argument names: a path, or a glob matched per component. */
export async function expandSource(c: PlanCtx, raw: string): Promise<Source[]> {
  const cleaned = cleanPath(raw.replace(/^\/+/, ''));
  if (cleaned === '..' || cleaned.startsWith('../')) {
    throw invalid(`${c.what} source ${JSON.stringify(raw)} is outside ${c.where}`, { source: raw });
  }
  const parts = cleaned === '.' ? [] : cleaned.split('/');
  let named = [''];
  if (parts.some(hasGlobMeta)) {
    for (const part of parts) {
      const next: string[] = [];
      const match = hasGlobMeta(part) ? compileGlob(part) : undefined;
      for (const base of named) {
        if (match === undefined) {
          next.push(join(base, part));
          continue;
        }
        const dir = await resolveInRoot(c, base);
        if (dir === undefined || !dir.stat.isDirectory()) continue;
        for (const name of (await fs.readdir(dir.host)).sort())
          if (match(name)) next.push(join(base, name));
      }
      named = next;
    }
  } else {
    named = [parts.join('/')];
  }
  const found: Source[] = [];
  for (const n of named) {
    const s = await resolveInRoot(c, n);
    if (s !== undefined && !hidden(c, s)) found.push(s);
  }
  if (found.length === 0) {
    const why = parts.some(hasGlobMeta) ? 'matches no files' : 'does not exist';
    const ignored = c.o.ignore ? ' (or is excluded by .dockerignore)' : '';
    throw invalid(`${c.what} source ${JSON.stringify(raw)} ${why} in ${c.where}${ignored}`, {
      source: raw,
    });
  }
  return found;
}

/** Read `size` bytes of a regular file (never through a symlink), failing if it changed size. */
export async function readChunks(
  file: string,
  size: number,
  label: string,
  onChunk: (chunk: Buffer) => Promise<void> | void,
): Promise<void> {
  const changed = (): VesselError =>
    new VesselError(
      'conflict',
      `${label} changed while the layer was being built; run the build again`,
    );
  const fh = await fs.open(file, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  try {
    let remaining = size;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, remaining + 1));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      if (bytesRead > remaining) throw changed();
      remaining -= bytesRead;
      await onChunk(buf.subarray(0, bytesRead));
    }
    if (remaining !== 0) throw changed();
  } finally {
    await fh.close();
  }
}

export async function fileDigest(file: string, size: number, label: string): Promise<string> {
  const hash = createHash('sha256');
  await readChunks(file, size, label, (chunk) => void hash.update(chunk));
  return `sha256:${hash.digest('hex')}`;
}

/** Plan entries for the tree under `host` (`rel` in the root), placed under `layer`. */
export async function walk(
  c: PlanCtx,
  host: string,
  rel: string,
  layer: string,
): Promise<PlanEntry[]> {
  const out: PlanEntry[] = [];
  const ig = c.o.ignore;
  for (const name of (await fs.readdir(host)).sort()) {
    const childHost = path.join(host, name);
    const childRel = join(rel, name);
    const childLayer = join(layer, name);
    const st = await fs.lstat(childHost);
    const excluded = ig?.excluded(childRel) ?? false;
    if (st.isDirectory()) {
      if (excluded && ig?.skipDir(childRel)) continue;
      const inner = await walk(c, childHost, childRel, childLayer);
      // An excluded directory is kept only as the parent of re-included paths, as BuildKit sends it.
      if (excluded && inner.length === 0) continue;
      out.push(dirEntry(childLayer, 'copied', st), ...inner);
    } else if (excluded) {
      continue;
    } else if (st.isFile()) {
      out.push(await fileEntry(c, childHost, childLayer, st));
    } else if (st.isSymbolicLink()) {
      out.push({
        type: 'symlink',
        path: childLayer,
        target: await fs.readlink(childHost),
        mtime: seconds(st.mtime),
      });
    } else {
      c.warnings.push(
        `skipped ${JSON.stringify(childRel)}: sockets, FIFOs and devices are not copied`,
      );
    }
  }
  return out;
}

export function dirEntry(
  p: string,
  role: EntryRole,
  st: { mode: number; mtime: Date; uid?: number; gid?: number },
): PlanEntry {
  return {
    type: 'dir',
    path: p,
    role,
    mode: st.mode & 0o7777,
    uid: st.uid ?? 0,
    gid: st.gid ?? 0,
    mtime: seconds(st.mtime),
  };
}

export async function fileEntry(
  c: PlanCtx,
  host: string,
  layer: string,
  st: Stats,
): Promise<PlanEntry> {
  const digest = await fileDigest(host, st.size, `${c.what} source file ${JSON.stringify(layer)}`);
  return {
    type: 'file',
    path: layer,
    source: host,
    size: st.size,
    digest,
    mode: st.mode & 0o7777,
    mtime: seconds(st.mtime),
  };
}
