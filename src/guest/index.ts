export {
  GuestClient,
  type ExecRequest,
  type ExecSession,
  type ExitStatus,
  type MainStreamHandler,
  EXEC_WINDOW,
  MAIN_WINDOW,
  COPY_WINDOW,
  type DirEntry,
  type PathInfo,
  type GuestSession,
  type SessionAttachEnd,
  type SessionAttachHeader,
  type SessionAttachRequest,
  type SessionAttachment,
  type SessionStartRequest,
} from './client.js';
export {
  FrameDecoder,
  FrameType,
  MAIN_STREAM,
  encodeFrame,
  MAX_PAYLOAD,
  type Frame,
} from './frame.js';
export { MarkerParser, parseMarkerLine, type BootMarker } from './markers.js';
