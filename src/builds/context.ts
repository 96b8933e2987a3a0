// The layer of a COPY or ADD step: which files of a source tree (the build
// context, or a stage's root for COPY --from) go where in the image, a hash of
// everything that decides the layer (the step cache key), and the layer itself
// as an uncompressed tar written with tar-stream. Source trees and ADD archives
// are user input: paths never leave the root, archive entries never leave dest.
import { createHash } from 'node:crypto';
import { constants as fsc, createReadStream, type Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract, pack, type Header, type Pack } from 'tar-stream';
import {
  VesselError,
  errnoCode,
  errorMessage,
  isVesselError,
  toVesselError,
} from '../core/errors.js';
import { cleanPath, compileGlob, hasGlobMeta, type Matcher } from '../core/dockerignore.js';
import {
  MAX_SYMLINKS,
  entryComponents,
  entryMeta,
  openLayerStream,
  sniffCompression,
} from '../images/unpack/index.js';
import { URL_SOURCE } from './dockerfile.js';

/** What the image below the step already has at a path; lets parents and dest keep their metadata. */
export interface ExistingPath {
  readonly isDir: boolean;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: Date;
  /** Set when the path is a symlink: its target as the image stores it. */
  readonly linkTarget?: string;
}

/** The image below the step, by absolute path (`/usr/bin`); `/` is the root. */
export type ExistingLookup = (imagePath: string) => ExistingPath | undefined;

/**
 * `parent`: a directory above dest, kept as the image has it (or 0755 root:root
 * when missing). `dest`: the destination directory created for file sources
 * (gets --chown, not --chmod). `copied`: a source entry (gets --chown and
 * --chmod). Archive entries keep their own owners and modes.
 */
export type EntryRole = 'parent' | 'dest' | 'copied';

export type PlanEntry =
  | {
      readonly type: 'dir';
      readonly path: string;
      readonly role: EntryRole;
      readonly mode: number;
      readonly uid: number;
      readonly gid: number;
      readonly mtime: Date;
    }
  | {
      readonly type: 'file';
      readonly path: string;
      readonly source: string;
      readonly size: number;
      readonly digest: string;
      readonly mode: number;
      readonly mtime: Date;
    }
  | {
      readonly type: 'symlink';
      readonly path: string;
      readonly target: string;
      readonly mtime: Date;
    }
  | ArchiveEntry;

/**
 * An ADD archive, extracted under `path` when the layer is written. Only its
 * bytes were read while planning (`digest`); its entries are checked, metered
 * and written in one pass by `writeCopyLayer`.
 */
export interface ArchiveEntry {
  readonly type: 'archive';
  readonly path: string;
  /** The source as the step names it, for messages. */
  readonly named: string;
  readonly source: string;
  readonly digest: string;
  readonly mtime: Date;
  /**
   * True when the image below has a directory at a layer path (through its
   * symlinks): the archive's implicit parents there are not written, so
   * /tmp keeps 1777 and a home directory its owner.
   */
  readonly imageHasDir: (layerPath: string) => boolean;
}

/**
 * A COPY/ADD layer, planned. `entries` are in layer order: paths relative to
 * the image root (no leading `/`), sorted with every directory before its
 * contents; ADD archives come last, in source order, and are extracted under
 * their `path` when the layer is written.
 */
export interface CopyPlan {
  readonly entries: readonly PlanEntry[];
  /**
   * `sha256:<hex>` of every path, type, mode, link target and file content of
   * the layer (archives: their bytes), and of parents' owners. mtimes are left
   * out, like Docker's cache: a cache hit reuses the layer written earlier,
   * whose tar holds the mtimes of that time. --chown/--chmod are not in it;
   * the step text in the cache key carries them.
   */
  readonly contentHash: string;
  /** Sources skipped on purpose (sockets, FIFOs, devices); archive entries are reported by `writeCopyLayer`. */
  readonly warnings: readonly string[];
}

export interface PlanCopyOptions {
  /** The build context directory, or the root of the tree COPY --from reads. */
  readonly root: string;
  /** Expanded sources, relative to `root` (a leading `/` is too); Go globs per component. */
  readonly sources: readonly string[];
  /** Expanded destination; relative to `workdir` unless absolute; a trailing `/` makes it a directory. */
  readonly dest: string;
  /** The stage's working directory (absolute). */
  readonly workdir: string;
  /** The build context's .dockerignore: ignored paths do not exist for COPY. */
  readonly ignore?: Matcher;
  /** ADD: extract local tar archives (plain, gzip, zstd) into dest, refuse URLs. */
  readonly allowTarExtract: boolean;
  /**
   * The image below: dest and its parents are resolved through its symlinks
   * (`resolveInImage`), existing ones keep their metadata, and a file copied
   * onto an existing directory goes into it.
   */
  readonly existing?: ExistingLookup;
  /** How errors name `root`; default "the build context". */
  readonly rootLabel?: string;
}

