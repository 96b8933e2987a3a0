/**
 * The host side of `vessel cp`: pack a local path into a tar stream, and
 * unpack a tar stream from a guest into a local directory without ever
 * writing outside it. The guest is untrusted: its archive may name `../x`,
 * `/etc/x`, a symlink followed by an entry beneath it, or a hard link to a
 * file outside; each is refused with an error naming the entry, before
 * anything is written for it.
 *
 * tar-stream is loaded on first use (the CLI stays light for other commands).
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Header } from 'tar-stream';
import { VesselError } from '../core/errors.js';

export interface ExtractOptions {
  /** The directory entries are written under (it must exist). */
  readonly dest: string;
  /**
   * Replace the first component of every entry name: a new name (copy to a
   * new name), `''` to drop it (`SRC/.`: copy the contents), or undefined.
   */
  readonly rename?: string;
  /** Restore owners (`-a`, needs root). */
  readonly owners?: boolean;
}

export interface ExtractResult {
  readonly entries: number;
  readonly bytes: number;
  /** Entries skipped: devices, FIFOs, unknown types. */
  readonly skipped: readonly string[];
}

function unsafe(name: string, why: string): VesselError {
  return new VesselError('invalid_argument', `refusing archive entry "${name}": ${why}`, {
    details: { entry: name },
  });
}

/** An entry name as components under the destination; `..` or an absolute name is refused. */
export function entryComponents(name: string, rename: string | undefined): string[] {
  if (name.includes('\0')) throw unsafe(name, 'the name contains a NUL byte');
  if (name.startsWith('/')) throw unsafe(name, 'absolute names would escape the destination');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw unsafe(name, '".." would escape the destination');
  if (rename !== undefined && parts.length > 0) {
    if (rename === '') parts.shift();
    else parts[0] = rename;
  }
  return parts;
}

/**
 * Make sure each parent of `parts` under `root` is a real directory
 * (creating missing ones); a symlink or a file on the way is refused, so no
 * write can be redirected outside `root`.
 */
async function parentDir(root: string, parts: readonly string[], name: string): Promise<string> {
  let dir = root;
  for (const part of parts.slice(0, -1)) {
    dir = path.join(dir, part);
    const st = await fsp.lstat(dir).catch(() => null);
    if (!st) await fsp.mkdir(dir, { mode: 0o755 });
    else if (st.isSymbolicLink()) throw unsafe(name, `"${part}" on its path is a symlink`);
    else if (!st.isDirectory()) throw unsafe(name, `"${part}" on its path is not a directory`);
  }
  return dir;
}

/** Remove a non-directory at `p` (a symlink itself, never its target); a directory is refused. */
async function clear(p: string, name: string, keepDir: boolean): Promise<boolean> {
  const st = await fsp.lstat(p).catch(() => null);
  if (!st) return false;
  if (st.isDirectory()) {
    if (keepDir) return true;
    throw unsafe(name, `a directory "${p}" is in the way`);
  }
  await fsp.unlink(p);
  return false;
}

const FILE_FLAGS =
  fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;

/** Unpack a tar stream into `options.dest` (see the module comment for what is refused). */
export async function extractArchive(
  source: Readable,
  options: ExtractOptions,
): Promise<ExtractResult> {
  const { extract } = await import('tar-stream');
  const root = path.resolve(options.dest);
  const rootStat = await fsp.stat(root).catch(() => null);
  if (!rootStat?.isDirectory())
    throw new VesselError('not_found', `destination directory "${options.dest}" does not exist`);
  const dirs: { p: string; mode: number; mtime: Date }[] = [];
  const skipped: string[] = [];
  let entries = 0;
  let bytes = 0;
  const ex = extract();
  const work = (async () => {
    for await (const entry of ex) {
      const h: Header = entry.header;
      try {
        const parts = entryComponents(h.name, options.rename);
        entries++;
        if (parts.length === 0) {
          // The destination itself (`SRC/.`): keep it as it is.
          entry.resume();
          continue;
        }
        const dir = await parentDir(root, parts, h.name);
        const p = path.join(dir, parts[parts.length - 1]!);
        const mode = (h.mode ?? 0o644) & 0o7777;
        const mtime = h.mtime ?? new Date();
        switch (h.type) {
          case 'directory': {
            if (!(await clear(p, h.name, true))) await fsp.mkdir(p, { mode: 0o700 });
            dirs.push({ p, mode, mtime });
            entry.resume();
            break;
          }
          case 'file':
          case 'contiguous-file': {
            await clear(p, h.name, false);
            const fd = await fsp.open(p, FILE_FLAGS, 0o600);
            try {
              for await (const chunk of entry as AsyncIterable<Buffer>) {
                for (let off = 0; off < chunk.length;) {
                  off += (await fd.write(chunk, off)).bytesWritten;
                }
              }
              await fd.chmod(mode);
              if (options.owners) await fd.chown(h.uid ?? 0, h.gid ?? 0);
              await fd.utimes(mtime, mtime);
            } finally {
              await fd.close();
            }
            bytes += h.size ?? 0;
            break;
          }
          case 'symlink': {
            await clear(p, h.name, false);
            // The target is stored as-is: it is only ever read, never written through
            // (entries beneath a symlink are refused above).
            await fsp.symlink(h.linkname ?? '', p);
            if (options.owners) await fsp.lchown(p, h.uid ?? 0, h.gid ?? 0);
            await fsp.lutimes(p, mtime, mtime);
            entry.resume();
            break;
          }
          case 'link': {
            const target = entryComponents(h.linkname ?? '', options.rename);
            if (target.length === 0) throw unsafe(h.name, 'hard link to the destination itself');
            const tdir = await parentDir(root, target, h.name);
            const tp = path.join(tdir, target[target.length - 1]!);
            const ts = await fsp.lstat(tp).catch(() => null);
            if (!ts?.isFile())
              throw unsafe(h.name, `hard link target "${h.linkname}" is not a file in the archive`);
            await clear(p, h.name, false);
            await fsp.link(tp, p);
            entry.resume();
            break;
          }
          case 'block-device':
          case 'character-device':
          case 'fifo':
          default:
            skipped.push(h.name);
            entry.resume();
        }
      } catch (err) {
        entry.resume();
        throw err;
      }
    }
  })();
  // tar-stream's extract is a streamx Writable; Node's pipe() drives it (with backpressure).
  const fed = new Promise<void>((resolve, reject) => {
    source.on('error', (err) => {
      ex.destroy(err);
      reject(err);
    });
    source.on('end', resolve);
    source.pipe(ex as unknown as Writable);
  });
  try {
    await Promise.all([work, fed]);
  } catch (err) {
    source.destroy();
    ex.destroy();
    throw err;
  }
  // Directory modes and times last, deepest first: a read-only directory can still be filled.
  for (const d of dirs.reverse()) {
    await fsp.chmod(d.p, d.mode);
    await fsp.utimes(d.p, d.mtime, d.mtime);
  }
  return { entries, bytes, skipped };
}

