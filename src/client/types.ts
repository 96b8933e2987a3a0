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
  WireKernel as Kernel,
  WireLifecycleEvent as LifecycleEvent,
  WaitResult,
  WireIngress as Ingress,
  CreateIngressRequestWire as CreateIngressRequest,
} from '../core/wire.js';
export type {
  Capabilities,
  InstanceStats,
  PathInfo,
  UpdateInstanceRequestWire as UpdateInstanceRequest,
  StartInstanceRequestWire as StartInstanceRequest,
} from '../core/wire-ops.js';
export type { ForkRequestWire as ForkInstanceRequest } from '../core/wire.js';
export type { FileEntry } from '../core/wire-files.js';
export type {
  Snapshot,
  SnapshotKind,
  SnapshotTargetState,
  CreateSnapshotRequest,
  RestoreSnapshotRequest,
  ForkSnapshotRequest,
} from '../core/wire-snapshots.js';
export type {
  Volume,
  VolumeAttachment,
  CreateVolumeRequest,
  AttachVolumeRequest,
} from '../core/wire-volumes.js';
export type { VolumeMountWire as VolumeMount } from '../core/wire.js';
export type { Session, StartSessionRequest } from '../core/wire-sessions.js';
export type { WireWorkspaceInfo as WorkspaceInfo } from '../core/wire-files.js';
export type {
  WireBuild as Build,
  WireBuildEvent as BuildEvent,
  WireCatalogEntry as CatalogEntry,
} from '../core/wire-builds.js';
