/**
 * Streamed request bodies. Routes that take an archive or a file's bytes register a
 * content-type parser that hands the raw request stream through; this checks one came.
 */
import type { Readable } from 'node:stream';
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
