// Where image layers are unpacked before mkfs: a private directory on a fast
// filesystem (tmpfs, `images.unpack_staging_dir`, default /dev/shm) when the
// image fits, else the data directory's own staging area.
import fs from 'node:fs/promises';
import { rmdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { errnoCode, errorMessage } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';

/** statfs(2) `f_type` of tmpfs. */
export const TMPFS_MAGIC = 0x01021994;
/** Headroom over the estimated unpacked size (tmpfs rounds every file up to a page). */
export const STAGING_SIZE_FACTOR = 1.25;
export const STAGING_SIZE_SLACK = 16 * 1024 * 1024;
/** A tmpfs unpack may use at most this share of the host's available memory. */
export const STAGING_MEMORY_SHARE = 0.5;
/** Assumed bytes per entry when checking free inodes (Debian minbase averages ~20 KB). */
const BYTES_PER_INODE = 4096;

/** The statfs(2) fields the decision needs (Node's `fs.StatFs`). */
export interface SpaceInfo {
  readonly type: number;
  readonly bsize: number;
  readonly bavail: number;
  readonly files: number;
  readonly ffree: number;
}

export type StagingDecision =
  { readonly fits: true } | { readonly fits: false; readonly reason: string };

/** Bytes an unpack of an image estimated at `estimateBytes` reserves on the staging filesystem. */
export function stagingNeed(estimateBytes: number): number {
  return Math.ceil(estimateBytes * STAGING_SIZE_FACTOR) + STAGING_SIZE_SLACK;
}

/**
 * Does an unpack needing `needBytes` fit on the staging filesystem, given what
 * other unpacks in this process have reserved there? On tmpfs it must also
 * leave half of the host's available memory alone (tmpfs pages are RAM).
 */
export function decideStaging(input: {
  readonly space: SpaceInfo;
  readonly needBytes: number;
  readonly reservedBytes: number;
  readonly memAvailableBytes: number;
}): StagingDecision {
  const { space, needBytes, reservedBytes } = input;
  const free = space.bavail * space.bsize - reservedBytes;
  if (needBytes > free) {
    return { fits: false, reason: `needs ${mib(needBytes)}, ${mib(Math.max(0, free))} free` };
  }
  const inodes = Math.ceil(needBytes / BYTES_PER_INODE);
  if (space.files > 0 && inodes > space.ffree) {
    return { fits: false, reason: `needs ~${inodes} inodes, ${space.ffree} free` };
  }
  if (space.type === TMPFS_MAGIC) {
    const allowed = input.memAvailableBytes * STAGING_MEMORY_SHARE - reservedBytes;
    if (needBytes > allowed) {
      return {
        fits: false,
        reason: `needs ${mib(needBytes)} of RAM (tmpfs), ${mib(Math.max(0, allowed))} allowed`,
      };
    }
  }
  return { fits: true };
}

function mib(bytes: number): string {
  return `${Math.round(bytes / (1024 * 1024))} MiB`;
}

export interface UnpackStagingOptions {
  /** The configured parent directory (`images.unpack_staging_dir`); null disables it. */
  readonly parent: string | null;
  /** Names this data dir's directory under `parent` ({@link Paths.unpackStagingDir}). */
  readonly paths: Paths;
  readonly logger: Logger;
  /** Available host memory in bytes (default `os.freemem()`, i.e. MemAvailable). */
  readonly memAvailable?: () => number;
}

/** A private directory for one unpack; `release()` removes it and frees its reservation. */
export interface StagingLease {
  readonly dir: string;
  release(): Promise<void>;
}

/** A lease, or why there is none. */
export type StagingGrant =
  | { readonly lease: StagingLease }
  | {
      readonly lease: null;
      readonly why: 'disabled' | 'no_room' | 'unavailable';
      readonly detail: string;
    };

/**
 * This daemon's directory under the fast staging filesystem,
 * `<parent>/vessel-unpack-<hash of the data dir>/` (0700), and the space
 * reserved in it by unpacks in progress. The directory exists only while an
 * unpack holds a lease: the first lease creates it, the last release removes
 * it, so nothing stays on the tmpfs after a daemon (or a test) goes away
 * without stopping. `init()` (daemon start) removes what a crash left there.
 */
export class UnpackStaging {
  private readonly o: UnpackStagingOptions;
  private base: string | null = null;
  /** Creation of the directory for the current leases (reset when the last one ends). */
  private creating: Promise<void> | null = null;
  private created = false;
  private leases = 0;
  private reserved = 0;

  constructor(options: UnpackStagingOptions) {
    this.o = options;
  }

  /** Where unpacks go when they fit, or null when staging is off or unusable. */
  get dir(): string | null {
    return this.base;
  }

  /**
   * Validate the parent and remove a directory an earlier run left behind.
   * Problems never fail the daemon: they are logged and unpacks use the data dir.
   */
  async init(): Promise<void> {
    this.base = null;
    if (this.o.parent === null) return;
    try {
      const base = this.o.paths.unpackStagingDir(await checkParent(this.o.parent));
      await removeOurs(base);
      this.base = base;
    } catch (err) {
      this.o.logger.warn(
        { staging: this.o.parent, err: errorMessage(err) },
        'unpack staging directory unusable; unpacking in the data directory',
      );
    }
  }

  /** Shutdown: no new leases. Leases still held keep the directory until released. */
  close(): void {
    this.base = null;
  }

  /**
   * A fresh 0700 directory for an image estimated to unpack to `estimateBytes`,
   * with that space reserved, or why not (then the caller uses the data dir).
   */
  async acquire(name: string, estimateBytes: number): Promise<StagingGrant> {
    const base = this.base;
    if (base === null) return { lease: null, why: 'disabled', detail: 'no staging directory' };
    const needBytes = stagingNeed(estimateBytes);
    this.leases += 1;
    let lease: StagingLease | null = null;
    let reserved = false;
    try {
      // Decide on the parent's filesystem first: nothing is created for an image that does not fit.
      const space = await fs.statfs(path.dirname(base));
      // From here to the reservation nothing awaits, so concurrent unpacks see each other.
      const decision = decideStaging({
        space,
        needBytes,
        reservedBytes: this.reserved,
        memAvailableBytes: (this.o.memAvailable ?? os.freemem)(),
      });
      if (!decision.fits) return { lease: null, why: 'no_room', detail: decision.reason };
      this.reserved += needBytes;
      reserved = true;
      this.creating ??= createBase(this.o.parent ?? '', base).then(() => {
        this.created = true;
      });
      await this.creating;
      const dir = await fs.mkdtemp(path.join(base, `${name}.`));
      let held = true;
      lease = {
        dir,
        release: async () => {
          if (!held) return;
          held = false;
          try {
            await fs.rm(dir, { recursive: true, force: true });
          } finally {
            this.reserved -= needBytes;
            this.endLease(base);
          }
        },
      };
      return { lease };
    } catch (err) {
      this.o.logger.warn({ staging: base, err: errorMessage(err) }, 'unpack staging failed');
      return { lease: null, why: 'unavailable', detail: errorMessage(err) };
    } finally {
      if (lease === null) {
        if (reserved) this.reserved -= needBytes;
        this.endLease(base);
      }
    }
  }

  /** The last lease gone: remove the (empty) directory, synchronously so no new lease races it. */
  private endLease(base: string): void {
    this.leases -= 1;
    if (this.leases > 0) return;
    const created = this.created;
    this.creating = null;
    this.created = false;
    if (!created) return;
    try {
      rmdirSync(base);
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTEMPTY') {
        this.o.logger.warn(
          { staging: base, err: errorMessage(err) },
          'removing unpack staging failed',
        );
      }
    }
  }
}

