// Applies tar entries, one at a time and in order, to a root filesystem being
// built: scoped parents, never-followed final components, OCI whiteouts.
// Metadata calls and per-chunk writes are synchronous (each is a short
// syscall; a thread-pool round trip per call dominated the unpack time);
// file data still streams chunk by chunk, and recursive removals stay async.
import fs, { constants } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Header } from 'tar-stream';
import { VesselError } from '../../core/errors.js';
import { entryMeta, paxOf, type EntryMeta } from './entry-meta.js';
import { LoopBudget } from './loop-budget.js';
import { entryComponents, isRealDir, lstatOrNull, resolveDir, unsafeEntry } from './scoped-path.js';

const WHITEOUT_PREFIX = '.wh.';
const WHITEOUT_META_PREFIX = '.wh..wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
const FILE_FLAGS = constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW;

interface DirMeta extends EntryMeta {
  readonly rel: readonly string[];
}

/** Where an entry's final component lives, after its parents were resolved (and created). */
interface Located {
  readonly hostPath: string;
  readonly rel: readonly string[];
  readonly key: string;
}

export interface LayerWriterOptions {
  readonly rootfs: string;
  readonly canChown: boolean;
}

/** The state of one layer being applied: what it created and the directory metadata still to set. */
export class LayerWriter {
  readonly warnings: string[] = [];
  private readonly rootfs: string;
  private readonly canChown: boolean;
  /** Real paths (relative to the root) of objects this layer created. */
  private readonly created = new Set<string>();
  /** Real paths of directories holding something this layer created. */
  private readonly holdsCreated = new Set<string>();
  private readonly dirMeta = new Map<string, DirMeta>();

  constructor(options: LayerWriterOptions) {
    this.rootfs = options.rootfs;
    this.canChown = options.canChown;
  }

  /** Apply one entry; `data` is its content stream and is always consumed. */
  async apply(header: Header, data: AsyncIterable<Buffer>): Promise<void> {
    const label = header.name;
    const pax = paxOf(header);
    if (pax !== null && Object.keys(pax).some((key) => key.startsWith('GNU.sparse.'))) {
      throw unsafeEntry(label, 'GNU sparse files are not supported');
    }
    const components = entryComponents(header.name, label);
    const base = components.at(-1);
    if (base?.startsWith(WHITEOUT_PREFIX)) {
      await drain(data);
      await this.whiteout(label, components.slice(0, -1), base);
      return;
    }
    // tar-stream reports unknown type flags (GNU sparse 'S', volume headers, ...) as null.
    const type = header.type as
      Header['type'] | 'pax-header' | 'pax-global-header' | null | undefined;
    switch (type) {
      case 'file':
      case 'contiguous-file':
        return this.writeFile(label, components, entryMeta(header, label), header.size ?? 0, data);
      case 'directory':
        await drain(data);
        return this.makeDir(label, components, entryMeta(header, label));
      case 'symlink':
        await drain(data);
        return this.makeSymlink(label, components, header.linkname ?? '', entryMeta(header, label));
      case 'link':
        await drain(data);
        return this.makeHardlink(label, components, header.linkname ?? '');
      case 'character-device':
      case 'block-device':
      case 'fifo':
        await drain(data);
        this.warnings.push(
          `layer entry ${JSON.stringify(label)}: skipped ${type} (device nodes and FIFOs are never created on the host)`,
        );
        return;
      case 'pax-header':
      case 'pax-global-header':
      case null:
      case undefined:
        throw unsafeEntry(label, `unsupported entry type ${type ?? '(unknown type flag)'}`);
    }
  }

  /** Set the mode, owner and times of this layer's directories, deepest first. */
  async finish(): Promise<void> {
    const dirs = [...this.dirMeta.values()].sort((a, b) => b.rel.length - a.rel.length);
    const budget = new LoopBudget();
    for (const dir of dirs) {
      await budget.pace();
      // A later entry may have replaced the directory or one of its parents.
      if (!isRealDir(this.rootfs, dir.rel)) continue;
      const hostPath = path.join(this.rootfs, ...dir.rel);
      if (this.canChown) fs.lchownSync(hostPath, dir.uid, dir.gid);
      fs.chmodSync(hostPath, dir.mode);
      fs.lutimesSync(hostPath, dir.mtime, dir.mtime);
    }
  }

  private async writeFile(
    label: string,
    components: readonly string[],
    meta: EntryMeta,
    size: number,
    data: AsyncIterable<Buffer>,
  ): Promise<void> {
    const target = this.locate(label, components);
    await this.clear(target.hostPath, false);
    const fd = fs.openSync(target.hostPath, FILE_FLAGS, 0o600);
    this.markCreated(target.key);
    try {
      let written = 0;
      // One chunk at a time (tar-stream hands out at most the decompressor's
      // chunk, 64 KiB), so a large file never holds the event loop for long.
      for await (const chunk of data) {
        let offset = 0;
        while (offset < chunk.length) offset += fs.writeSync(fd, chunk, offset);
        written += chunk.length;
      }
      if (written !== size)
        throw unsafeEntry(label, `file data truncated (${written} of ${size} bytes)`);
      // chown before chmod: chown clears the setuid and setgid bits.
      if (this.canChown) fs.fchownSync(fd, meta.uid, meta.gid);
      fs.fchmodSync(fd, meta.mode);
      fs.futimesSync(fd, meta.mtime, meta.mtime);
    } finally {
      fs.closeSync(fd);
    }
  }

