export {
  VolumeManager,
  type VolumeManagerOptions,
  type VolumeMountRequest,
  type ResolvedMount,
  type GuestVolume,
  type BootVolumes,
} from './manager.js';
export type { AttachmentRow, VolumeRow } from './repo.js';
export { checkMountPath, checkAttachments, detectArchive, writesVolume } from './rules.js';
