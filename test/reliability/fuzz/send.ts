/**
 * Send one fuzz request over a unix socket (the daemon's own, or the relay to its TCP
 * listener) and collect what came back: status, headers and the first bytes of the body.
 * A 2xx stream (SSE, framed exec/log bytes) is not read to its end.
 */
import http from 'node:http';
import type { FuzzRequest } from './request.js';
import { preview } from './request.js';

/**
 * A fresh connection per request by default, so each answer is judged on its own;
 * `FUZZ_KEEPALIVE=1` reuses connections (see the report of issue 11 on what that showed).
 */
const KEEP_ALIVE = process.env.FUZZ_KEEPALIVE === '1';
const STREAM_TYPES = ['text/event-stream', 'application/vnd.vessel.stream'];

export interface FuzzResponse {
  /** 0 when nothing came back. */
  readonly status: number;
  readonly contentType: string;
  readonly body: Buffer;
  /** Set when no (complete) response came: the connection closed, or the time ran out. */
  readonly failure?: 'closed' | 'timeout' | 'unsendable';
  readonly error?: string;
  /** From sending to the end of the response (or the failure). */
  readonly ms: number;
}

/** A unix socket path plus the agent for it. */
export interface Target {
  readonly name: 'unix' | 'tcp';
  readonly socketPath: string;
  readonly agent: http.Agent;
}

export function target(name: 'unix' | 'tcp', socketPath: string): Target {
  return { name, socketPath, agent: new http.Agent({ keepAlive: KEEP_ALIVE, maxSockets: 16 }) };
}

function isStream(res: http.IncomingMessage): boolean {
  const type = res.headers['content-type'] ?? '';
  const status = res.statusCode ?? 0;
  return status < 300 && STREAM_TYPES.some((t) => type.startsWith(t));
}

export interface SendOptions {
  /** Give up waiting for the response after this long (default 15 s). */
  readonly timeoutMs?: number;
  /** Keep at most this many body bytes (default 64 KiB: enough to judge an error body). */
  readonly bodyCap?: number;
}

/** Send `req`; never rejects (a failed exchange is a response with `failure`). */
export function send(
  t: Target,
  req: FuzzRequest,
  options: SendOptions = {},
): Promise<FuzzResponse> {
  const { timeoutMs = 15_000, bodyCap = 64 * 1024 } = options;
  return new Promise((resolve) => {
    let done = false;
    const t0 = performance.now();
    const finish = (r: Omit<FuzzResponse, 'ms'>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ ...r, ms: Math.round(performance.now() - t0) });
    };
    const headers: Record<string, string | number> = { ...req.headers };
    if (req.body) headers['content-length'] = req.body.length;
    let r: http.ClientRequest;
    try {
      r = http.request({
        socketPath: t.socketPath,
        agent: t.agent,
        method: req.method,
        path: req.path,
        headers,
      });
    } catch (err) {
      // Node's client refuses it (e.g. an unescaped character): a generator bug, not a daemon's.
      const error = err instanceof Error ? err.message : String(err);
      finish({ status: 0, contentType: '', body: Buffer.alloc(0), failure: 'unsendable', error });
      return;
    }
    const timer = setTimeout(() => {
      finish({ status: 0, contentType: '', body: Buffer.alloc(0), failure: 'timeout' });
      r.destroy();
    }, timeoutMs);
    r.on('error', (err) =>
      finish({
        status: 0,
        contentType: '',
        body: Buffer.alloc(0),
        failure: 'closed',
        error: err.message,
      }),
    );
    // When the daemon answers early (413) and closes while a large body is still being
    // written, the write fails after Node's client has let go of the socket: not an answer.
    r.on('socket', (socket) => socket.on('error', () => undefined));
    // A WebSocket handshake the daemon accepted (e.g. an Upgrade on any GET route): the 101 is
    // the answer; the socket is not used further.
    r.on('upgrade', (res, socket) => {
      // Node hands the socket over without its error listener; a body still being written
      // would fail with EPIPE on it.
      socket.on('error', () => undefined);
      socket.destroy();
      finish({ status: res.statusCode ?? 0, contentType: '', body: Buffer.alloc(0) });
    });
    r.on('response', (res) => {
      const base = { status: res.statusCode ?? 0, contentType: res.headers['content-type'] ?? '' };
      if (isStream(res)) {
        res.destroy(); // a long-lived 2xx stream: its headers are all that is checked
        finish({ ...base, body: Buffer.alloc(0) });
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        if (size < bodyCap) chunks.push(c);
        size += c.length;
      });
      res.on('end', () => finish({ ...base, body: Buffer.concat(chunks) }));
      // The status line arrived; a body cut short afterwards still counts as that status.
      res.on('error', () => finish({ ...base, body: Buffer.concat(chunks) }));
      res.on('aborted', () => finish({ ...base, body: Buffer.concat(chunks) }));
    });
    r.end(req.body);
  });
}

/** The response as a failure message shows it. */
export function describeResponse(r: FuzzResponse): string {
  if (r.failure)
    return `no response after ${r.ms} ms (${r.failure}${r.error ? `: ${r.error}` : ''})`;
  return `${r.status} in ${r.ms} ms, content-type "${r.contentType}" body ${preview(r.body)}`;
}