type HeaderArg = Partial<Header> & Pick<Header, 'name'>;
type Sink = ReturnType<Pack['entry']>;

const CHUNK = 64 * 1024;
const MAX_ID = 0xfffffffe;

function invalid(message: string, details?: Record<string, unknown>): VesselError {
  return new VesselError('invalid_argument', message, details ? { details } : {});
}

// ---- the image below ----------------------------------------------------------------------

/**
 * The real path of `relPath` (relative to the image root, `/`-separated, ''
 * for the root) in the image `existing` describes, following the image's
 * symlinks as the kernel would with the image as `/`: absolute targets restart
 * at the root, `..` stops at the root, components the image lacks are kept as
 * named. The last component is followed only when it leads to a directory: a
 * destination that is a symlink to a file (or a dangling one) keeps its own
 * name, so COPY replaces that link instead of writing through it into another
 * file. Throws `invalid_argument` past MAX_SYMLINKS links (a loop).
 */
export function resolveInImage(existing: ExistingLookup, relPath: string): string {
  return follow(existing, [], relPath.split('/'), { links: 0, relPath }).join('/');
}

function follow(
  existing: ExistingLookup,
  start: readonly string[],
  parts: readonly string[],
  state: { links: number; readonly relPath: string },
): string[] {
  const out = [...start];
  const pending = [...parts];
  for (let part = pending.shift(); part !== undefined; part = pending.shift()) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      out.pop();
      continue;
    }
    const target = existing(`/${[...out, part].join('/')}`)?.linkTarget;
    if (target === undefined) {
      out.push(part);
      continue;
    }
    state.links += 1;
    if (state.links > MAX_SYMLINKS) {
      throw invalid(
        `path ${JSON.stringify(`/${state.relPath}`)} of the image: too many levels of symbolic links`,
        { path: `/${state.relPath}` },
      );
    }
    const absolute = target.startsWith('/');
    if (pending.some((p) => p !== '' && p !== '.')) {
      if (absolute) out.length = 0;
      pending.unshift(...target.split('/'));
      continue;
    }
    const real = follow(existing, absolute ? [] : out, target.split('/'), state);
    if (real.length === 0 || existing(`/${real.join('/')}`)?.isDir === true) return real;
    out.push(part);
    return out;
  }
  return out;
}

// ---- sources ------------------------------------------------------------------------------

/** A source resolved inside the root. */
interface Source {
  /** The path as named (glob matched), for the name of a copied file. */
  readonly named: string;
  /** Real path relative to the root after following symlinks ('' is the root). */
  readonly rel: string;
  readonly host: string;
  readonly stat: Stats;
}

