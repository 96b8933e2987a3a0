// Writing a planned COPY/ADD layer as an uncompressed OCI layer tar with
// tar-stream: copied entries get --chown/--chmod, parents keep the image's
// metadata, ADD archives are extracted under dest (checked and metered in the
// one pass), and a source that changed since planning fails the write.
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { pack, type Pack } from 'tar-stream';
import { VesselError, toVesselError } from '../core/errors.js';
import { MAX_ID } from './chown-chmod.js';
import { forEachEntry, type ByteBudget } from './copy-archive.js';
import {
  invalid,
  join,
  type ArchiveEntry,
  type CopyPlan,
  type HeaderArg,
  type PlanEntry,
} from './copy-model.js';
import { readChunks } from './copy-sources.js';

type Sink = ReturnType<Pack['entry']>;

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
