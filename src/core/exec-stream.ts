import { Type, type Static } from '@sinclair/typebox';
import { VesselError } from './errors.js';
import { ExecRequestSchema } from './wire.js';

/**
 * The interactive exec WebSocket (`GET /instances/{id}/exec`), shared by the
 * daemon and the client:
 *
 * - The client's first message is a text message: the exec request
 *   ({@link ExecStartSchema}, `{"type":"exec","argv":[...],...}`).
 * - Process bytes travel in binary messages whose first byte names the stream,
 *   numbered like file descriptors ({@link ExecStreamId}): 0 stdin (client →
 *   daemon), 1 stdout and 2 stderr (daemon → client). The rest is payload.
 * - Everything else is a JSON text message with a `type`: `resize`, `signal`
 *   and `eof` from the client; `exit` (the last message of a command that ran)
 *   or `error` (the API's `{code, message}` body) from the daemon.
 * - The daemon closes with 1000 after `exit`, and with `4000 + HTTP status`
 *   of the error after `error` (4400 bad request, 4404 unknown instance, 4409
 *   instance not Running, ...). A client that closes first kills the command.
 */

/** First byte of a binary message. */
export const ExecStreamId = { stdin: 0, stdout: 1, stderr: 2 } as const;
export type ExecStreamName = keyof typeof ExecStreamId;
const NAMES: readonly ExecStreamName[] = ['stdin', 'stdout', 'stderr'];

/** Largest payload of one binary message; senders split bigger writes. */
export const EXEC_MAX_DATA = 64 * 1024;

/** Close code of a stream whose command exited (after the `exit` message). */
export const EXEC_CLOSE_NORMAL = 1000;

/** Close code after an `error` message: 4000 + the error's HTTP status. */
export function execCloseCode(httpStatus: number): number {
  return 4000 + Math.min(Math.max(httpStatus, 400), 599);
}

const Dim = (what: string) =>
  Type.Integer({ minimum: 1, maximum: 65535, description: `Terminal ${what}` });

export const ExecStartSchema = Type.Object(
  {
    type: Type.Literal('exec'),
    argv: ExecRequestSchema.properties.argv,
    env: ExecRequestSchema.properties.env,
    cwd: ExecRequestSchema.properties.cwd,
    user: ExecRequestSchema.properties.user,
    tty: Type.Optional(Type.Boolean({ description: 'Allocate a pty (stdout and stderr merge)' })),
    rows: Type.Optional(Dim('rows (default 24)')),
    cols: Type.Optional(Dim('columns (default 80)')),
    stdin: Type.Optional(
      Type.Boolean({ description: 'The client will send stdin; else the command gets EOF' }),
    ),
  },
  { additionalProperties: false, title: 'ExecStreamStart' },
);
export type ExecStart = Static<typeof ExecStartSchema>;

/** Client → daemon control messages after the start message, by `type`. */
export const ExecControlSchemas = {
  resize: Type.Object(
    { type: Type.Literal('resize'), rows: Dim('rows'), cols: Dim('columns') },
    { additionalProperties: false },
  ),
  signal: Type.Object(
    {
      type: Type.Literal('signal'),
      signal: Type.Integer({ minimum: 1, maximum: 64, description: 'Signal number' }),
    },
    { additionalProperties: false },
  ),
  eof: Type.Object({ type: Type.Literal('eof') }, { additionalProperties: false }),
};
export const ExecControlSchema = Type.Union(Object.values(ExecControlSchemas));
/** Client → daemon after the start message. */
export type ExecControl = Static<typeof ExecControlSchema>;

/** Daemon → client. */
export type ExecServerMessage =
  | {
      type: 'exit';
      code: number | null;
      signal: number | null;
      /** Session attach: the session still runs (a detach, or the end of a non-follow read). */
      running?: boolean;
      detached?: boolean;
    }
  | ({ type: 'attached' } & SessionAttachedMessage)
  | {
      type: 'error';
      code: string;
      message: string;
      /** The REST error body's fields (see docs/errors.md). */
      details?: { code?: string; message?: string }[];
      inner_error?: { code?: string; message?: string };
      context?: Record<string, unknown>;
    };

/**
 * Session attach (`GET /instances/{id}/sessions/{name}/attach`): the daemon's first
 * message, before any output.
 */
export interface SessionAttachedMessage {
  /** Offset of the oldest output the session still keeps. */
  readonly start: number;
  /** Offset the output that follows starts at (above the asked `from`: bytes were dropped). */
  readonly from: number;
  /** Output offset when the attach began. */
  readonly end: number;
  readonly tty: boolean;
  /** Whether this client has input (stdin, resize, signals). */
  readonly input: boolean;
  readonly running: boolean;
}

/** A binary message: the stream byte, then the bytes. */
export function encodeExecData(stream: ExecStreamName, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(1 + data.length);
  out[0] = ExecStreamId[stream];
  out.set(data, 1);
  return out;
}

/** Split `data` into binary messages of at most {@link EXEC_MAX_DATA} bytes. */
export function encodeExecDataChunks(stream: ExecStreamName, data: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += EXEC_MAX_DATA)
    out.push(encodeExecData(stream, data.subarray(off, off + EXEC_MAX_DATA)));
  return out;
}

/** Parse a binary message; throws `invalid_argument` for an empty message or unknown stream. */
export function decodeExecData(message: Buffer): { stream: ExecStreamName; data: Buffer } {
  const id = message[0];
  if (id === undefined)
    throw new VesselError('invalid_argument', 'exec stream: empty binary message (no stream byte)');
  const stream = NAMES[id];
  if (!stream)
    throw new VesselError(
      'invalid_argument',
      `exec stream: unknown stream byte ${id} (0 stdin, 1 stdout, 2 stderr)`,
    );
  return { stream, data: message.subarray(1) };
}

/** Parse a text message as a JSON object with a string `type`; throws `invalid_argument`. */
export function parseExecText(text: string): { type: string } & Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new VesselError('invalid_argument', 'exec stream: a text message is not valid JSON', {
      cause: err,
    });
  }
  if (
    typeof value !== 'object' ||
    value === null ||
    Array.isArray(value) ||
    typeof (value as { type?: unknown }).type !== 'string'
  ) {
    throw new VesselError(
      'invalid_argument',
      'exec stream: a text message must be a JSON object with a string "type"',
    );
  }
  return value as { type: string } & Record<string, unknown>;
}

/** The exit code a shell would report: the code, or 128 + the signal. */
export function shellExitCode(status: { code: number | null; signal: number | null }): number {
  if (status.code !== null) return status.code;
  return status.signal !== null ? 128 + status.signal : 1;
}
