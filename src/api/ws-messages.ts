import type { WebSocket } from '@fastify/websocket';

/**
 * Handle a WebSocket's messages one at a time, in order, even when handling
 * one waits (an exec request waiting out a boot, stdin waiting for credit):
 * later messages queue behind it. A handler error goes to `fail`; nothing is
 * handled once `stopped()` says so.
 */
export function onMessagesInOrder(
  ws: WebSocket,
  handle: (message: Buffer, isBinary: boolean) => void | Promise<void>,
  fail: (err: unknown) => void,
  stopped: () => boolean,
): void {
  let chain = Promise.resolve();
  ws.on('message', (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => {
    if (stopped()) return;
    const buf = Buffer.isBuffer(data)
      ? data
      : Array.isArray(data)
        ? Buffer.concat(data)
        : Buffer.from(data);
    chain = chain
      .then(async () => {
        if (!stopped()) await handle(buf, isBinary);
      })
      .catch(fail);
  });
}
