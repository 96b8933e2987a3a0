import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errnoCode } from '../core/errors.js';
import { KERNEL_FILES } from './paths.js';

/** Contents of `kernel.json`. */
export interface KernelInfo {
  readonly name: string;
  readonly version: string;
  /** Concrete package (apt), URL (url) or undefined (path). */
  readonly package: string | undefined;
  readonly source_type: 'apt' | 'path' | 'url';
  /** sha256 (hex) of `vmlinuz`. */
  readonly sha256: string;
  /** Module file names in load order (same as modules.order). */
  readonly modules: readonly string[];
  /** Requested modules that are built into this kernel. */
  readonly builtin_modules: readonly string[];
  /** Set when the package shipped compressed modules that were decompressed. */
  readonly module_compression?: 'xz' | 'zst' | 'gz';
  readonly created_at: string;
}

/** A published kernel on disk. */
export interface Kernel {
  readonly name: string;
  readonly version: string;
  /** `<data>/kernels/<name>/<version>/` */
  readonly dir: string;
  readonly vmlinuz: string;
  /** Directory of the selected `.ko` files. */
  readonly modulesDir: string;
  /** Module file names in load order. */
  readonly moduleOrder: readonly string[];
  readonly info: KernelInfo;
}

/** Read a published kernel directory. */
export async function readKernelDir(dir: string): Promise<Kernel> {
  let raw: string;
  try {
    raw = await fs.readFile(path.join(dir, KERNEL_FILES.info), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new VesselError('not_found', `no kernel at ${dir}`, { cause: err });
    }
    throw err;
  }
  const info = JSON.parse(raw) as KernelInfo;
  return {
    name: info.name,
    version: info.version,
    dir,
    vmlinuz: path.join(dir, KERNEL_FILES.vmlinuz),
    modulesDir: path.join(dir, KERNEL_FILES.modulesDir),
    moduleOrder: info.modules,
    info,
  };
}
