import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { VesselError, type ErrorKind } from '../core/errors.js';

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

export interface ErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

function isFastifyError(err: unknown): err is FastifyError {
  return err instanceof Error && 'statusCode' in err;
}

/** Turn any thrown error into `{code, message}` with the right status. */
export function toHttpError(err: unknown): { status: number; body: ErrorBody } {
  if (err instanceof VesselError) {
    return {
      status: STATUS_BY_KIND[err.kind],
      body: {
        code: err.code,
        message: err.message,
        ...(err.details ? { details: err.details } : {}),
      },
    };
  }
  if (isFastifyError(err)) {
    if (err.validation) {
      return { status: 400, body: { code: 'invalid_argument', message: err.message } };
    }
    const status = err.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      // Fastify's own client errors: bad JSON, unsupported media type, body too large, ...
      return {
        status,
        body: { code: status === 404 ? 'not_found' : 'invalid_argument', message: err.message },
      };
    }
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
