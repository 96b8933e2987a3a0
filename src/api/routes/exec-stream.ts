import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { WebSocket } from '@fastify/websocket';
import type { Static } from '@sinclair/typebox';
import { Ajv, type ValidateFunction } from 'ajv';
import type { Readable, Writable } from 'node:stream';
import { VesselError } from '../../core/errors.js';
import {
  EXEC_CLOSE_NORMAL,
  ExecControlSchemas,
  ExecStartSchema,
  decodeExecData,
  encodeExecDataChunks,
  execCloseCode,
  parseExecText,
  type ExecControl,
  type ExecServerMessage,
  type ExecStart,
  type ExecStreamName,
} from '../../core/exec-stream.js';
import type { InstanceManager } from '../../instances/index.js';
import type { ApiDeps } from '../app.js';
import { toHttpError } from '../errors.js';
import { onMessagesInOrder } from '../ws-messages.js';
import { errorResponses, InstanceIdParams } from '../schemas.js';

/** Pause the command's output when this many bytes wait in the socket; resume below LOW. */
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
/** A client that upgrades but sends no exec request is closed after this long. */
export const EXEC_START_TIMEOUT_MS = 30_000;
const SIGKILL = 9;

const PROTOCOL = [
  'WebSocket (send `Connection: Upgrade`, `Upgrade: websocket`; on TCP the bearer token as for every route).',
  'Client → daemon: the first message is text, the exec request `{"type":"exec","argv":[...],"env":[...],"cwd":"/","user":"0:0","tty":true,"rows":24,"cols":80,"stdin":true}`;',
  'then binary messages `0x00 <bytes>` (stdin) and text messages `{"type":"resize","rows":R,"cols":C}`, `{"type":"signal","signal":N}`, `{"type":"eof"}` (close stdin).',
  'Daemon → client: binary `0x01 <bytes>` (stdout; with a tty all output) and `0x02 <bytes>` (stderr),',
  'then `{"type":"exit","code":0,"signal":null}` and close 1000 — or `{"type":"error","code":...,"message":...}` (the REST error body) and close 4000 + its HTTP status (4400, 4404, 4409, ...).',
  'Closing the socket before `exit` kills the command (SIGKILL to its process group). Output is paused while more than 1 MiB waits in the socket.',
  'Errors before the upgrade (bad token, bad path) are plain HTTP responses; a GET without upgrade is a 400.',
].join(' ');

/**
 * `GET /instances/{id}/exec`: interactive exec over a WebSocket. Needs the
 * `@fastify/websocket` plugin registered on `app`.
 */
export function execStreamRoutes(
  app: FastifyInstance,
  deps: { readonly instances: Pick<ApiDeps['instances'], 'exec'> },
): void {
  // The same Ajv settings as JSON bodies: typed already, so no coercion.
  const ajv = new Ajv({ coerceTypes: false, useDefaults: true, strict: false, allErrors: false });
  const validateStart = ajv.compile<ExecStart>(ExecStartSchema);
  const control = controlChecker('exec stream');
  const check = <T>(validate: ValidateFunction<T>, value: unknown, what: string): T => {
    if (validate(value)) return value;
    throw new VesselError(
      'invalid_argument',
      `exec stream: ${ajv.errorsText(validate.errors, { dataVar: what })}`,
    );
  };

  app.route({
    method: 'GET',
    url: '/instances/:id/exec',
    schema: {
      operationId: 'execInstanceStream',
      summary: 'Interactive exec over a WebSocket: a tty, stdin, resize, signals, the exit code',
      description: PROTOCOL,
      tags: ['instances'],
      params: InstanceIdParams,
      response: webSocketResponses('exec'),
    },
    handler: notUpgraded(
      'GET /instances/{id}/exec',
      'use POST /instances/{id}/exec for a non-interactive exec',
    ),
    wsHandler: (socket, request) => {
      const id = (request.params as Static<typeof InstanceIdParams>).id;
      serveCommand(socket, {
        log: request.log,
        control,
        opening: {
          kind: 'request',
          run: (message) => startExec(deps.instances, id, check(validateStart, message, 'request')),
        },
      });
    },
  });
}

/**
 * Checks a client → daemon control message (resize, signal, eof) against its schema;
 * `what` names the stream in errors.
 */
