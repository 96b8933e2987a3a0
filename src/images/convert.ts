import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errnoCode } from '../core/errors.js';
import { run } from '../core/process.js';
import type { ImageFormat } from '../store/index.js';

export interface DiskFormatSupport {
  readonly erofs: boolean;
  readonly erofsCompressors: string[];
  readonly ext4: boolean;
}

/** Ask the host which disk formats it can build (by running the tools). */
export async function probeDiskFormats(): Promise<DiskFormatSupport> {
  let erofsCompressors: string[] = [];
  let erofs = false;
  try {
    const r = await run('mkfs.erofs', ['--help'], { allowFailure: true, timeoutMs: 5000 });
    const m = /Available compressors are:\s*(.*)/.exec(r.stdout + r.stderr);
    erofsCompressors = m?.[1] ? m[1].split(/[,\s]+/).filter(Boolean) : [];
    erofs = true;
  } catch {
    erofs = false;
  }
  let ext4 = false;
  try {
    await run('mkfs.ext4', ['-V'], { allowFailure: true, timeoutMs: 5000 });
    ext4 = true;
  } catch {
    ext4 = false;
  }
  return { erofs, erofsCompressors, ext4 };
}

/**
 * Decide the disk format: erofs+lz4 by default on Linux, ext4 when erofs (or
 * its lz4 compressor) is missing, or whatever is configured explicitly.
 */
export function chooseFormat(
  configured: 'auto' | ImageFormat,
  support: DiskFormatSupport,
): ImageFormat {
  const erofsOk = support.erofs && support.erofsCompressors.includes('lz4');
  if (configured === 'erofs') {
    if (!erofsOk) {
      throw new VesselError(
        'tool_missing',
        'images.format is erofs but mkfs.erofs with lz4 is not available; install erofs-utils or set images.format to ext4',
      );
    }
    return 'erofs';
  }
  if (configured === 'ext4' || !erofsOk) {
    if (!support.ext4) {
      throw new VesselError(
        'tool_missing',
        'neither mkfs.erofs (with lz4) nor mkfs.ext4 is installed; install erofs-utils or e2fsprogs',
      );
    }
    return 'ext4';
  }
  return 'erofs';
}

async function countTree(root: string): Promise<{ bytes: number; inodes: number }> {
  let bytes = 0;
  let inodes = 0;
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    for (const e of await fs.readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      const st = await fs.lstat(p);
      inodes++;
      bytes += Math.ceil(st.size / 4096) * 4096;
      if (e.isDirectory()) stack.push(p);
    }
  }
  return { bytes, inodes };
}

/**
 * Build a read-only root disk from `rootfs` at `output`. erofs: `mkfs.erofs
 * -zlz4`. ext4: a sparse file sized from the tree with headroom, filled by
 * `mkfs.ext4 -d` (no journal: the disk is mounted read-only).
 */
export async function buildDisk(
  rootfs: string,
  output: string,
  format: ImageFormat,
): Promise<number> {
  try {
    if (format === 'erofs') {
      await run('mkfs.erofs', ['-zlz4', '--quiet', output, rootfs], { timeoutMs: 60 * 60_000 });
    } else {
      const { bytes, inodes } = await countTree(rootfs);
      const size = Math.ceil((bytes * 1.2 + 64 * 1024 * 1024) / (1024 * 1024)) * 1024 * 1024;
      const fh = await fs.open(output, 'wx', 0o644);
      try {
        await fh.truncate(size);
      } finally {
        await fh.close();
      }
      await run(
        'mkfs.ext4',
        [
          '-q',
          '-F',
          '-L',
          'vessel-rootfs',
          '-O',
          '^has_journal',
          '-N',
          String(inodes + 4096),
          '-E',
          'root_owner=0:0',
          '-d',
          rootfs,
          output,
        ],
        { timeoutMs: 60 * 60_000 },
      );
    }
  } catch (err) {
    await fs.rm(output, { force: true });
    if (errnoCode(err) === 'ENOSPC') {
      throw new VesselError('disk_full', `building the ${format} disk ran out of space`, {
        cause: err,
      });
    }
    throw err;
  }
  return (await fs.stat(output)).size;
}
