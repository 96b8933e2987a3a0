// Everything here loads with every CLI command: keep it light. `exec-stream.ts` (ws) is
// imported only when an exec stream is opened.
import type * as ExecStreamModule from './exec-stream.js';

export {
  VesselClient,
  type ClientOptions,
  type CreateBuildRequest,
  type ImageStreamEvent,
  type LogBytes,
  type LogSourceName,
  type StdioSink,
} from './client.js';
export { SseParser, type SseEvent } from './sse.js';
export * from './types.js';
export type {
  ExecStream,
  ExecStreamExit,
  ExecStreamRequest,
  ExecStreamTransport,
  SessionStream,
} from './exec-stream.js';

/** Interactive exec over the WebSocket endpoint (see `exec-stream.ts`). */
export const openExecStream: typeof ExecStreamModule.openExecStream = async (...args) =>
  (await import('./exec-stream.js')).openExecStream(...args);