export function controlChecker(what: string): (m: { type: string }) => ExecControl {
  const ajv = new Ajv({ coerceTypes: false, strict: false });
  const controls = new Map(
    Object.entries(ExecControlSchemas).map(([type, schema]) => [
      type,
      ajv.compile<ExecControl>(schema),
    ]),
  );
  return (m) => {
    const validate = controls.get(m.type);
    if (!validate)
      throw new VesselError(
        'invalid_argument',
        `${what}: unknown message type "${m.type.slice(0, 40)}" (expected ${[...controls.keys()].join(', ')})`,
      );
    if (validate(m)) return m;
    throw new VesselError(
      'invalid_argument',
      `${what}: ${ajv.errorsText(validate.errors, { dataVar: 'message' })}`,
    );
  };
}

/** The responses of a WebSocket route: 101, or the API's errors before the upgrade. */
export function webSocketResponses(what: string): Record<number, unknown> {
  return {
    101: { type: 'null', description: `Switching Protocols: the ${what} WebSocket` },
    ...errorResponses,
  };
}

/** The plain-HTTP handler of a WebSocket route: a GET without Upgrade is a 400. */
export function notUpgraded(route: string, hint?: string): () => never {
  return () => {
    throw new VesselError(
      'invalid_argument',
      `${route} is a WebSocket endpoint (send Upgrade: websocket)${hint ? `; ${hint}` : ''}`,
    );
  };
}

/** Exec `req` in instance `id` (an instance still booting is waited for). */
async function startExec(
  instances: Pick<InstanceManager, 'exec'>,
  id: string,
  req: ExecStart,
): Promise<BridgedCommand> {
  const s = await instances.exec(id, {
    argv: req.argv,
    ...(req.env ? { env: req.env } : {}),
    ...(req.cwd ? { cwd: req.cwd } : {}),
    ...(req.user ? { user: req.user } : {}),
    tty: req.tty ?? false,
    ...(req.rows ? { rows: req.rows } : {}),
    ...(req.cols ? { cols: req.cols } : {}),
    stdin: req.stdin ?? false,
  });
  let exited = false;
  const result = s.result.then((status) => {
    exited = true;
    return { code: status.code, signal: status.signal };
  });
  return {
    ...s,
    result,
    stdinOpen: req.stdin ?? false,
    leave: () => {
      if (!exited) s.signal(SIGKILL);
    },
  };
}

/** A command bridged to a socket: an exec in the guest, or an attachment to a session. */
export interface BridgedCommand {
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly stdin: Writable;
  resize(rows: number, cols: number): void;
  signal(signo: number): void;
  /** How it ended; sent as the `exit` message after every byte of output. */
  readonly result: Promise<Omit<Extract<ExecServerMessage, { type: 'exit' }>, 'type'>>;
  /** Whether the client may send stdin. */
  readonly stdinOpen: boolean;
  /** The client went away first: exec kills the command, an attachment detaches. */
  leave(): void;
}

/** How the command behind a socket is opened. */
export type Opening =
  /** Exec: from the client's first message, the request (may wait for a boot). */
  | { readonly kind: 'request'; run(value: { type: string }): Promise<BridgedCommand> }
  /** Attach: from the URL, at once; messages wait for it. */
  | { readonly kind: 'now'; run(): Promise<BridgedCommand> };

export interface ServeOptions {
  readonly log: FastifyBaseLogger;
  readonly opening: Opening;
  readonly control: (message: { type: string }) => ExecControl;
}

