import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { VesselError, errnoCode, toVesselError } from '../core/errors.js';
import { pathExists, writeFileAtomic } from '../core/fs.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { readKernelDir } from './kernel.js';
import { initramfsFile } from './paths.js';

const gzipAsync = promisify(gzip);

export interface BuildInitramfsOptions {
  /** A published kernel directory (`<data>/kernels/<name>/<version>/`). */
  readonly kernelDir: string;
  /** The guest program, installed as `/init` (mode 0755). */
  readonly guestBinary: string;
  /** Kept for symmetry with the other kernel operations; the cache lives in `kernelDir`. */
  readonly dataDir?: string;
  /** Extra files (e.g. a test's busybox); they take part in the cache key. */
  readonly extraFiles?: readonly {
    readonly path: string;
    readonly source: string;
    readonly mode: number;
  }[];
}

/** Where modules live inside the initramfs. */
export function initramfsModulesDir(version: string): string {
  return `/lib/modules/${version}`;
}

/** The file listing the modules to load, in order (file names, one per line). */
export const INITRAMFS_MODULE_LIST = '/etc/vessel/modules';

/**
 * Build (or reuse) the initramfs for a kernel and a guest program:
 * `/init`, `/dev`, `/proc`, `/sys`, `/mnt`, `/etc/vessel/modules` and the
 * kernel's selected modules under `/lib/modules/<version>/`, as gzip'd newc
 * cpio. Cached by sha256 of the kernel version, the guest program and the
 * module bytes; returns the path of the `.cpio.gz`.
 */
export async function buildInitramfs(options: BuildInitramfsOptions): Promise<string> {
  const kernel = await readKernelDir(options.kernelDir);
  let init: Buffer;
  try {
    init = await fs.readFile(options.guestBinary);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new VesselError('not_found', `guest program ${options.guestBinary} does not exist`, {
        cause: err,
      });
    }
    throw toVesselError(err, `reading guest program ${options.guestBinary}`);
  }

  const hash = createHash('sha256');
  const update = (label: string, data: Buffer | string): void => {
    hash.update(`${label}\0${Buffer.byteLength(data)}\0`);
    hash.update(data);
  };
  update('version', kernel.version);
  update('init', init);

  const modDir = initramfsModulesDir(kernel.version);
  const entries: CpioEntry[] = [
    { path: '/init', type: 'file', mode: 0o755, data: init },
    { path: '/dev', type: 'dir', mode: 0o755 },
    { path: '/proc', type: 'dir', mode: 0o555 },
    { path: '/sys', type: 'dir', mode: 0o555 },
    { path: '/mnt', type: 'dir', mode: 0o755 },
    { path: '/tmp', type: 'dir', mode: 0o1777 },
    { path: '/etc/vessel', type: 'dir', mode: 0o755 },
  ];
  const list = kernel.moduleOrder.map((f) => `${f}\n`).join('');
  update('list', list);
  entries.push({ path: INITRAMFS_MODULE_LIST, type: 'file', mode: 0o644, data: Buffer.from(list) });
  entries.push({ path: modDir, type: 'dir', mode: 0o755 });
  for (const file of kernel.moduleOrder) {
    const data = await fs.readFile(path.join(kernel.modulesDir, file));
    update(`module:${file}`, data);
    entries.push({ path: `${modDir}/${file}`, type: 'file', mode: 0o644, data });
  }
  for (const extra of options.extraFiles ?? []) {
    const data = await fs.readFile(extra.source);
    update(`extra:${extra.path}:${extra.mode}`, data);
    entries.push({ path: extra.path, type: 'file', mode: extra.mode, data });
  }

  const out = initramfsFile(kernel.dir, hash.digest('hex').slice(0, 16));
  if (await pathExists(out)) return out;
  const gz = await gzipAsync(writeCpio(entries), { level: 6 });
  await writeFileAtomic(out, gz, 0o644);
  return out;
}
