/**
 * Wire types of guest sessions (`/instances/{id}/sessions`): long-running
 * commands whose output the guest agent keeps in a ring buffer, so they
 * outlive the client that started them (guest-agent/PROTOCOL.md §6).
 */
import { Type, type Static } from '@sinclair/typebox';
import { ExecStartSchema } from './exec-stream.js';
import { ExecRequestSchema } from './wire.js';

/** Ring sizes the guest agent accepts (it clamps to these). */
export const SESSION_BUFFER_MIN = 4096;
export const SESSION_BUFFER_MAX = 64 * 1024 * 1024;
export const SESSION_BUFFER_DEFAULT = 1024 * 1024;

export const SessionNameSchema = Type.String({
  pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$',
  description: 'Unique in its instance; letters, digits, `_`, `.`, `-`',
});

const InputModeSchema = Type.Union([Type.Literal('single'), Type.Literal('shared')], {
  description:
    'single (default): the first attacher asking for input holds it until it detaches; shared: every attacher asking has it',
});

export const StartSessionRequestSchema = Type.Object(
  {
    name: Type.Optional(SessionNameSchema),
    command: ExecRequestSchema.properties.argv,
    env: ExecRequestSchema.properties.env,
    cwd: ExecRequestSchema.properties.cwd,
    user: ExecRequestSchema.properties.user,
    tty: ExecStartSchema.properties.tty,
    rows: ExecStartSchema.properties.rows,
    cols: ExecStartSchema.properties.cols,
    buffer_bytes: Type.Optional(
      Type.Integer({
        minimum: SESSION_BUFFER_MIN,
        maximum: SESSION_BUFFER_MAX,
        description: `Output kept in the guest (default ${SESSION_BUFFER_DEFAULT}); older output is dropped`,
      }),
    ),
    input: Type.Optional(InputModeSchema),
  },
  { additionalProperties: false, title: 'StartSessionRequest' },
);
export type StartSessionRequest = Static<typeof StartSessionRequestSchema>;

const Nullable = <T extends ReturnType<typeof Type.Integer> | ReturnType<typeof Type.String>>(
  t: T,
) => Type.Union([t, Type.Null()]);

export const SessionSchema = Type.Object(
  {
    name: Type.String(),
    command: Type.Array(Type.String()),
    pid: Type.Integer({ description: 'In the guest; also its process group' }),
    tty: Type.Boolean(),
    input: InputModeSchema,
    buffer_bytes: Type.Integer(),
    state: Type.Union([Type.Literal('running'), Type.Literal('exited')]),
    exit_code: Nullable(
      Type.Integer({ description: '128 + n after signal n; null while running' }),
    ),
    exit_signal: Nullable(Type.Integer()),
    started_at: Type.String({ format: 'date-time' }),
    ended_at: Nullable(Type.String({ format: 'date-time' })),
    output_start: Type.Integer({
      description: 'Offset of the oldest byte still kept (bytes before it were dropped)',
    }),
    output_end: Type.Integer({ description: 'Bytes of output so far (stdout and stderr)' }),
    attached: Type.Integer({ description: 'Clients attached now' }),
  },
  { title: 'Session' },
);
export type Session = Static<typeof SessionSchema>;

export const SignalSessionRequestSchema = Type.Object(
  {
    signal: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 64, description: 'Signal number (default 15, SIGTERM)' }),
    ),
  },
  { additionalProperties: false, title: 'SignalSessionRequest' },
);
export type SignalSessionRequest = Static<typeof SignalSessionRequestSchema>;
