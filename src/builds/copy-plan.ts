// Planning a COPY or ADD layer with Docker's rules: which entries go where in
// the image (dest resolved through the image's symlinks, parents keeping the
// image's metadata), and the content hash that keys the step cache. ADD
// archives are only sniffed and hashed here; copy-layer.ts extracts them.
import { createHash } from 'node:crypto';
import type { Stats } from 'node:fs';
import path from 'node:path';
import { URL_SOURCE } from './dockerfile.js';
import { sniffArchive } from './copy-archive.js';
import {
  invalid,
  join,
  seconds,
  type ArchiveEntry,
  type CopyPlan,
  type EntryRole,
  type PlanCopyOptions,
  type PlanEntry,
} from './copy-model.js';
import {
  dirEntry,
  expandSource,
  fileDigest,
  fileEntry,
  walk,
  type PlanCtx,
  type Source,
} from './copy-sources.js';
import { resolveInImage, type ExistingLookup, type ExistingPath } from './image-paths.js';

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
  const c: PlanCtx = {
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
async function place(c: PlanCtx, s: Source, dest: Dest, placed: Placed): Promise<void> {
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
