/**
 * Streamed request bodies. Routes that take an archive or a file's bytes register a
 * content-type parser that hands the raw request stream through; this checks one came.
 */
import { PassThrough, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { VesselError } from '../core/errors.js';

/** The request body as a stream, or `invalid_argument` saying which content types carry it. */
export function bodyStream(body: unknown, what: string, types: readonly string[]): Readable {
  const stream = body as Readable | undefined;
  if (!stream || typeof stream.pipe !== 'function') {
    throw new VesselError(
      'invalid_argument',
      `send ${what} as the request body with content-type ${types.join(' or ')}`,
    );
  }
  return stream;
}

/** How long a failed upload's remaining bytes are read and dropped before answering. */
const DRAIN_MS = 30_000;

/**
 * Run `fn` on the request body through a stream of its own, which `fn` may destroy when
 * it fails. The request itself is then read to its end and dropped (for at most
 * DRAIN_MS) before the error is answered: a client still uploading gets the JSON error
 * (`disk_full`, `invalid_archive`, ...) instead of a reset connection.
 */
export async function withBody<T>(body: Readable, fn: (body: Readable) => Promise<T>): Promise<T> {
  const own = new PassThrough();
  const forward = (err: Error): void => {
    own.destroy(err);
  };
  body.once('error', forward);
  body.pipe(own);
  try {
    return await fn(own);
  } catch (err) {
    body.unpipe(own);
    own.destroy();
    if (!body.readableEnded && !body.destroyed) {
      body.resume();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        finished(body).catch(() => undefined),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, DRAIN_MS))),
      ]);
      clearTimeout(timer);
    }
    throw err;
  } finally {
    body.off('error', forward);
  }
}
