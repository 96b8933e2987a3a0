import net from 'node:net';
import { Readable, Writable } from 'node:stream';
import WebSocket from 'ws';
import { ERROR_CODES, VesselError, errnoCode, type ErrorCode } from '../core/errors.js';
import {
  EXEC_CLOSE_NORMAL,
  decodeExecData,
  encodeExecDataChunks,
  parseExecText,
  type ExecControl,
  type ExecStart,
  type SessionAttachedMessage,
} from '../core/exec-stream.js';

/** Where the daemon listens: its unix socket, or a TCP base URL with a token. */
export interface ExecStreamTransport {
  readonly socketPath?: string;
  readonly baseUrl?: string;
  readonly token?: string;
}

/** What to run; `stdin: true` to stream stdin, `tty: true` for a pty of `rows` × `cols`. */
export type ExecStreamRequest = Omit<ExecStart, 'type'>;

export interface ExecStreamExit {
  readonly code: number | null;
  readonly signal: number | null;
  /** Attach: why the instance stopped when it did not exit by itself (boot failure). */
  readonly message?: string;
  /** Session attach: the session still runs (a non-follow read ended, or a detach). */
  readonly running?: boolean;
}

/** A command running in an instance, attached over the exec WebSocket. */
export interface ExecStream {
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** The command's stdin (needs `stdin: true`); `end()` sends EOF. */
  readonly stdin: Writable;
  resize(rows: number, cols: number): void;
  signal(signo: number): void;
  /** Resolves with the exit status; rejects with the daemon's error (a VesselError). */
  readonly result: Promise<ExecStreamExit>;
  /** Detach: close the socket; the daemon kills the command. */
  close(): void;
}

function errorFromBody(status: number, text: string): VesselError {
  let parsed: { code?: string; message?: string; context?: Record<string, unknown> } = {};
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch {
    // not JSON: report the status
  }
  return daemonError(parsed.code, parsed.message ?? `HTTP ${status} from the exec endpoint`, {
    status,
    ...parsed.context,
  });
}

function daemonError(
  code: string | undefined,
  message: string,
  details?: Record<string, unknown>,
): VesselError {
  const known: ErrorCode =
    code && Object.hasOwn(ERROR_CODES, code) ? (code as ErrorCode) : 'internal';
  return new VesselError(known, message, details ? { details } : {});
}

/**
 * Run a command in an instance over `GET /instances/{id}/exec` (WebSocket).
 * Resolves once the socket is open and the request sent; errors before the
 * upgrade (token, unreachable daemon) reject, later ones reject `result`.
 */
export async function openExecStream(
  transport: ExecStreamTransport,
  id: string,
  request: ExecStreamRequest,
): Promise<ExecStream> {
  const ws = await openSocket(transport, `/instances/${encodeURIComponent(id)}/exec`);
  return attach(ws, request);
}

/**
 * Attach to an instance's main command over `GET /instances/{id}/attach`
 * (WebSocket): its output from the start of the app log (unless `logs` is
 * false), stdin when it was created with `stdin: true`, signals, tty size.
 * `result` resolves when the instance has stopped, with the command's exit.
 */
export async function openAttachStream(
  transport: ExecStreamTransport,
  id: string,
  options: { logs?: boolean } = {},
): Promise<ExecStream> {
  const q = options.logs === false ? '?logs=false' : '';
  const ws = await openSocket(transport, `/instances/${encodeURIComponent(id)}/attach${q}`);
  return attach(ws, undefined);
}

/** A session attachment: an exec stream whose first message says where its output starts. */
export interface SessionStream extends ExecStream {
  readonly attached: SessionAttachedMessage;
}

/**
 * Attach to a session over `GET /instances/{id}/sessions/{name}/attach` (WebSocket):
 * its kept output from `from` (default: all of it), then live output with `follow`;
 * stdin, resize and signals with `input`. `close()` detaches: the session runs on.
 */
export async function openSessionStream(
  transport: ExecStreamTransport,
  id: string,
  name: string,
  options: { from?: number; input?: boolean; follow?: boolean } = {},
): Promise<SessionStream> {
  const q = new URLSearchParams();
  if (options.from !== undefined) q.set('from', String(options.from));
  if (options.input !== undefined) q.set('input', String(options.input));
  if (options.follow !== undefined) q.set('follow', String(options.follow));
  const qs = q.size > 0 ? `?${q.toString()}` : '';
  const ws = await openSocket(
    transport,
    `/instances/${encodeURIComponent(id)}/sessions/${encodeURIComponent(name)}/attach${qs}`,
  );
  let onAttached!: (m: SessionAttachedMessage) => void;
  const attached = new Promise<SessionAttachedMessage>((resolve) => (onAttached = resolve));
  const stream = attach(ws, undefined, onAttached);
  // The daemon's first message is the header, or an error (an unknown session).
  const header = await Promise.race([attached, stream.result.then(() => undefined)]);
  if (!header) {
    stream.close();
    throw new VesselError('internal', 'the session stream ended before its header');
  }
  return { ...stream, attached: header };
}