/** Files up to this size are read whole, not streamed (packPath). */
const SMALL_FILE = 256 * 1024;

export interface PackOptions {
  /** The archive name of `src` itself; `''`: its contents at the top (`SRC/.`). */
  readonly name: string;
  /** Follow a symlink at `src` itself (`-L`). */
  readonly follow?: boolean;
  /** Leave out an entry (and, for a directory, what is below it); `rel` is its archive name. */
  readonly skip?: (rel: string, isDir: boolean) => boolean;
  /** Local files added at the end under these archive names (mode 0600, root-owned). */
  readonly extra?: readonly { readonly name: string; readonly file: string }[];
  /** Called with the size of each regular file as it is packed (progress). */
  readonly onFile?: (bytes: number) => void;
}

/**
 * A tar stream of the local path `src` (recursively; symlinks stored, not
 * followed), read as fast as its consumer takes it.
 */
export async function packPath(src: string, options: PackOptions): Promise<Readable> {
  const { pack: makePack } = await import('tar-stream');
  const pack = makePack();
  const top = options.follow ? await fsp.stat(src) : await fsp.lstat(src);
  const add = async (p: string, name: string, st: fs.Stats): Promise<void> => {
    if (name !== '' && options.skip?.(name, st.isDirectory())) return;
    const base = {
      name,
      mode: st.mode & 0o7777,
      mtime: st.mtime,
      uid: st.uid,
      gid: st.gid,
    };
    if (st.isDirectory()) {
      if (name !== '') pack.entry({ ...base, type: 'directory' });
      for (const child of (await fsp.readdir(p)).sort()) {
        const cp = path.join(p, child);
        await add(cp, name === '' ? child : `${name}/${child}`, await fsp.lstat(cp));
      }
    } else if (st.isSymbolicLink()) {
      pack.entry({ ...base, type: 'symlink', linkname: await fsp.readlink(p) });
    } else if (st.isFile() && st.size <= SMALL_FILE) {
      // One read, no stream per file: 5,000 small files pack ~3x faster. The entry's
      // callback comes once the pack took the bytes, so backpressure still holds.
      const data = await fsp.readFile(p);
      await new Promise<void>((resolve, reject) =>
        pack.entry({ ...base, type: 'file', size: data.length }, data, (err) =>
          err ? reject(err) : resolve(),
        ),
      );
      options.onFile?.(data.length);
    } else if (st.isFile()) {
      await pipeline(
        fs.createReadStream(p),
        pack.entry({ ...base, type: 'file', size: st.size }) as unknown as Writable,
      );
      options.onFile?.(st.size);
    }
    // sockets, FIFOs, devices: left out
  };
  const extras = async (): Promise<void> => {
    for (const x of options.extra ?? []) {
      const st = await fsp.stat(x.file);
      await pipeline(
        fs.createReadStream(x.file),
        pack.entry({
          name: x.name,
          type: 'file',
          size: st.size,
          mode: 0o600,
          mtime: st.mtime,
          uid: 0,
          gid: 0,
        }) as unknown as Writable,
      );
    }
  };
  void add(src, options.name, top)
    .then(extras)
    .then(
      () => pack.finalize(),
      (err: unknown) => pack.destroy(err as Error),
    );
  return Readable.from(pack as AsyncIterable<Buffer>);
}
