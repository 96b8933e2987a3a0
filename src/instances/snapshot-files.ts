/**
 * Named snapshots on disk: `<data>/snapshots/<id>/` holds `overlay.ext4` (the
 * writable disk), and for a memory (`Standby`) snapshot `state.bin` — or
 * `state.bin.zst` / `state.bin.lz4` once compressed — plus `meta.json` (what
 * the state can be restored on, snapshot.ts). Copies are reflinks where the
 * filesystem has them, else sparse copies.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errnoCode } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import { run } from '../core/process.js';

export type CompressionAlgorithm = 'zstd' | 'lz4';

export const SNAPSHOTS_DIR = 'snapshots';
export const DISK = 'overlay.ext4';
export const STATE = 'state.bin';
export const META = 'meta.json';

export interface NamedSnapshotPaths {
  readonly dir: string;
  readonly disk: string;
  readonly state: string;
  readonly meta: string;
}

export function namedSnapshotPaths(dataDir: string, id: string): NamedSnapshotPaths {
  const dir = path.join(dataDir, SNAPSHOTS_DIR, id);
  return {
    dir,
    disk: path.join(dir, DISK),
    state: path.join(dir, STATE),
    meta: path.join(dir, META),
  };
}

/** The file the memory state is in once compressed with `algo`. */
export function compressedState(state: string, algo: CompressionAlgorithm): string {
  return `${state}.${algo === 'zstd' ? 'zst' : 'lz4'}`;
}

/** Copy a disk image or state file: a reflink where possible, else a (sparse) copy. */
export async function copyImage(from: string, to: string, sparse = true): Promise<void> {
  await run('cp', ['--reflink=auto', ...(sparse ? ['--sparse=always'] : []), '--', from, to]);
}

/** Copy `from` to `to` through a temporary name, so `to` is either whole or absent. */
export async function copyImageAtomic(from: string, to: string, sparse = true): Promise<void> {
  const tmp = `${to}.tmp-${process.pid}`;
  await fs.rm(tmp, { force: true });
  try {
    await copyImage(from, tmp, sparse);
    await fs.rename(tmp, to);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

/** Bytes the files of a directory take on disk (sparse files count what is allocated). */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const name of await fs.readdir(dir)) {
    const st = await fs.stat(path.join(dir, name));
    if (st.isFile()) total += Math.min(st.size, st.blocks * 512);
  }
  return total;
}

export function defaultLevel(algo: CompressionAlgorithm): number {
  return algo === 'zstd' ? 1 : 0;
}

export function checkLevel(algo: CompressionAlgorithm, level: number): void {
  const [min, max] = algo === 'zstd' ? [1, 19] : [0, 9];
  if (level < min || level > max) {
    throw new VesselError(
      'invalid_argument',
      `compression level ${level} is out of range for ${algo} (${min}-${max})`,
      { details: { field: 'compression.level' } },
    );
  }
}

/** Compress `from` into `to` (written whole or not at all). */
export async function compressFile(
  algo: CompressionAlgorithm,
  level: number,
  from: string,
  to: string,
): Promise<void> {
  const tmp = `${to}.tmp`;
  await fs.rm(tmp, { force: true });
  try {
    if (algo === 'zstd') await run('zstd', ['-q', '-f', `-${level}`, '-T0', '-o', tmp, '--', from]);
    else await run('lz4', ['-q', '-f', level === 0 ? '-1' : `-${level}`, from, tmp]);
    await fs.rename(tmp, to);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

/** Decompress `from` into `to` (a temporary file of the caller's). */
export async function decompressFile(
  algo: CompressionAlgorithm,
  from: string,
  to: string,
): Promise<void> {
  if (algo === 'zstd') await run('zstd', ['-q', '-d', '-f', '-o', to, '--', from]);
  else await run('lz4', ['-q', '-d', '-f', from, to]);
}

/**
 * Put a snapshot's memory state at `to`: decompressed to a temporary file
 * next to it first when the snapshot is compressed, else hard-linked (copied
 * where the filesystem cannot link).
 */
export async function materializeState(
  p: NamedSnapshotPaths,
  algo: CompressionAlgorithm | null,
  to: string,
): Promise<void> {
  await ensureDir(path.dirname(to), 0o700);
  if (algo !== null && (await exists(compressedState(p.state, algo)))) {
    const tmp = `${to}.tmp`;
    try {
      await decompressFile(algo, compressedState(p.state, algo), tmp);
      await fs.rename(tmp, to);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    return;
  }
  // A restore only reads the state (and a standby writes a new file, never into it): a
  // hard link is as good as a copy and costs nothing; a copy where links cannot be made.
  await fs.rm(to, { force: true });
  try {
    await fs.link(p.state, to);
  } catch (err) {
    if (!['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP'].includes(errnoCode(err) ?? '')) throw err;
    await copyImageAtomic(p.state, to, false);
  }
}

export async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return false;
    throw err;
  }
}
