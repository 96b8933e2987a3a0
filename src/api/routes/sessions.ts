import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { PassThrough, Writable } from 'node:stream';
import { VesselError } from '../../core/errors.js';
import {
  SessionNameSchema,
  SessionSchema,
  SignalSessionRequestSchema,
  StartSessionRequestSchema,
  type SignalSessionRequest,
  type StartSessionRequest,
} from '../../core/wire-sessions.js';
import type { SessionAttachment } from '../../instances/index.js';
import type { ApiDeps } from '../app.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import {
  controlChecker,
  notUpgraded,
  serveCommand,
  webSocketResponses,
  type BridgedCommand,
} from './exec-stream.js';

const SessionParams = Type.Object({
  id: InstanceIdParams.properties.id,
  session: SessionNameSchema,
});
type SessionParamsT = Static<typeof SessionParams>;

const Offset = Type.Integer({
  minimum: 0,
  maximum: 9e15,
  description: 'Output offset to start at (default: the oldest byte kept)',
});

const AttachQuery = Type.Object(
  {
    from: Type.Optional(Offset),
    input: Type.Optional(
      Type.Boolean({ description: 'Ask for input: stdin, resize, signals (default true)' }),
    ),
    follow: Type.Optional(
      Type.Boolean({ description: 'Stream live output after the buffer (default true)' }),
    ),
  },
  { additionalProperties: false },
);

const LogsQuery = Type.Object(
  {
    from: Type.Optional(Offset),
    follow: Type.Optional(
      Type.Boolean({ description: 'Keep streaming until the session ends (default false)' }),
    ),
  },
  { additionalProperties: false },
);

const DeleteQuery = Type.Object(
  {
    force: Type.Optional(
      Type.Boolean({ description: 'Kill a running session (SIGKILL) before removing it' }),
    ),
  },
  { additionalProperties: false },
);

const ATTACH_PROTOCOL = [
  "WebSocket, the exec stream's messages without the exec request: the session is attached at once.",
  'Daemon → client: first `{"type":"attached","start":S,"from":F,"end":E,"tty":bool,"input":bool,"running":bool}` (`from` above the asked offset: that output was dropped from the ring; `input`: whether this client has input),',
  'then binary `0x01 <bytes>` (stdout; with a tty all output) and `0x02 <bytes>` (stderr): the buffered output from `from`, then live;',
  'then `{"type":"exit","code":N,"signal":S,"running":false,"detached":false}` when the session ended (or, with follow=false, once the buffer is sent: `running` true while it runs) and close 1000. Errors as the exec stream.',
  'Client → daemon (only with input): binary `0x00 <bytes>` (stdin), `{"type":"eof"}`, `{"type":"resize","rows":R,"cols":C}`, `{"type":"signal","signal":N}`.',
  'Closing the socket detaches: the session keeps running, its output kept in the guest.',
].join(' ');

