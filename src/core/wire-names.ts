/**
 * Names of the wire enumerations as plain arrays, without TypeBox: `wire.ts` builds its
 * schemas from them, and the CLI validates arguments with them without loading TypeBox
 * (about 100 ms; see bench P8).
 */

/** Instance states, named as in the hypeman API. */
export const INSTANCE_STATE_NAMES = [
  'Created',
  'Initializing',
  'Running',
  'Paused',
  'Shutdown',
  'Stopped',
  'Standby',
  'Unknown',
] as const;

/** Types of the lifecycle events (`GET /events`). */
export const LIFECYCLE_EVENT_TYPES = [
  'create',
  'update',
  'start',
  'stop',
  'pause',
  'resume',
  'standby',
  'restore',
  'fork',
  'expire',
  'delete',
  'state',
  'workspace_prepare',
  'workspace_export',
] as const;

/** The tar entry (at a workspace's root) that carries the repository's history as a git bundle. */
export const WORKSPACE_BUNDLE = '.vessel-workspace.bundle';
