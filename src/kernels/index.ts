export {
  KERNEL_CATALOG,
  DEFAULT_KERNEL,
  GUEST_MODULES,
  catalogEntry,
  validateKernelName,
  type CatalogEntry,
  type KernelSource,
} from './catalog.js';
export { writeCpio, cpioChunks, type CpioEntry } from './cpio.js';
export {
  buildInitramfs,
  initramfsModulesDir,
  INITRAMFS_MODULE_LIST,
  type BuildInitramfsOptions,
} from './initramfs.js';
export type { Kernel, KernelInfo } from './kernel.js';
export {
  moduleName,
  parseModulesDep,
  parseModulesBuiltin,
  resolveLoadOrder,
  type ModuleDep,
  type LoadOrder,
} from './modules.js';
export { KernelManager, type KernelManagerOptions, type KernelUser } from './manager.js';
export { kernelsDir, kernelVersionDir } from './paths.js';
export {
  pullKernel,
  listKernels,
  resolveKernel,
  ensureKernel,
  removeKernel,
  type KernelOptions,
} from './pull.js';
