export { VesselClient, type ClientOptions, type ImageStreamEvent } from './client.js';
export { SseParser, type SseEvent } from './sse.js';
export * from './types.js';
export {
  openExecStream,
  type ExecStream,
  type ExecStreamExit,
  type ExecStreamRequest,
  type ExecStreamTransport,
} from './exec-stream.js';
