import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { VesselError, errorMessage, isNoSpace, type ErrorKind } from '../core/errors.js';

/** The one place where an error kind becomes an HTTP status. */
export const STATUS_BY_KIND: Record<ErrorKind, number> = {
  InvalidArgument: 400,
  Unauthenticated: 401,
  NotFound: 404,
  AlreadyExists: 409,
  Conflict: 409,
  FailedPrecondition: 409,
  ResourceExhausted: 507,
  Internal: 500,
  Unavailable: 503,
};

/** One more error, or a cause (the hypeman API's ErrorDetail). */
export interface ErrorDetail {
  code?: string;
  message?: string;
}

/**
 * The error body (the hypeman API's Error): `details` lists further errors
 * (e.g. each invalid field), `inner_error` a Vessel cause, and `context` is
 * Vessel's structured facts (instance, field, states...).
 */
export interface ErrorBody {
  code: string;
  message: string;
  details?: ErrorDetail[];
  inner_error?: ErrorDetail;
  context?: Record<string, unknown>;
}

function isFastifyError(err: unknown): err is FastifyError {
  return err instanceof Error && 'statusCode' in err;
}

interface AjvError {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
}

/** An Ajv error as a sentence naming the field: `body.network.egress must be boolean`. */
function describeValidation(where: string, e: AjvError): string {
  const at = [where, ...e.instancePath.split('/').filter(Boolean)].join('.');
  if (e.keyword === 'additionalProperties')
    return `${at} has an unknown field "${String(e.params.additionalProperty)}"`;
  if (e.keyword === 'required')
    return `${at} is missing the required field "${String(e.params.missingProperty)}"`;
  return `${at} ${e.message ?? 'is invalid'}`;
}

function validationBody(err: FastifyError): ErrorBody {
  const where = err.validationContext ?? 'request';
  // Unions report every branch; the branch errors come first and say the most.
  const errors = (err.validation ?? []) as AjvError[];
  const messages = [
    ...new Set(
      errors.filter((e) => e.keyword !== 'anyOf').map((e) => describeValidation(where, e)),
    ),
  ];
  if (messages.length === 0) return { code: 'invalid_argument', message: err.message };
  const first = errors[0]!;
  const field = [where, ...first.instancePath.split('/').filter(Boolean)].join('.');
  return {
    code: 'invalid_argument',
    message: messages.slice(0, 3).join('; '),
    details: messages.map((message) => ({ code: 'invalid_field', message })),
    context: { field },
  };
}

/** Turn any thrown error into `{code, message}` with the right status. */
export function toHttpError(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof VesselError) {
    const cause = err.cause instanceof VesselError ? err.cause : undefined;
    return {
      status: STATUS_BY_KIND[err.kind],
      body: {
        code: err.code,
        message: err.message,
        ...(cause ? { inner_error: { code: cause.code, message: cause.message } } : {}),
        ...(err.details ? { context: err.details } : {}),
      },
    };
  }
  if (isFastifyError(err)) {
    if (err.validation) return { status: 400, body: validationBody(err) };
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      // Fastify's own client errors: bad JSON, unsupported media type, body too large, ...
      return {
        status,
        body: { code: status === 404 ? 'not_found' : 'invalid_argument', message: err.message },
      };
    }
  }
  if (isNoSpace(err)) {
    // A full disk reached the edge unclassified (a store write, say): still say so.
    return {
      status: STATUS_BY_KIND.ResourceExhausted,
      body: {
        code: 'disk_full',
        message: `the data directory ran out of space: ${errorMessage(err)}`,
      },
    };
  }
  return { status: 500, body: { code: 'internal', message: 'internal error; see the daemon log' } };
}

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = toHttpError(err);
  if (status >= 500) request.log.error({ err }, 'request failed');
  else request.log.debug({ code: body.code, message: body.message }, 'request rejected');
  void reply.status(status).send(body);
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): void {
  void reply.status(404).send({
    code: 'not_found',
    message: `no route for ${request.method} ${request.url.split('?')[0]}`,
  });
}

/**
 * An error response written straight to a socket that has no reply object to send it with
 * (a HEAD request gets the headers only).
 */
function writeRawError(
  socket: Duplex,
  status: number,
  message: string,
  options: { headers?: string; head?: boolean } = {},
): void {
  const json = JSON.stringify({ code: 'invalid_argument', message });
  const body = options.head ? '' : json;
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(json)}\r\n` +
        `Content-Type: application/json\r\nConnection: close\r\n${options.headers ?? ''}\r\n${body}`,
    );
  }
}

/**
 * What Node's HTTP parser refuses before there is a request to route (a malformed request
 * line or header, headers over the size limit, a request that never finished arriving):
 * answered on the raw socket with the same `{code, message}` body as every other error.
 * Fastify's default handler writes its own `{error, message, statusCode}` shape instead.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT')
    writeRawError(socket, 408, 'the request did not arrive in time');
  else if (err.code === 'HPE_HEADER_OVERFLOW')
    writeRawError(socket, 431, 'the request line and headers are larger than the server accepts');
  else writeRawError(socket, 400, `malformed HTTP request (${err.code ?? 'parse error'})`);
  socket.destroy(err);
}

/**
 * A request with an `Upgrade` header that is not a valid WebSocket handshake (bad key or
 * version, `Upgrade: h2c`, ...), refused by `ws` after routing and auth: the API's error body
 * rather than ws's text/html one. Only GET routes (and their HEAD) get here: always a 400.
 */
export function upgradeErrorHandler(err: Error, socket: Duplex, request: IncomingMessage): void {
  writeRawError(socket, 400, `invalid WebSocket handshake: ${err.message}`, {
    headers: 'Sec-WebSocket-Version: 13, 8\r\n',
    head: request.method === 'HEAD',
  });
  socket.destroy();
}