interface Ctx {
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
async function resolveInRoot(c: Ctx, rel: string): Promise<Source | undefined> {
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
function hidden(c: Ctx, s: Source): boolean {
  const ig = c.o.ignore;
  if (ig === undefined) return false;
  const hides = (rel: string): boolean =>
    rel !== '' && ig.excluded(rel) && (!s.stat.isDirectory() || ig.skipDir(rel));
  return hides(s.named) || hides(s.rel);
}

const join = (a: string, b: string): string => (a === '' ? b : b === '' ? a : `${a}/${b}`);
const seconds = (d: Date): Date => new Date(Math.max(0, Math.floor(d.getTime() / 1000)) * 1000);

/** The sources one COPY argument names: a path, or a glob matched per component. */
async function expandSource(c: Ctx, raw: string): Promise<Source[]> {
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
async function readChunks(
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

async function fileDigest(file: string, size: number, label: string): Promise<string> {
  const hash = createHash('sha256');
  await readChunks(file, size, label, (chunk) => void hash.update(chunk));
  return `sha256:${hash.digest('hex')}`;
}

async function walk(c: Ctx, host: string, rel: string, layer: string): Promise<PlanEntry[]> {
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

function dirEntry(
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

async function fileEntry(c: Ctx, host: string, layer: string, st: Stats): Promise<PlanEntry> {
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

/** Component-wise order: a directory sorts right before its contents. */
function compareLayerPaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i += 1) {
    if (pa[i] !== pb[i]) return pa[i]! < pb[i]! ? -1 : 1;
  }
  return pa.length - pb.length;
}

/** Entries by layer path; a later source replaces an earlier one (and a non-directory its subtree). */
class EntryMap {
  private readonly byPath = new Map<string, PlanEntry>();

  add(e: PlanEntry): void {
    const old = this.byPath.get(e.path);
    if (old?.type === 'dir' && e.type !== 'dir') {
      for (const p of [...this.byPath.keys()])
        if (p.startsWith(`${e.path}/`)) this.byPath.delete(p);
    }
    this.byPath.set(e.path, e);
  }

  has(p: string): boolean {
    return this.byPath.has(p);
  }

  sorted(): PlanEntry[] {
    return [...this.byPath.values()].sort((a, b) => compareLayerPaths(a.path, b.path));
  }
}

/** Where a step's sources go: dest resolved in the image, and what the image has there. */
interface Dest {
  /** Real path of dest in the image, relative to its root ('' is the root). */
  readonly layer: string;
  /** dest ends in `/` (or is `.`): sources go into it. */
  readonly dirSyntax: boolean;
  readonly existing: ExistingPath | undefined;
  readonly now: Date;
}

/** What the sources put in the layer, before dest and its parents are added. */
interface Placed {
  readonly entries: EntryMap;
  readonly archives: PlanEntry[];
  /** The entry dest gets when a source goes into it. */
  destDir?: { role: EntryRole; from?: Stats };
  /** Where a single file source went when dest names the file itself. */
  fileTarget?: string;
}

/**
 * Plan the layer of a COPY (or ADD, `allowTarExtract`) step with Docker's
 * rules: sources relative to `root`, Go globs per path component (no match is
 * an error); a directory source copies its contents; several sources need a
 * dest ending in `/`; a file goes to `dest/<name>` when dest ends in `/` (or
 * exists as a directory per `existing`), else to dest itself. dest and its
 * parents are resolved through the image's symlinks (`resolveInImage`), so the
 * layer writes under their real paths and never replaces such a link. Sources
 * never leave `root` (`..`, symlinks); symlinks inside a copied tree are
 * copied as symlinks. ADD archives are only hashed here. Throws
 * `invalid_argument` naming the source.
 */
export async function planCopy(o: PlanCopyOptions): Promise<CopyPlan> {
  const c: Ctx = {
    o,
    what: o.allowTarExtract ? 'ADD' : 'COPY',
    where: o.rootLabel ?? 'the build context',
    warnings: [],
  };
  if (o.sources.length === 0 || o.dest === '')
    throw invalid(`${c.what} needs at least one source and a destination`);
  if (o.allowTarExtract) {
    const url = o.sources.find((s) => URL_SOURCE.test(s));
    if (url !== undefined)
      throw invalid(`ADD of a URL is not supported: ${url}; use RUN curl ... with --network`);
  }
  const sources: Source[] = [];
  for (const raw of o.sources) sources.push(...(await expandSource(c, raw)));
  const dirSyntax = o.dest.endsWith('/') || o.dest === '.' || o.dest.endsWith('/.');
  if (sources.length > 1 && !dirSyntax) {
    throw invalid(
      `${c.what} with more than one source file needs a destination directory ending in "/" (got ${JSON.stringify(o.dest)})`,
    );
  }
  const lookup = o.existing;
  const named = path.posix.resolve('/', o.workdir, o.dest).slice(1);
  const layer = lookup === undefined ? named : resolveInImage(lookup, named);
  const dest: Dest = {
    layer,
    dirSyntax,
    existing: layer === '' ? undefined : lookup?.(`/${layer}`),
    now: seconds(new Date()),
  };
  const placed: Placed = { entries: new EntryMap(), archives: [] };
  for (const s of sources) await place(c, s, dest, placed);
  const top =
    placed.destDir === undefined
      ? path.posix.dirname(`/${placed.fileTarget ?? layer}`).slice(1)
      : layer;
  addParents(lookup, placed.entries, top, dest, placed.destDir);
  const ordered = [...placed.entries.sorted(), ...placed.archives];
  return { entries: ordered, contentHash: hashPlan(ordered), warnings: c.warnings };
}

/** Add what one source puts in the layer to `placed`. */
async function place(c: Ctx, s: Source, dest: Dest, placed: Placed): Promise<void> {
  const useDestDir = (role: EntryRole, from?: Stats): void => {
    const current = placed.destDir;
    if (current === undefined || (current.role === 'parent' && role !== 'parent'))
      placed.destDir = from ? { role, from } : { role };
  };
  if (s.stat.isDirectory()) {
    // BuildKit creates `dest/` with 0755 first; a dest without `/` is made from the source dir.
    if (dest.dirSyntax) useDestDir('dest');
    else useDestDir('copied', s.stat);
    for (const e of await walk(c, s.host, s.rel, dest.layer)) placed.entries.add(e);
    return;
  }
  if (!s.stat.isFile()) {
    throw invalid(`${c.what} source ${JSON.stringify(s.named)} is not a regular file or directory`);
  }
  if (c.o.allowTarExtract && (await sniffArchive(s.host, s.named))) {
    useDestDir('parent');
    placed.archives.push(await archiveEntry(c.o.existing, s, dest));
    return;
  }
  const intoDir = dest.dirSyntax || dest.existing?.isDir === true;
  // Into a directory, the file's own name is not resolved in the image: a
  // link there (to a file or a directory) is replaced by the file.
  const target = intoDir ? join(dest.layer, path.posix.basename(s.named)) : dest.layer;
  if (target === '')
    throw invalid(
      `${c.what} cannot replace the root directory with file ${JSON.stringify(s.named)}`,
    );
  if (intoDir) useDestDir('dest');
  else placed.fileTarget = target;
  placed.entries.add(await fileEntry(c, s.host, target, s.stat));
}

/** Entries for dest and every directory above it, unless a source already provides one. */
function addParents(
  lookup: ExistingLookup | undefined,
  entries: EntryMap,
  top: string,
  dest: Dest,
  destDir: { role: EntryRole; from?: Stats } | undefined,
): void {
  const parts = top === '' ? [] : top.split('/');
  for (let i = 1; i <= parts.length; i += 1) {
    const p = parts.slice(0, i).join('/');
    if (entries.has(p)) continue;
    const isDest = destDir !== undefined && i === parts.length;
    const existing = isDest ? dest.existing : lookup?.(`/${p}`);
    if (existing?.isDir) entries.add(dirEntry(p, 'parent', existing));
    else if (isDest && destDir?.from) entries.add(dirEntry(p, destDir.role, destDir.from));
    else
      entries.add(
        dirEntry(p, isDest ? (destDir?.role ?? 'parent') : 'parent', {
          mode: 0o755,
          mtime: dest.now,
        }),
      );
  }
}

function hashPlan(entries: readonly PlanEntry[]): string {
  const hash = createHash('sha256').update('vessel-copy-layer/1\n');
  for (const e of entries) {
    const fields: unknown[] =
      e.type === 'dir'
        ? [e.type, e.path, e.role, e.mode, e.role === 'parent' ? [e.uid, e.gid] : null]
        : e.type === 'file'
          ? [e.type, e.path, e.mode, e.size, e.digest]
          : e.type === 'symlink'
            ? [e.type, e.path, e.target]
            : [e.type, e.path, e.digest];
    hash.update(`${JSON.stringify(fields)}\n`);
  }
  return `sha256:${hash.digest('hex')}`;
}

// ---- ADD archives -------------------------------------------------------------------------

const BZIP2 = [0x42, 0x5a, 0x68];
const XZ = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

const startsWith = (head: Buffer, magic: number[]): boolean =>
  head.length >= magic.length && magic.every((b, i) => head[i] === b);

/** A valid ustar/GNU/v7 header block: its checksum adds up. */
function isTarHeader(block: Buffer): boolean {
  if (block.length < 512 || block[0] === 0) return false;
  const field = block
    .subarray(148, 156)
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]+$/.test(field)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i += 1) sum += i >= 148 && i < 156 ? 0x20 : block[i]!;
  return sum === parseInt(field, 8);
}

/**
 * The first `n` bytes of `stream`, then destroys it. Unlike the unpacker's
 * head reader (which puts the bytes back for the decompressor), this one
 * only looks, and a read error gives what was read so far.
 */
async function readHead(stream: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length >= n) break;
    }
  } catch {
    // A corrupt compressed file is not an archive: ADD copies it as a file.
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks).subarray(0, n);
}

