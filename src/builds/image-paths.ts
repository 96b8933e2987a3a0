// The image below a COPY/ADD step, as the step sees it: what it has at a path
// (`ExistingLookup`, built by lower-index.ts from its layers' headers) and where
// a path really leads through the image's symlinks (`resolveInImage`), so a
// layer writes under real paths and never replaces a link such as merged-/usr's
// /bin.
import { VesselError } from '../core/errors.js';
import { MAX_SYMLINKS } from '../images/unpack/index.js';

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
      throw new VesselError(
        'invalid_argument',
        `path ${JSON.stringify(`/${state.relPath}`)} of the image: too many levels of symbolic links`,
        { details: { path: `/${state.relPath}` } },
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