/** Bridge one WebSocket to one command in the guest (exec, or a session attachment). */
export function serveCommand(ws: WebSocket, o: ServeOptions): void {
  let session: BridgedCommand | undefined;
  let running = false;
  let stdinEnded = false;
  let done = false;

  const send = (m: ExecServerMessage): void => ws.send(JSON.stringify(m));
  const leave = (): void => {
    if (!session || !running) return;
    try {
      session.leave();
    } catch (err) {
      o.log.debug({ err }, 'exec stream: could not leave the command (channel closed)');
    }
  };
  const fail = (err: unknown): void => {
    if (done) return;
    done = true;
    clearTimeout(startTimer);
    leave();
    const { status, body } = toHttpError(err);
    if (status >= 500) o.log.error({ err }, 'exec stream failed');
    else o.log.debug({ code: body.code, message: body.message }, 'exec stream rejected');
    send({ type: 'error', ...body });
    ws.resume();
    ws.close(execCloseCode(status), body.code);
  };
  const startTimer =
    o.opening.kind === 'request'
      ? setTimeout(
          () =>
            fail(
              new VesselError(
                'timeout',
                `exec stream: no exec request within ${EXEC_START_TIMEOUT_MS / 1000} s`,
              ),
            ),
          EXEC_START_TIMEOUT_MS,
        )
      : undefined;

  const bridge = (s: BridgedCommand): void => {
    session = s;
    running = true;
    s.result.then(
      () => (running = false),
      () => (running = false),
    );
    s.stdin.on('error', fail);
    s.stdin.on('drain', () => ws.resume());
    // Backpressure: while the socket holds more than HIGH_WATER bytes, stop reading the
    // command's output; each flushed message checks whether it fell below LOW_WATER.
    let paused = false;
    const flushed = (): void => {
      if (paused && ws.bufferedAmount < LOW_WATER) {
        paused = false;
        s.stdout.resume();
        s.stderr.resume();
      }
    };
    const pump = (stream: Readable, name: ExecStreamName): Promise<void> =>
      new Promise((resolve) => {
        stream.on('data', (chunk: Buffer) => {
          if (done) return;
          for (const m of encodeExecDataChunks(name, chunk)) ws.send(m, flushed);
          if (!paused && ws.bufferedAmount > HIGH_WATER) {
            paused = true;
            s.stdout.pause();
            s.stderr.pause();
          }
        });
        stream.once('end', resolve);
        stream.once('error', () => resolve());
      });
    // `exit` goes out only after every byte of output: the streams end before the result.
    Promise.all([s.result, pump(s.stdout, 'stdout'), pump(s.stderr, 'stderr')]).then(([status]) => {
      if (done) return;
      done = true;
      send({ type: 'exit', ...status });
      // Reading may be paused by stdin backpressure; the client's close frame must be read,
      // or the socket lingers until the close timeout (30 s) and the CLI exits that late.
      ws.resume();
      ws.close(EXEC_CLOSE_NORMAL);
    }, fail);
    if (done) leave(); // the client left while the instance was still booting
  };

  const opening = o.opening;
  let requested = opening.kind === 'now';
  const opened: Promise<void> | undefined =
    opening.kind === 'now' ? opening.run().then(bridge) : undefined;
  // Settled through the first message handler (or fail) below.
  opened?.catch(fail);

  const onText = async (text: string): Promise<void> => {
    const message = parseExecText(text);
    if (!requested && opening.kind === 'request') {
      if (message.type !== 'exec')
        throw new VesselError(
          'invalid_argument',
          `exec stream: the first message must be the exec request {"type":"exec",...}, not "${message.type.slice(0, 40)}"`,
        );
      requested = true;
      clearTimeout(startTimer);
      bridge(await opening.run(message));
      return;
    }
    const c = o.control(message);
    if (!session) return;
    switch (c.type) {
      case 'resize':
        session.resize(c.rows, c.cols);
        break;
      case 'signal':
        session.signal(c.signal);
        break;
      case 'eof':
        if (!session.stdinOpen) throw noStdin();
        if (!stdinEnded) session.stdin.end();
        stdinEnded = true;
        break;
    }
  };

  const onBinary = (message: Buffer): void => {
    if (!requested)
      throw new VesselError(
        'invalid_argument',
        'exec stream: the first message must be the exec request (text), not binary data',
      );
    const { stream, data } = decodeExecData(message);
    if (stream !== 'stdin')
      throw new VesselError('invalid_argument', `exec stream: clients may only send stdin`);
    if (!session) return;
    if (!session.stdinOpen) throw noStdin();
    if (stdinEnded) throw new VesselError('invalid_argument', 'exec stream: stdin data after eof');
    if (data.length > 0 && !session.stdin.write(data)) ws.pause();
  };

  // One message at a time, in order: the first (the exec request) may wait for a boot,
  // and an attachment's messages wait for it to open.
  onMessagesInOrder(
    ws,
    async (buf, isBinary) => {
      await opened;
      if (isBinary) onBinary(buf);
      else await onText(buf.toString('utf8'));
    },
    fail,
    () => done,
  );
  ws.on('close', (code: number) => {
    clearTimeout(startTimer);
    if (done) return;
    done = true;
    o.log.debug({ code }, 'exec stream closed by the client; leaving the command');
    leave();
    // Drain what the guest still sends for this command; nobody reads it any more.
    session?.stdout.resume();
    session?.stderr.resume();
  });
}

function noStdin(): VesselError {
  return new VesselError(
    'invalid_argument',
    'exec stream: stdin sent but the exec request did not set "stdin": true',
  );
}
