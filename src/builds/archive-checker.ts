// The checks on each entry of an ADD archive, a hostile input: names stay
// under dest (the image unpacker's own rules), nothing is written through a
// symlink of the archive, symlinks do not lead out, hard links name an earlier
// file, devices and FIFOs are skipped with a warning, other types refused.
import path from 'node:path';
import type { Header } from 'tar-stream';
import { VesselError, isVesselError } from '../core/errors.js';
import { cleanPath } from '../core/dockerignore.js';
import { entryComponents, entryMeta } from '../images/unpack/index.js';
import { invalid, seconds, type HeaderArg } from './copy-model.js';

/** One checked archive entry: written under dest as `header`, or skipped (with a warning for the build log). */
export type ArchiveItem =
  | { kind: 'skip'; warning?: string }
  | { kind: 'entry'; name: string; header: HeaderArg; linkTarget?: string };

/** Checks archive entries as they come, in order; one per pass over an archive. */
export class ArchiveChecker {
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
