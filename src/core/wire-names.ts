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

/**
 * The tar entry (at a workspace's root) that carries the repository's history as a git bundle
 * (clients before the pack form below; the guest must index it: slow under emulation).
 */
export const WORKSPACE_BUNDLE = '.vessel-workspace.bundle';
/**
 * The history as a pack with its index, made on the host (the guest indexes nothing), and
 * the refs: a line `pack <hash>`, then `update <ref> <sha>` lines for `git update-ref --stdin`.
 */
export const WORKSPACE_PACK = '.vessel-workspace.pack';
export const WORKSPACE_PACK_INDEX = '.vessel-workspace.idx';
export const WORKSPACE_REFS = '.vessel-workspace.refs';