/** `/instances/{id}/sessions`: commands kept by the guest agent, attachable later. */
export function sessionRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const sessions = deps.instances.sessions;
  const tags = ['sessions'];
  const control = controlChecker('session attach');

  app.get(
    '/instances/:id/sessions',
    {
      schema: {
        operationId: 'listSessions',
        summary: "An instance's sessions, running and ended, by name",
        tags,
        params: InstanceIdParams,
        response: { 200: Type.Array(SessionSchema), ...errorResponses },
      },
    },
    (request) => sessions.list((request.params as InstanceIdParamsT).id),
  );

  app.post(
    '/instances/:id/sessions',
    {
      schema: {
        operationId: 'startSession',
        summary: 'Start a command as a session: it outlives this request and every client',
        description:
          "The command runs in the guest with the instance's environment under `env`. Its output (stdout and stderr, or the pty's) is kept in a ring of `buffer_bytes` in the guest agent; attach to read it and send input. The session and its exit code stay until deleted (at most 128 per instance).",
        tags,
        params: InstanceIdParams,
        body: StartSessionRequestSchema,
        response: { 201: SessionSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const id = (request.params as InstanceIdParamsT).id;
      const s = await sessions.start(id, request.body as StartSessionRequest);
      return reply.status(201).send(s);
    },
  );

  app.get(
    '/instances/:id/sessions/:session',
    {
      schema: {
        operationId: 'getSession',
        summary: 'One session: state, exit code, output offsets, attached clients',
        tags,
        params: SessionParams,
        response: { 200: SessionSchema, ...errorResponses },
      },
    },
    (request) => {
      const p = request.params as SessionParamsT;
      return sessions.get(p.id, p.session);
    },
  );

  app.post(
    '/instances/:id/sessions/:session/signal',
    {
      schema: {
        operationId: 'signalSession',
        summary: "Send a signal to a running session's process group",
        tags,
        params: SessionParams,
        body: SignalSessionRequestSchema,
        response: { 200: SessionSchema, ...errorResponses },
      },
    },
    (request) => {
      const p = request.params as SessionParamsT;
      const body = (request.body ?? {}) as SignalSessionRequest;
      return sessions.signal(p.id, p.session, body.signal ?? 15);
    },
  );

  app.delete(
    '/instances/:id/sessions/:session',
    {
      schema: {
        operationId: 'deleteSession',
        summary: 'Remove an ended session (its output and exit code); force kills a running one',
        tags,
        params: SessionParams,
        querystring: DeleteQuery,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      const p = request.params as SessionParamsT;
      const q = request.query as Static<typeof DeleteQuery>;
      await sessions.remove(p.id, p.session, q.force ?? false);
      return reply.status(204).send();
    },
  );

  app.get(
    '/instances/:id/sessions/:session/logs',
    {
      schema: {
        operationId: 'sessionLogs',
        summary: "A session's kept output as bytes (stdout and stderr in arrival order)",
        description:
          'application/octet-stream. Headers: `X-Vessel-Output-From` (the offset the body starts at). With follow, the body goes on until the session ends; closing the request leaves the session running.',
        tags,
        params: SessionParams,
        querystring: LogsQuery,
        response: {
          200: { type: 'string', format: 'binary', description: 'The output bytes' },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const p = request.params as SessionParamsT;
      const q = request.query as Static<typeof LogsQuery>;
      const a = await sessions.attach(p.id, p.session, {
        ...(q.from === undefined ? {} : { from: q.from }),
        follow: q.follow ?? false,
        input: false,
      });
      const header = await a.header;
      const body = new PassThrough();
      const sink = new Writable({
        write: (chunk: Buffer, _enc, cb) => {
          if (body.write(chunk)) cb();
          else body.once('drain', () => cb());
        },
      });
      // One body from two streams, in the order the guest sent them.
      let open = 2;
      for (const stream of [a.stdout, a.stderr]) {
        stream.pipe(sink, { end: false });
        stream.once('end', () => {
          if (--open === 0) body.end();
        });
      }
      a.result.catch((err: unknown) => body.destroy(err as Error));
      // A client that leaves detaches; the session runs on.
      request.raw.once('close', () => {
        if (!body.writableFinished) a.detach();
      });
      return reply
        .header('content-type', 'application/octet-stream')
        .header('x-vessel-output-from', String(header.from))
        .send(body);
    },
  );

  app.route({
    method: 'GET',
    url: '/instances/:id/sessions/:session/attach',
    schema: {
      operationId: 'attachSession',
      summary: 'Attach to a session over a WebSocket: its kept output, then live; input; detach',
      description: ATTACH_PROTOCOL,
      tags,
      params: SessionParams,
      querystring: AttachQuery,
      response: webSocketResponses('session attach'),
    },
    handler: notUpgraded(
      'GET /instances/{id}/sessions/{session}/attach',
      'GET .../logs reads the output over HTTP',
    ),
    wsHandler: (socket, request) => {
      const p = request.params as SessionParamsT;
      const q = request.query as Static<typeof AttachQuery>;
      serveCommand(socket, {
        log: request.log,
        control,
        opening: {
          kind: 'now',
          run: async () => {
            const a = await sessions.attach(p.id, p.session, {
              ...(q.from === undefined ? {} : { from: q.from }),
              follow: q.follow ?? true,
              input: q.input ?? true,
            });
            const h = await a.header;
            socket.send(JSON.stringify({ type: 'attached', ...h }));
            return bridged(a, h.input);
          },
        },
      });
    },
  });
}

/** A session attachment as the exec stream's bridge sees it. */
function bridged(a: SessionAttachment, input: boolean): BridgedCommand {
  let ended = false;
  const result = a.result.then((end) => {
    ended = true;
    return { code: end.code, signal: end.signal, running: end.running, detached: end.detached };
  });
  return {
    stdout: a.stdout,
    stderr: a.stderr,
    stdin: a.stdin,
    resize: (rows, cols) => {
      if (input) a.resize(rows, cols);
    },
    signal: (signo) => {
      if (!input)
        throw new VesselError('invalid_argument', 'session attach: this client has no input');
      a.signal(signo);
    },
    result,
    stdinOpen: input,
    leave: () => {
      if (!ended) a.detach();
    },
  };
}