async function openSocket(transport: ExecStreamTransport, path: string): Promise<WebSocket> {
  const where = transport.baseUrl ?? transport.socketPath ?? '';
  let ws: WebSocket;
  if (transport.baseUrl) {
    ws = new WebSocket(`${transport.baseUrl.replace(/\/$/, '').replace(/^http/, 'ws')}${path}`, {
      headers: transport.token ? { authorization: `Bearer ${transport.token}` } : {},
      handshakeTimeout: 30_000,
    });
  } else if (transport.socketPath) {
    const socketPath = transport.socketPath;
    ws = new WebSocket(`ws://vessel${path}`, {
      createConnection: () => net.connect(socketPath),
      handshakeTimeout: 30_000,
    });
  } else {
    throw new VesselError('invalid_argument', 'exec stream needs a socketPath or a baseUrl');
  }

  await new Promise<void>((resolve, reject) => {
    const cleanup = (): void => {
      ws.off('open', onOpen);
      ws.off('error', onError);
      ws.off('unexpected-response', onResponse);
    };
    const onOpen = (): void => {
      cleanup();
      resolve();
    };
    const onError = (err: Error): void => {
      cleanup();
      const code = errnoCode(err);
      reject(
        new VesselError(
          'daemon_unreachable',
          `cannot open the exec stream at ${where}${code ? ` (${code})` : `: ${err.message}`}`,
          { cause: err },
        ),
      );
    };
    const onResponse = (_req: unknown, res: import('node:http').IncomingMessage): void => {
      cleanup();
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        // Aborting a handshake emits an error of its own; the daemon's answer is the error.
        ws.on('error', () => undefined);
        ws.terminate();
        reject(errorFromBody(res.statusCode ?? 0, Buffer.concat(parts).toString('utf8')));
      });
    };
    ws.on('open', onOpen);
    ws.on('error', onError);
    ws.on('unexpected-response', onResponse);
  });
  return ws;
}

function attach(
  ws: WebSocket,
  request: ExecStreamRequest | undefined,
  onAttached?: (m: SessionAttachedMessage) => void,
): ExecStream {
  // Backpressure: when a consumer stops reading stdout or stderr, stop reading the socket.
  const full = { stdout: false, stderr: false };
  const wake = (): void => {
    if (!full.stdout && !full.stderr && ws.isPaused) ws.resume();
  };
  // A roomy buffer: pausing the socket for every 64 KiB message costs throughput.
  const stdout = new Readable({
    highWaterMark: 1024 * 1024,
    read: () => ((full.stdout = false), wake()),
  });
  const stderr = new Readable({
    highWaterMark: 1024 * 1024,
    read: () => ((full.stderr = false), wake()),
  });
  // A destroyed stream reads no more: it must not keep the socket paused (the exit waits).
  stdout.once('close', () => ((full.stdout = false), wake()));
  stderr.once('close', () => ((full.stderr = false), wake()));
  const end = (): void => {
    stdout.push(null);
    stderr.push(null);
  };
  let settled = false;
  let settle!: { resolve: (s: ExecStreamExit) => void; reject: (e: Error) => void };
  const result = new Promise<ExecStreamExit>((resolve, reject) => (settle = { resolve, reject }));
  // A caller that detaches with close() need not await the result to avoid an unhandled rejection.
  result.catch(() => undefined);
  const finish = (outcome: ExecStreamExit | Error): void => {
    if (settled) return;
    settled = true;
    end();
    if (outcome instanceof Error) settle.reject(outcome);
    else settle.resolve(outcome);
  };

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    try {
      if (isBinary) {
        const { stream, data: bytes } = decodeExecData(data);
        if (stream === 'stdin') return;
        const target = stream === 'stdout' ? stdout : stderr;
        // A consumer that destroyed its stream wants no more of it; the rest still flows.
        if (target.destroyed) return;
        if (!target.push(bytes)) {
          full[stream] = true;
          ws.pause();
        }
        return;
      }
      const m = parseExecText(data.toString('utf8'));
      if (m.type === 'attached') {
        onAttached?.(m as unknown as SessionAttachedMessage);
      } else if (m.type === 'exit') {
        finish({
          code: typeof m.code === 'number' ? m.code : null,
          signal: typeof m.signal === 'number' ? m.signal : null,
          ...(typeof m.message === 'string' ? { message: m.message } : {}),
          ...(typeof m.running === 'boolean' ? { running: m.running } : {}),
        });
      } else if (m.type === 'error') {
        finish(
          daemonError(
            typeof m.code === 'string' ? m.code : undefined,
            typeof m.message === 'string' ? m.message : 'exec failed',
            typeof m.context === 'object' && m.context !== null
              ? (m.context as Record<string, unknown>)
              : undefined,
          ),
        );
      }
    } catch (err) {
      finish(err as Error);
      ws.terminate();
    }
  });
  ws.on('error', (err) =>
    finish(
      new VesselError('daemon_unreachable', `exec stream failed: ${err.message}`, { cause: err }),
    ),
  );
  ws.on('close', (code, reason) =>
    finish(
      new VesselError(
        'daemon_unreachable',
        `the exec stream closed before the command exited (WebSocket close ${code}${reason.length > 0 ? ` ${reason.toString()}` : ''})`,
      ),
    ),
  );

  const control = (m: ExecControl): void => {
    if (!settled && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(m));
  };
  const stdin = new Writable({
    write(chunk: Buffer, _enc, cb) {
      // After the command ended its stdin is gone, as with a closed pipe: drop the bytes.
      if (settled || ws.readyState !== WebSocket.OPEN) return cb();
      const frames = encodeExecDataChunks('stdin', chunk);
      frames.forEach((f, i) => ws.send(f, i === frames.length - 1 ? () => cb() : undefined));
      if (frames.length === 0) cb();
    },
    final(cb) {
      control({ type: 'eof' });
      cb();
    },
  });
  if (request) ws.send(JSON.stringify({ type: 'exec', ...request } satisfies ExecStart));
  return {
    stdout,
    stderr,
    stdin,
    result,
    resize: (rows, cols) => control({ type: 'resize', rows, cols }),
    signal: (signo) => control({ type: 'signal', signal: signo }),
    close: () => {
      if (ws.readyState === WebSocket.OPEN) ws.close(EXEC_CLOSE_NORMAL, 'client detached');
      else ws.terminate();
    },
  };
}
