import path from 'node:path';

/**
 * Every on-disk path of the kernels subsystem (to move into core/paths.ts):
 *
 * ```
 * <data>/kernels/<name>/<version>/vmlinuz
 * <data>/kernels/<name>/<version>/modules/<file>.ko      only the catalog's modules + deps
 * <data>/kernels/<name>/<version>/modules.order           load order, one file name per line
 * <data>/kernels/<name>/<version>/kernel.json             metadata (see KernelInfo)
 * <data>/kernels/<name>/<version>/initramfs-<hash16>.cpio.gz
 * <data>/kernels/.staging/                                pulls in progress, published by rename
 * ```
 */
export function kernelsDir(dataDir: string): string {
  return path.join(path.resolve(dataDir), 'kernels');
}
export function kernelNameDir(dataDir: string, name: string): string {
  return path.join(kernelsDir(dataDir), name);
}
export function kernelVersionDir(dataDir: string, name: string, version: string): string {
  return path.join(kernelNameDir(dataDir, name), version);
}
export function kernelStagingDir(dataDir: string): string {
  return path.join(kernelsDir(dataDir), '.staging');
}

/** File names inside one `<name>/<version>/` directory. */
export const KERNEL_FILES = {
  vmlinuz: 'vmlinuz',
  modulesDir: 'modules',
  modulesOrder: 'modules.order',
  info: 'kernel.json',
} as const;

export function initramfsFile(versionDir: string, hash16: string): string {
  return path.join(versionDir, `initramfs-${hash16}.cpio.gz`);
}