  private async makeDir(
    label: string,
    components: readonly string[],
    meta: EntryMeta,
  ): Promise<void> {
    if (components.length === 0) {
      this.dirMeta.set('', { ...meta, rel: [] });
      return;
    }
    const target = this.locate(label, components);
    if (!(await this.clear(target.hostPath, true))) {
      fs.mkdirSync(target.hostPath, { mode: 0o755 });
      this.markCreated(target.key);
    }
    this.dirMeta.set(target.key, { ...meta, rel: target.rel });
  }

  private async makeSymlink(
    label: string,
    components: readonly string[],
    linkTarget: string,
    meta: EntryMeta,
  ): Promise<void> {
    if (linkTarget === '') throw unsafeEntry(label, 'symlink has an empty target');
    if (linkTarget.includes('\0')) throw unsafeEntry(label, 'symlink target contains a NUL byte');
    const target = this.locate(label, components);
    await this.clear(target.hostPath, false);
    // The target string is stored as-is and never followed here.
    fs.symlinkSync(linkTarget, target.hostPath);
    this.markCreated(target.key);
    if (this.canChown) fs.lchownSync(target.hostPath, meta.uid, meta.gid);
    fs.lutimesSync(target.hostPath, meta.mtime, meta.mtime);
  }

  private async makeHardlink(
    label: string,
    components: readonly string[],
    linkname: string,
  ): Promise<void> {
    const quoted = `hardlink target ${JSON.stringify(linkname)}`;
    const targetComponents = entryComponents(linkname, label, quoted);
    const targetBase = targetComponents.at(-1);
    if (targetBase === undefined) throw unsafeEntry(label, `${quoted} is the root directory`);
    const targetDir = resolveDir(this.rootfs, targetComponents.slice(0, -1), {
      create: false,
      label,
    });
    const existing = targetDir === null ? null : path.join(targetDir.hostPath, targetBase);
    const st = existing === null ? null : lstatOrNull(existing);
    if (existing === null || st === null) throw unsafeEntry(label, `${quoted} does not exist`);
    if (st.isDirectory()) throw unsafeEntry(label, `${quoted} is a directory`);
    const target = this.locate(label, components);
    if (target.hostPath === existing) return;
    await this.clear(target.hostPath, false);
    // link(2) does not follow a symlink in its final component.
    fs.linkSync(existing, target.hostPath);
    this.markCreated(target.key);
  }

  private async whiteout(label: string, parent: readonly string[], base: string): Promise<void> {
    const dir = resolveDir(this.rootfs, parent, { create: false, label });
    if (base === OPAQUE_MARKER) {
      if (dir !== null) await this.purge(dir.hostPath, dir.rel);
      return;
    }
    if (base.startsWith(WHITEOUT_META_PREFIX)) {
      this.warnings.push(
        `layer entry ${JSON.stringify(label)}: skipped unsupported whiteout metadata`,
      );
      return;
    }
    const victim = base.slice(WHITEOUT_PREFIX.length);
    if (victim === '' || victim === '.' || victim === '..') {
      throw unsafeEntry(label, 'whiteout names an invalid path');
    }
    if (dir === null) return;
    const rel = [...dir.rel, victim];
    const key = rel.join('/');
    // Whiteouts hide lower layers only, never entries of their own layer.
    if (this.created.has(key)) return;
    const hostPath = path.join(dir.hostPath, victim);
    if (this.holdsCreated.has(key)) {
      const st = lstatOrNull(hostPath);
      if (st?.isDirectory()) {
        await this.purge(hostPath, rel);
        return;
      }
    }
    await fsp.rm(hostPath, { recursive: true, force: true });
  }

  /** Remove everything under a directory that this layer did not create (opaque whiteout). */
  private async purge(hostDir: string, rel: readonly string[]): Promise<void> {
    for (const name of fs.readdirSync(hostDir)) {
      const childRel = [...rel, name];
      const key = childRel.join('/');
      if (this.created.has(key)) continue;
      const childPath = path.join(hostDir, name);
      if (this.holdsCreated.has(key)) {
        const st = lstatOrNull(childPath);
        if (st?.isDirectory()) {
          await this.purge(childPath, childRel);
          continue;
        }
      }
      await fsp.rm(childPath, { recursive: true, force: true });
    }
  }

  /** Resolve (creating) the parents of an entry; the final component is not touched. */
  private locate(label: string, components: readonly string[]): Located {
    const base = components.at(-1);
    if (base === undefined) throw unsafeEntry(label, 'only a directory may replace the root');
    const dir = resolveDir(this.rootfs, components.slice(0, -1), {
      create: true,
      label,
      onCreate: (rel) => this.markCreated(rel.join('/')),
    });
    if (dir === null)
      throw new VesselError('internal', `layer entry ${JSON.stringify(label)}: parent vanished`);
    const rel = [...dir.rel, base];
    return { hostPath: path.join(dir.hostPath, base), rel, key: rel.join('/') };
  }

  /**
   * Remove whatever is at `hostPath` without following it. Returns true when a
   * directory is there and `keepDir` asked to keep it.
   */
  private async clear(hostPath: string, keepDir: boolean): Promise<boolean> {
    const st = lstatOrNull(hostPath);
    if (st === null) return false;
    if (st.isDirectory()) {
      if (keepDir) return true;
      // A whole tree may go: keep that off the event loop.
      await fsp.rm(hostPath, { recursive: true, force: true });
    } else {
      fs.unlinkSync(hostPath);
    }
    return false;
  }

  private markCreated(key: string): void {
    this.created.add(key);
    let slash = key.lastIndexOf('/');
    while (slash > 0) {
      const ancestor = key.slice(0, slash);
      if (this.holdsCreated.has(ancestor)) break;
      this.holdsCreated.add(ancestor);
      slash = ancestor.lastIndexOf('/');
    }
  }
}

async function drain(data: AsyncIterable<Buffer>): Promise<void> {
  for await (const _chunk of data) {
    // discard
  }
}
