import type { FastifyInstance } from 'fastify';
import type { WebSocket } from '@fastify/websocket';
import { Type, type Static } from '@sinclair/typebox';
import { VesselError } from '../../core/errors.js';
import {
  EXEC_CLOSE_NORMAL,
  decodeExecData,
  encodeExecDataChunks,
  execCloseCode,
  parseExecText,
} from '../../core/exec-stream.js';
import type { ApiDeps } from '../app.js';
import { toHttpError } from '../errors.js';
import { InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import { onMessagesInOrder } from '../ws-messages.js';
import { controlChecker, notUpgraded, webSocketResponses } from './exec-stream.js';

/** Above this many bytes waiting in the socket, the log reader waits for it to drain. */
const HIGH_WATER = 1024 * 1024;

const AttachQuery = Type.Object(
  {
    logs: Type.Optional(
      Type.Boolean({
        description: 'Replay the app log from its start before live output (default true)',
      }),
    ),
  },
  { additionalProperties: false },
);

const ATTACH_PROTOCOL = [
  'WebSocket, like `docker attach`: the main command of the instance (exec mode).',
  'Daemon → client: binary `0x01 <bytes>` (stdout; with a tty all output) and `0x02 <bytes>` (stderr), from the start of the app log unless `logs=false`,',
  'then, once the instance is Stopped, `{"type":"exit","code":N,"signal":S,"message":M}` and close 1000; errors as `{"type":"error",...}` and close 4000 + HTTP status.',
  'Client → daemon: binary `0x00 <bytes>` (stdin; the instance must have been created with `stdin: true`), `{"type":"eof"}`, `{"type":"signal","signal":N}`, `{"type":"resize","rows":R,"cols":C}`.',
  'Closing the socket detaches; the command keeps running.',
].join(' ');

/** `GET /instances/{id}/attach`: the main command's output, stdin, signals and tty size. */
export function attachRoute(app: FastifyInstance, deps: ApiDeps): void {
  const control = controlChecker('attach');
  app.route({
    method: 'GET',
    url: '/instances/:id/attach',
    schema: {
      operationId: 'attachInstance',
      summary: "Attach to the main command's stdio over a WebSocket (run -i / -t)",
      description: ATTACH_PROTOCOL,
      tags: ['instances'],
      params: InstanceIdParams,
      querystring: AttachQuery,
      response: webSocketResponses('attach'),
    },
    handler: notUpgraded('GET /instances/{id}/attach'),
    wsHandler: (socket, request) => {
      const id = (request.params as InstanceIdParamsT).id;
      const q = request.query as Static<typeof AttachQuery>;
      serveAttach(socket, deps, id, q.logs ?? true, control);
    },
  });
}

function serveAttach(
  ws: WebSocket,
  deps: ApiDeps,
  idOrName: string,
  replay: boolean,
  check: (m: { type: string }) => void,
): void {
  const instances = deps.instances;
  const abort = new AbortController();
  let done = false;
  const fail = (err: unknown): void => {
    if (done) return;
    done = true;
    abort.abort();
    const { status, body } = toHttpError(err);
    ws.send(JSON.stringify({ type: 'error', ...body }));
    ws.close(execCloseCode(status), body.code);
  };
  let stdinEnded = false;
  const onMessage = async (buf: Buffer, isBinary: boolean): Promise<void> => {
    const controls = instances.mainControls(idOrName);
    if (isBinary) {
      const { stream, data } = decodeExecData(buf);
      if (stream !== 'stdin')
        throw new VesselError('invalid_argument', 'attach: clients may only send stdin');
      if (!controls.stdinOpen)
        throw new VesselError(
          'invalid_argument',
          'attach: the instance was not created with stdin open (run -i)',
        );
      if (stdinEnded) throw new VesselError('invalid_argument', 'attach: stdin data after eof');
      if (data.length === 0) return;
      ws.pause();
      try {
        await controls.stdin(data);
      } finally {
        ws.resume();
      }
      return;
    }
    const m = parseExecText(buf.toString('utf8'));
    check(m);
    if (m.type === 'eof') {
      if (!stdinEnded && controls.stdinOpen) await controls.stdin(Buffer.alloc(0));
      stdinEnded = true;
    } else if (m.type === 'signal') await controls.signal(m.signal as number);
    else if (m.type === 'resize') await controls.resize(m.rows as number, m.cols as number);
  };
  onMessagesInOrder(ws, onMessage, fail, () => done);
  ws.on('close', () => {
    done = true;
    abort.abort();
  });

  void (async () => {
    try {
      const inst = instances.get(idOrName);

      const chunks = instances.logs(inst.id, 'app', {
        follow: true,
        ...(replay ? {} : { tail: 0 }),
        signal: abort.signal,
      });
      for await (const c of chunks) {
        if (done) return;
        const name = c.stream === 'stderr' ? 'stderr' : 'stdout';
        const messages = encodeExecDataChunks(name, c.data);
        const last = messages.pop();
        for (const m of messages) ws.send(m);
        // Back-pressure: above the high-water mark, wait until this chunk left the socket.
        if (last && ws.bufferedAmount + last.length > HIGH_WATER)
          await new Promise<void>((resolve) => ws.send(last, () => resolve()));
        else if (last) ws.send(last);
      }
      if (done) return;
      const end = instances.get(inst.id);
      done = true;
      ws.send(
        JSON.stringify({
          type: 'exit',
          code: end.exit_code,
          signal: null,
          state: end.state,
          ...(end.state_error ? { message: end.state_error } : {}),
        }),
      );
      ws.close(EXEC_CLOSE_NORMAL);
    } catch (err) {
      fail(err);
    }
  })();
}
