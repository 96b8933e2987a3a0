import { ERROR_CODES, isVesselError, type ErrorCode, type ErrorKind } from '../core/errors.js';

/**
 * Exit codes scripts can rely on (also in the README):
 * 0 success · 1 failure · 2 invalid arguments or input · 3 daemon unreachable
 * or unavailable · 4 not found · 5 conflict or wrong state.
 */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  unavailable: 3,
  notFound: 4,
  conflict: 5,
} as const;

export function exitCodeForKind(kind: ErrorKind): number {
  switch (kind) {
    case 'InvalidArgument':
      return EXIT.usage;
    case 'Unavailable':
      return EXIT.unavailable;
    case 'NotFound':
      return EXIT.notFound;
    case 'AlreadyExists':
    case 'Conflict':
    case 'FailedPrecondition':
      return EXIT.conflict;
    case 'Unauthenticated':
    case 'ResourceExhausted':
    case 'Internal':
      return EXIT.failure;
  }
}

export function exitCodeFor(err: unknown): number {
  return isVesselError(err) ? exitCodeForKind(err.kind) : EXIT.failure;
}

/** Exit code for an image that failed with the stored error code. */
export function exitCodeForImageError(code: string | null): number {
  return code && Object.hasOwn(ERROR_CODES, code)
    ? exitCodeForKind(ERROR_CODES[code as ErrorCode].kind)
    : EXIT.failure;
}
