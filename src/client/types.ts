export type {
  WireImage as Image,
  WireImageStatus as ImageStatus,
  Health,
  Resources,
  GcResult,
  LayerProgress,
} from '../core/wire.js';