/**
 * The parent with symlinks resolved, if it is safe to create our directory
 * in: a directory owned by root or us, and sticky if others may write to it
 * (then nobody else can rename or replace what we create there).
 */
async function checkParent(parent: string): Promise<string> {
  const uid = process.geteuid?.() ?? 0;
  const real = await fs.realpath(parent);
  const st = await fs.stat(real);
  if (!st.isDirectory()) throw new Error(`${real} is not a directory`);
  if (st.uid !== 0 && st.uid !== uid) throw new Error(`${real} is owned by uid ${st.uid}`);
  if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
    throw new Error(`${real} is writable by others and not sticky`);
  }
  return real;
}

/**
 * Remove `base` if it is a private (0700) directory of ours, left by an
 * earlier run. Anything else at that name (a symlink, a file, someone else's
 * directory) is an error and is not touched.
 */
async function removeOurs(base: string): Promise<void> {
  const st = await fs.lstat(base).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return null;
    throw err;
  });
  if (st === null) return;
  const uid = process.geteuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o777) !== 0o700) {
    throw new Error(`${base} exists and is not a private directory of this user`);
  }
  await fs.rm(base, { recursive: true, force: true });
}

/** Create `base` as a fresh 0700 directory of ours (re-checking the parent first). */
async function createBase(parent: string, base: string): Promise<void> {
  if ((await checkParent(parent)) !== path.dirname(base)) {
    throw new Error(`${parent} now resolves elsewhere than ${path.dirname(base)}`);
  }
  await removeOurs(base);
  // Fails with EEXIST if someone raced us to the name.
  await fs.mkdir(base, { mode: 0o700 });
  await fs.chmod(base, 0o700);
  const made = await fs.lstat(base);
  if (!made.isDirectory() || made.uid !== (process.geteuid?.() ?? 0)) {
    throw new Error(`${base} was replaced`);
  }
}
