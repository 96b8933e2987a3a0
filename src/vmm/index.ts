/**
 * vmm: the hypervisor interface and its backends. instances/ depends on the
 * interface; the daemon picks the backend.
 */
export type {
  Accel,
  DiskSpec,
  Hypervisor,
  HypervisorCapabilities,
  HypervisorName,
  PortForward,
  UserNet,
  TapNet,
  StopOptions,
  VmEvent,
  VmEventListener,
  VmEventType,
  VmExit,
  VmHandle,
  VmInfo,
  VmNet,
  VmSockets,
  VmSpec,
  VmState,
} from './types.js';
export { USER_NET } from './types.js';
export type { VmJail, Confinement } from './jail.js';
export { confinementBlocker } from './jail.js';
export {
  detectCgroups,
  peakMemory,
  groupDirs,
  type CgroupLayout,
  type CgroupLimits,
} from './cgroups.js';
export { QemuHypervisor, type QemuHypervisorOptions } from './qemu/qemu.js';
export { QemuVmHandle, type ConsoleListener } from './qemu/handle.js';
export {
  buildQemuArgs,
  kernelCmdline,
  CONTROL_PORT_NAME,
  GUEST_KERNEL_ARGS,
  QEMU_BINARY,
} from './qemu/cmdline.js';
export { pidAlive } from './qemu/proc.js';
