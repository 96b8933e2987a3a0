// Entry-name normalisation and symlink resolution scoped to the root filesystem.
// Synchronous on purpose: one tar entry costs several metadata calls, each a
// microsecond-scale syscall, and a thread-pool round trip per call made the
// unpacker several times slower (see README, "Synchronous metadata calls").
import fs, { type Stats } from 'node:fs';
import path from 'node:path';
import { VesselError } from '../../core/errors.js';

/** Symlinks followed while resolving one path before giving up (Linux's MAXSYMLINKS). */
export const MAX_SYMLINKS = 40;

/** An `unsafe_layer` error naming the entry. */
export function unsafeEntry(name: string, reason: string, cause?: unknown): VesselError {
  return new VesselError(
    'unsafe_layer',
    `layer entry ${JSON.stringify(name)}: ${reason}`,
    cause === undefined ? { details: { entry: name } } : { cause, details: { entry: name } },
  );
}

/**
 * Split a tar entry name into clean components. Leading `/` and `./` are dropped
 * (absolute names are taken relative to the root filesystem, as Docker does);
 * any `..` component is refused. `[]` means the root itself.
 */
export function entryComponents(name: string, label: string = name, what = 'path'): string[] {
  if (name.includes('\0')) throw unsafeEntry(label, `${what} contains a NUL byte`);
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw unsafeEntry(label, `${what} escapes the root filesystem`);
    parts.push(part);
  }
  return parts;
}

/** A directory reached inside the root: its host path and its real (symlink-free) components. */
export interface ScopedDir {
  readonly hostPath: string;
  readonly rel: readonly string[];
}

export interface ResolveDirOptions {
  /** Create missing directories (mode 0755) instead of returning `null`. */
  readonly create: boolean;
  /** Called with the real components of every directory created. */
  readonly onCreate?: (rel: readonly string[]) => void;
  /** The entry name used in error messages. */
  readonly label: string;
}

/**
 * Resolve `components` as a directory inside `root`, the way the guest kernel
 * would see it with `root` as `/`: symlinks are followed with absolute targets
 * taken relative to `root` and `..` clamped at `root`. Every component of the
 * result was checked with `lstat` to be a real directory, so the host path never
 * leaves `root`. Returns `null` when a component is missing and `create` is off.
 */
export function resolveDir(
  root: string,
  components: readonly string[],
  options: ResolveDirOptions,
): ScopedDir | null {
  const stack: string[] = [];
  const pending = [...components];
  let links = 0;
  for (let part = pending.shift(); part !== undefined; part = pending.shift()) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      stack.pop();
      continue;
    }
    const hostPath = path.join(root, ...stack, part);
    const st = lstatOrNull(hostPath);
    if (st === null) {
      if (!options.create) return null;
      fs.mkdirSync(hostPath, { mode: 0o755 });
      fs.chmodSync(hostPath, 0o755);
      stack.push(part);
      options.onCreate?.(stack);
      continue;
    }
    if (st.isSymbolicLink()) {
      links += 1;
      if (links > MAX_SYMLINKS)
        throw unsafeEntry(options.label, 'too many levels of symbolic links');
      const target = fs.readlinkSync(hostPath);
      if (target.startsWith('/')) stack.length = 0;
      pending.unshift(...target.split('/'));
      continue;
    }
    if (!st.isDirectory()) {
      throw unsafeEntry(
        options.label,
        `parent ${JSON.stringify([...stack, part].join('/'))} is not a directory`,
      );
    }
    stack.push(part);
  }
  return { hostPath: path.join(root, ...stack), rel: stack };
}

/**
 * True when every component of `rel` under `root` is a real directory (no
 * symlinks). Used before touching a path recorded earlier in the layer, since
 * later entries may have replaced one of its parents.
 */
export function isRealDir(root: string, rel: readonly string[]): boolean {
  let current = root;
  for (const part of rel) {
    current = path.join(current, part);
    const st = lstatOrNull(current);
    if (st === null || !st.isDirectory()) return false;
  }
  return true;
}

export function lstatOrNull(p: string): Stats | null {
  // throwIfNoEntry: false returns undefined for ENOENT without building an Error.
  return fs.lstatSync(p, { throwIfNoEntry: false }) ?? null;
}