/**
 * True when ADD should extract the file: a tar, plain or gzip/zstd-compressed
 * (checked by decompressing its first block only). bzip2 and xz files are
 * refused: Node cannot tell whether they hold a tar without a decompressor.
 */
async function sniffArchive(host: string, named: string): Promise<boolean> {
  const head = await readHead(createReadStream(host, { end: 511 }), 512);
  if (startsWith(head, BZIP2) || startsWith(head, XZ)) {
    const kind = startsWith(head, XZ) ? 'xz' : 'bzip2';
    throw invalid(
      `ADD of ${JSON.stringify(named)}: ${kind}-compressed files are not supported (only plain, gzip and zstd tar archives are extracted); use COPY and RUN tar, or recompress it`,
      { source: named },
    );
  }
  if (sniffCompression(head) === 'none') return isTarHeader(head);
  return isTarHeader(await readHead(await openLayerStream(createReadStream(host)), 512));
}

/** An ADD archive in the plan: its bytes hashed, nothing decompressed (a cache hit needs no more). */
async function archiveEntry(
  lookup: ExistingLookup | undefined,
  s: Source,
  dest: Dest,
): Promise<ArchiveEntry> {
  const digest = await fileDigest(s.host, s.stat.size, `ADD archive ${JSON.stringify(s.named)}`);
  const imageHasDir = (layerPath: string): boolean => {
    if (lookup === undefined) return false;
    const real = resolveInImage(lookup, layerPath);
    return real === '' || lookup(`/${real}`)?.isDir === true;
  };
  return {
    type: 'archive',
    path: dest.layer,
    named: s.named,
    source: s.host,
    digest,
    mtime: dest.now,
    imageHasDir,
  };
}

