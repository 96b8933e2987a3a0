export { InstanceManager, type InstanceManagerOptions } from './manager.js';
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
