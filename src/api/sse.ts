import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Writable } from 'node:stream';

/** Resolves once `out` can take more (at once when it can, or when it is gone). */
export function drained(out: Writable): Promise<void> {
  if (out.destroyed || !out.writableNeedDrain) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      out.off('drain', done);
      out.off('close', done);
      resolve();
    };
    out.once('drain', done);
    out.once('close', done);
  });
}

export interface SseStream {
  send(event: string, data: unknown): void;
  /** An event without a name (`message` to browsers): `data: <JSON>`. */
  data(data: unknown): void;
  /** Resolves once the socket has taken what was sent (at once when it already has, or closed). */
  drained(): Promise<void>;
  close(): void;
  readonly closed: boolean;
  onClose(fn: () => void): void;
}

/**
 * Take over the response as a Server-Sent Events stream. A comment line is
 * sent every 15 s to keep proxies from timing the stream out.
 */
export function openSse(request: FastifyRequest, reply: FastifyReply): SseStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.write(': vessel\n\n');
  let closed = false;
  const closers: (() => void)[] = [];
  const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
  const finish = (): void => {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    for (const fn of closers) fn();
  };
  request.raw.on('close', finish);
  res.on('close', finish);
  return {
    send(event, data) {
      if (closed) return;
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    data(data) {
      if (closed) return;
      res.write(`data: ${JSON.stringify(data)}\n\n`);
    },
    drained() {
      return closed ? Promise.resolve() : drained(res);
    },
    close() {
      finish();
      res.end();
    },
    get closed() {
      return closed;
    },
    onClose(fn) {
      if (closed) fn();
      else closers.push(fn);
    },
  };
}