type ArchiveItem =
  | { kind: 'skip'; warning?: string }
  | { kind: 'entry'; name: string; header: HeaderArg; linkTarget?: string };

/** Checks archive entries as they come, in order; one per pass over an archive. */
class ArchiveChecker {
  private readonly types = new Map<string, string>();

  constructor(private readonly label: string) {}

  private bad(name: string, why: string): VesselError {
    return invalid(`ADD archive ${this.label}: entry ${JSON.stringify(name)} ${why}`, {
      archive: this.label,
      entry: name,
    });
  }

  /** The image unpacker's own checks (names, ids), failing as this ADD archive's error. */
  private shared<T>(check: () => T): T {
    try {
      return check();
    } catch (err) {
      if (!isVesselError(err, 'unsafe_layer')) throw err;
      throw new VesselError('invalid_argument', `ADD archive ${this.label}: ${err.message}`, {
        cause: err,
        details: { ...err.details, archive: this.label },
      });
    }
  }

  check(h: Header): ArchiveItem {
    const name = this.shared(() => entryComponents(h.name)).join('/');
    const type = h.type ?? 'file';
    if (name === '') return { kind: 'skip' };
    const parts = name.split('/');
    for (let i = 1; i < parts.length; i += 1) {
      if (this.types.get(parts.slice(0, i).join('/')) === 'symlink') {
        throw this.bad(h.name, 'is written through a symlink of the archive');
      }
    }
    const meta = this.shared(() => entryMeta(h, h.name));
    const header: HeaderArg = {
      name,
      type,
      mode: meta.mode,
      uid: meta.uid,
      gid: meta.gid,
      mtime: seconds(meta.mtime),
      size: type === 'file' || type === 'contiguous-file' ? (h.size ?? 0) : 0,
    };
    let linkTarget: string | undefined;
    if (type === 'symlink') {
      const target = h.linkname ?? '';
      if (!target.startsWith('/')) {
        const resolved = cleanPath(`${path.posix.dirname(name)}/${target}`);
        if (resolved === '..' || resolved.startsWith('../'))
          throw this.bad(
            h.name,
            `is a symlink to ${JSON.stringify(target)}, outside the destination`,
          );
      }
      header.linkname = target;
    } else if (type === 'link') {
      const raw = h.linkname ?? '';
      linkTarget = this.shared(() => entryComponents(raw, h.name, 'hard link target')).join('/');
      const t = this.types.get(linkTarget);
      if (t === undefined || t === 'directory')
        throw this.bad(
          h.name,
          `is a hard link to ${JSON.stringify(raw)}, which is not an earlier file of the archive`,
        );
    } else if (type === 'character-device' || type === 'block-device' || type === 'fifo') {
      return {
        kind: 'skip',
        warning: `skipped ${type} ${JSON.stringify(name)} of archive ${this.label}`,
      };
    } else if (type !== 'file' && type !== 'contiguous-file' && type !== 'directory') {
      throw this.bad(h.name, `has type ${String(h.type)}, which ADD does not extract`);
    }
    if (type === 'contiguous-file') header.type = 'file';
    this.types.set(name, type === 'link' ? 'file' : type);
    return linkTarget === undefined
      ? { kind: 'entry', name, header }
      : { kind: 'entry', name, header, linkTarget };
  }
}

/** Decompressed bytes the layer's archives may still produce. */
interface ByteBudget {
  left: number;
  readonly max: number;
}

/** Counts the bytes passing through against `budget`; fails with `layer_too_large` past it. */
function meter(budget: ByteBudget, label: string): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, done): void {
      budget.left -= chunk.length;
      if (budget.left >= 0) return done(null, chunk);
      done(
        new VesselError(
          'layer_too_large',
          `ADD archive ${label} unpacks to more than ${budget.max} bytes, the most a layer may hold`,
          { details: { archive: label, maxBytes: budget.max } },
        ),
      );
    },
  });
}

