export {
  InstanceManager,
  type InstanceManagerOptions,
  type LogChunk,
  type LogSource,
  type MainControls,
  type InstancePatch,
  type CommandOverrides,
  type ForkFlowRequest,
} from './manager.js';
export { checkExpiresAt, expiryFor } from './ttl.js';
export { describeExit, type MainExit } from './exit.js';
export { INSTANCE_STATES, canTransition, assertTransition, type InstanceState } from './state.js';
export { buildGuestConfig, writeConfigDisk, type GuestConfig } from './guest-config.js';
export type { Instance, CreateInstanceRequest, InstanceEvent } from './types.js';
export {
  LIFECYCLE_EVENT_TYPES,
  waitForState,
  type LifecycleEvent,
  type LifecycleEventType,
  type WaitResult,
} from './lifecycle.js';
export type { InstanceConfinement } from './jail.js';
export { WORKSPACE_BUNDLE, type PrepareWorkspaceRequest, type WorkspaceInfo } from './workspace.js';
export type { AttachSessionOptions, SessionAttachment } from './sessions.js';
