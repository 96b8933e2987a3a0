export type {
  WireImage as Image,
  WireImageStatus as ImageStatus,
  Health,
  Resources,
  GcResult,
  LayerProgress,
  WireInstance as Instance,
  CreateInstanceRequestWire as CreateInstanceRequest,
  ExecRequestWire as ExecRequest,
  ExecResult,
} from '../core/wire.js';