/** A read of an archive entry's data failed: the archive's fault (truncated, corrupt, too big). */
class EntryReadError extends Error {
  constructor(cause: unknown) {
    super(errorMessage(cause), { cause });
  }
}

/** `onEntry` failed other than reading the entry: the layer's output, not the archive. */
class EntryWriteError extends Error {
  constructor(cause: unknown) {
    super(errorMessage(cause), { cause });
  }
}

/** `data`, its read errors marked as EntryReadError. */
async function* marked(data: AsyncIterable<unknown>): AsyncGenerator<unknown> {
  try {
    for await (const chunk of data) yield chunk;
  } catch (err) {
    throw new EntryReadError(err);
  }
}

/**
 * Read an ADD archive once: each checked entry with its data stream (drained
 * when `onEntry` leaves it), the decompressed bytes metered against `budget`.
 * Returns the `sha256:<hex>` of the archive's bytes as they were read. An
 * error of `onEntry` that is not a read of the data is passed on as it is.
 */
async function forEachEntry(
  file: string,
  label: string,
  budget: ByteBudget,
  onEntry: (item: ArchiveItem, data: AsyncIterable<unknown>) => Promise<void>,
): Promise<string> {
  const checker = new ArchiveChecker(label);
  const hash = createHash('sha256');
  const hashed = new Transform({
    transform(chunk: Buffer, _encoding, done): void {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const hashing = pipeline(createReadStream(file), hashed);
  hashing.catch(() => undefined);
  const x = extract();
  let reading: Promise<void> | undefined;
  try {
    reading = pipeline(await openLayerStream(hashed), meter(budget, label), x);
    reading.catch(() => undefined);
    for await (const entry of x) {
      const item = checker.check(entry.header);
      try {
        await onEntry(item, marked(entry));
      } catch (err) {
        throw err instanceof EntryReadError ? err : new EntryWriteError(err);
      }
      entry.resume();
    }
    await reading;
    await hashing;
  } catch (err) {
    x.destroy();
    hashed.destroy();
    const settled = await Promise.allSettled([reading, hashing]);
    if (err instanceof EntryWriteError) throw err.cause;
    // The reading side's own error (layer_too_large) wins over what it caused downstream.
    const reasons = settled.map((r): unknown => (r.status === 'rejected' ? r.reason : undefined));
    const read: unknown = err instanceof EntryReadError ? err.cause : err;
    const known = [read, ...reasons].find((e): e is VesselError => e instanceof VesselError);
    if (known !== undefined) throw known;
    throw new VesselError(
      'invalid_argument',
      `ADD archive ${label} is not a readable tar archive: ${errorMessage(read)}`,
      { cause: err, details: { archive: label } },
    );
  }
  return `sha256:${hash.digest('hex')}`;
}

// ---- writing the layer --------------------------------------------------------------------

export interface LayerOwner {
  readonly uid: number;
  readonly gid: number;
  /** --chmod: permission bits for copied files and directories. */
  readonly chmod?: number;
}

const TYPE_BITS: Record<string, number> = {
  file: 0o100000,
  directory: 0o040000,
  symlink: 0o120000,
  link: 0o100000,
};

/** tar-stream writes 6 octal digits for ids; larger ones go in pax records. */
function withIds(h: HeaderArg, uid: number, gid: number): HeaderArg {
  // The type bits keep tar-stream from replacing a mode of 0 with its default.
  const out: HeaderArg = {
    ...h,
    uid,
    gid,
    mode: (h.mode ?? 0) | (TYPE_BITS[h.type ?? 'file'] ?? 0),
  };
  if (out.type === 'directory' && !out.name.endsWith('/')) out.name = `${out.name}/`;
  if (uid > 0o777777 || gid > 0o777777)
    out.pax = { ...(h.pax ?? {}), uid: String(uid), gid: String(gid) };
  return out;
}

function addEntry(
  tar: Pack,
  header: HeaderArg,
  body?: (sink: Sink) => Promise<void>,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const sink = tar.entry(header, (err) => (err ? reject(err) : resolve()));
    // Failures reach the caller through the callback or the body's own error.
    sink.on('error', () => undefined);
    if (!body) return;
    body(sink).then(
      () => sink.end(undefined),
      (err: unknown) => {
        reject(err instanceof Error ? err : new Error(String(err)));
        sink.destroy(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

async function writeChunk(sink: Sink, chunk: Buffer): Promise<void> {
  const closed = (): Error => new Error('the layer stream was closed');
  if (sink.destroying || sink.destroyed) throw closed();
  if (sink.write(chunk)) return;
  await new Promise<void>((resolve, reject) => {
    const settle = (err?: Error): void => {
      sink.off('drain', onDrain);
      sink.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => settle();
    const onClose = (): void => settle(closed());
    sink.on('drain', onDrain);
    sink.on('close', onClose);
  });
}

/** Options of `writeCopyLayer`: the owner of copied entries and the unpacked size limit. */
export interface CopyLayerOptions extends LayerOwner {
  /**
   * The most bytes the layer's ADD archives may decompress to, all together
   * (the image config's `max_unpacked_bytes`); past it the write fails with
   * `layer_too_large`. Compressed bombs stop here, not on the disk.
   */
  readonly maxBytes: number;
}

export interface CopyLayerResult {
  /** Archive entries skipped on purpose (devices, FIFOs), for the build log. */
  readonly warnings: readonly string[];
}

interface WriteCtx {
  readonly owner: LayerOwner;
  readonly budget: ByteBudget;
  readonly warnings: string[];
}

async function writePlanned(tar: Pack, e: PlanEntry, w: WriteCtx): Promise<void> {
  const { owner } = w;
  const mode = (m: number): number => owner.chmod ?? m;
  switch (e.type) {
    case 'dir': {
      const own = e.role === 'parent' ? [e.uid, e.gid] : [owner.uid, owner.gid];
      const m = e.role === 'copied' ? mode(e.mode) : e.mode;
      await addEntry(
        tar,
        withIds({ name: e.path, type: 'directory', mode: m, mtime: e.mtime }, own[0]!, own[1]!),
      );
      return;
    }
    case 'file': {
      const header = withIds(
        { name: e.path, type: 'file', mode: mode(e.mode), size: e.size, mtime: e.mtime },
        owner.uid,
        owner.gid,
      );
      const hash = createHash('sha256');
      const label = `source file for ${JSON.stringify(e.path)}`;
      await addEntry(tar, header, (sink) =>
        readChunks(e.source, e.size, label, async (chunk) => {
          hash.update(chunk);
          await writeChunk(sink, chunk);
        }),
      );
      if (`sha256:${hash.digest('hex')}` !== e.digest) {
        throw new VesselError(
          'conflict',
          `${label} changed while the layer was being built; run the build again`,
        );
      }
      return;
    }
    case 'symlink':
      await addEntry(
        tar,
        withIds(
          { name: e.path, type: 'symlink', linkname: e.target, mode: 0o777, mtime: e.mtime },
          owner.uid,
          owner.gid,
        ),
      );
      return;
    case 'archive':
      await writeArchive(tar, e, w);
      return;
  }
}

/** Extract `e` into the layer: checked, metered and hashed in the one pass over its bytes. */
async function writeArchive(tar: Pack, e: ArchiveEntry, w: WriteCtx): Promise<void> {
  const label = JSON.stringify(e.named);
  const dirs = new Set<string>();
  const others = new Set<string>();
  const digest = await forEachEntry(e.source, label, w.budget, async (item, data) => {
    if (item.kind === 'skip') {
      if (item.warning !== undefined) w.warnings.push(item.warning);
      return;
    }
    await addImplicitParents(tar, e, item.name, dirs, others);
    const h = item.header;
    if (h.type === 'directory') dirs.add(item.name);
    else others.add(item.name);
    const header = withIds(
      {
        ...h,
        name: join(e.path, item.name),
        ...(item.linkTarget === undefined ? {} : { linkname: join(e.path, item.linkTarget) }),
      },
      h.uid ?? 0,
      h.gid ?? 0,
    );
    if (h.type !== 'file') return addEntry(tar, header);
    return addEntry(tar, header, async (sink) => {
      for await (const chunk of data) await writeChunk(sink, chunk as Buffer);
    });
  });
  if (digest !== e.digest) {
    throw new VesselError(
      'conflict',
      `ADD archive ${label} changed while the layer was being built; run the build again`,
    );
  }
}

/**
 * Directories above an archive entry that the archive itself does not list:
 * 0755 root:root, unless the image below already has the directory (then the
 * entry would reset its mode and owner, so none is written).
 */
async function addImplicitParents(
  tar: Pack,
  e: ArchiveEntry,
  name: string,
  dirs: Set<string>,
  others: ReadonlySet<string>,
): Promise<void> {
  const parts = name.split('/');
  for (let i = 1; i < parts.length; i += 1) {
    const dir = parts.slice(0, i).join('/');
    if (dirs.has(dir)) continue;
    dirs.add(dir);
    const layerPath = join(e.path, dir);
    // A file of the archive at `dir` hides the image's directory: write the directory over it.
    if (!others.has(dir) && e.imageHasDir(layerPath)) continue;
    await addEntry(
      tar,
      withIds({ name: layerPath, type: 'directory', mode: 0o755, mtime: e.mtime }, 0, 0),
    );
  }
}

/**
 * Write the planned layer to `out` as an uncompressed tar (ends `out`):
 * relative names, directories with a trailing `/`, uname/gname empty, pax
 * records where ustar cannot hold a name, link target or id. Copied entries
 * get `uid`/`gid` (and `chmod`), parents keep theirs, archive entries their
 * own. ADD archives are checked here (hostile entries fail with
 * `invalid_argument`) and metered (`layer_too_large` past `maxBytes`). Fails
 * with `conflict` when a source changed since `planCopy`.
 */
export async function writeCopyLayer(
  plan: CopyPlan,
  opts: CopyLayerOptions,
  out: Writable,
): Promise<CopyLayerResult> {
  for (const [what, v] of [
    ['uid', opts.uid],
    ['gid', opts.gid],
  ] as const) {
    if (!Number.isInteger(v) || v < 0 || v > MAX_ID) throw invalid(`invalid ${what} ${v}`);
  }
  if (
    opts.chmod !== undefined &&
    (!Number.isInteger(opts.chmod) || opts.chmod < 0 || opts.chmod > 0o7777)
  ) {
    throw invalid(`invalid --chmod mode ${opts.chmod}`);
  }
  if (!(opts.maxBytes >= 0)) throw invalid(`invalid maxBytes ${opts.maxBytes}`);
  const w: WriteCtx = {
    owner: opts,
    budget: { left: opts.maxBytes, max: opts.maxBytes },
    warnings: [],
  };
  const tar = pack();
  const piping = pipeline(tar, out);
  const outFailed = piping.then(() => new Promise<never>(() => undefined));
  outFailed.catch(() => undefined);
  let current: Promise<void> | undefined;
  try {
    for (const e of plan.entries) {
      current = writePlanned(tar, e, w);
      // Its error is awaited here, or superseded by the output's.
      current.catch(() => undefined);
      await Promise.race([current, outFailed]);
    }
    tar.finalize();
    await piping;
  } catch (err) {
    tar.destroy();
    // Settle the entry being written (its file handle closes) before reporting.
    const [, entry] = await Promise.allSettled([piping, current]);
    // An entry that fails (a truncated archive) breaks the output with its error, and an
    // output that fails breaks the entry: when the two are one failure, the entry's names it.
    const failed: unknown = entry?.status === 'rejected' ? entry.reason : undefined;
    const reported = causedBy(failed, err) || causedBy(err, failed) ? failed : err;
    throw toVesselError(reported, 'writing the COPY layer');
  }
  return { warnings: w.warnings };
}

/** True when `err` is `cause` or has it in its chain of causes. */
function causedBy(err: unknown, cause: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && depth < 8; depth += 1) {
    if (e === cause) return true;
    e = e instanceof Error ? e.cause : undefined;
  }
  return false;
}

// ---- --chown and --chmod ------------------------------------------------------------------

/**
 * `--chown=user[:group]` with names or numeric ids. Without a group the gid is
 * the uid's number (Docker's rule). Names are looked up in the image's
 * /etc/passwd and /etc/group through `lookup`.
 */
export function parseChown(
  spec: string,
  lookup: { user(name: string): number | undefined; group(name: string): number | undefined },
): { uid: number; gid: number } {
  const parts = spec.split(':');
  const [user = '', group] = parts;
  if (parts.length > 2 || user === '' || group === '') {
    throw invalid(`invalid --chown ${JSON.stringify(spec)}: use user, user:group, uid or uid:gid`);
  }
  const id = (v: string, what: 'user' | 'group'): number => {
    if (/^\d+$/.test(v)) {
      const n = Number(v);
      if (n > MAX_ID)
        throw invalid(`invalid --chown ${JSON.stringify(spec)}: ${what} id ${v} is too large`);
      return n;
    }
    const n = lookup[what](v);
    if (n === undefined) {
      const file = what === 'user' ? '/etc/passwd' : '/etc/group';
      throw invalid(
        `--chown ${JSON.stringify(spec)}: no ${what} ${JSON.stringify(v)} in the image's ${file}`,
      );
    }
    return n;
  };
  const uid = id(user, 'user');
  return { uid, gid: group === undefined ? uid : id(group, 'group') };
}

/** `--chmod=0755`: octal permission bits (symbolic modes are not supported). */
export function parseChmod(spec: string): number {
  if (!/^[0-7]{1,4}$/.test(spec))
    throw invalid(`invalid --chmod ${JSON.stringify(spec)}: use an octal mode such as 755`);
  return parseInt(spec, 8);
}
