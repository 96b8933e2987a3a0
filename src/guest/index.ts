export {
  GuestClient,
  type ExecRequest,
  type ExecSession,
  type ExitStatus,
  type PathInfo,
} from './client.js';
export { FrameDecoder, FrameType, encodeFrame, MAX_PAYLOAD, type Frame } from './frame.js';
export { MarkerParser, parseMarkerLine, type BootMarker } from './markers.js';
