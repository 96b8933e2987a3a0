import type { Instance, LifecycleEvent } from '../../../src/client/index.js';

export type {
  Instance,
  LifecycleEvent,
  CreateInstanceRequest,
  WaitResult,
  Session,
} from '../../../src/client/index.js';
export type { SessionStream } from '../../../src/client/exec-stream.js';

/** `Created`, `Initializing`, `Running`, `Paused`, `Shutdown`, `Stopped`, `Standby`, `Unknown`. */
export type InstanceState = Instance['state'];
/** `create`, `start`, `stop`, `state`, `delete`, … (see `GET /events`). */
export type LifecycleEventType = LifecycleEvent['type'];
