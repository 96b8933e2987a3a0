export { ImageManager, type ImageManagerOptions } from './manager.js';
export { BlobStore } from './blob-store.js';
export type { GcResult } from './gc.js';
export type { DiskInfo } from './disk-builder.js';
export { probeDiskFormats, chooseFormat, type DiskFormatSupport } from './convert.js';
export {
  parseReference,
  formatReference,
  normaliseReference,
  isDigest,
  type ImageReference,
} from './reference.js';
export { parseManifest, selectPlatform, hostPlatform, formatPlatform } from './manifest.js';
export { parseImageConfig, parseEnv } from './image-config.js';
export { parseChallenge, RegistryClient } from './registry-client.js';
export * from './types.js';
