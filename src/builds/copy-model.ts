// The plan of a COPY or ADD layer, shared by the planner (copy-plan.ts) and
// the writer (copy-layer.ts): its entries, its options, and the small helpers
// both sides use for errors, layer paths and mtimes.
import type { Header } from 'tar-stream';
import { VesselError } from '../core/errors.js';
import type { Matcher } from '../core/dockerignore.js';
import type { ExistingLookup } from './image-paths.js';

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

/** A tar-stream header as the layer writer takes it: only the name is required. */
export type HeaderArg = Partial<Header> & Pick<Header, 'name'>;

/** An `invalid_argument` error with optional `details`. */
export function invalid(message: string, details?: Record<string, unknown>): VesselError {
  return new VesselError('invalid_argument', message, details ? { details } : {});
}

/** Joins layer paths; '' is the root. */
export const join = (a: string, b: string): string => (a === '' ? b : b === '' ? a : `${a}/${b}`);
/** `d` truncated to whole seconds, never before the epoch: the mtime a layer entry gets. */
export const seconds = (d: Date): Date =>
  new Date(Math.max(0, Math.floor(d.getTime() / 1000)) * 1000);
