/**
 * `@vessel/sdk`: microVM sandboxes from OCI images, over a Vessel daemon's API (its unix
 * socket, or TCP with a bearer token).
 *
 * ```ts
 * const sandbox = await Sandbox.create({ image: 'alpine:3.20' });
 * const r = await sandbox.commands.run('echo hello');
 * await sandbox.delete();
 * ```
 */
export { Vessel, type ConnectionOptions, type EventsOptions } from './vessel.js';
export {
  Sandbox,
  type PortMapping,
  type SandboxConnection,
  type SandboxCreateOptions,
} from './sandbox.js';
export {
  CommandHandle,
  CommandResult,
  Commands,
  type CommandExit,
  type CommandOptions,
  type RunOptions,
  type StartOptions,
  type StdinSource,
} from './commands.js';
export { Files, type EntryInfo, type ReadOptions, type WriteOptions } from './files.js';
export { Sessions, type SessionAttachOptions, type SessionStartOptions } from './sessions.js';
export type * from './types.js';
export { VesselClient } from '../../../src/client/index.js';
export {
  VesselError,
  isVesselError,
  type ErrorCode,
  type ErrorKind,
} from '../../../src/core/errors.js';
