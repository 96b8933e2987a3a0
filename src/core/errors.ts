/**
 * The one error type of Vessel.
 *
 * Every error that crosses a subsystem boundary is a {@link VesselError} with
 * a stable `code` from {@link ERROR_CODES}. The code fixes the `kind` (a small
 * closed set, after containerd's errdefs); only the API edge turns a kind into
 * an HTTP status. Foreign errors are wrapped, never string-matched: the
 * original goes into `cause`.
 */

/** The closed set of error kinds. */
export type ErrorKind =
  | 'NotFound'
  | 'AlreadyExists'
  | 'InvalidArgument'
  | 'FailedPrecondition'
  | 'Conflict'
  | 'Unavailable'
  | 'Unauthenticated'
  | 'ResourceExhausted'
  | 'Internal';

interface CodeSpec {
  readonly kind: ErrorKind;
  readonly description: string;
}

/**
 * Registry of every error code Vessel emits. `docs/errors.md` documents the
 * same list; a unit test fails when the two disagree.
 */
export const ERROR_CODES = {
  invalid_argument: {
    kind: 'InvalidArgument',
    description: 'A request field or argument is malformed.',
  },
  invalid_reference: {
    kind: 'InvalidArgument',
    description: 'An image reference cannot be parsed.',
  },
  invalid_config: {
    kind: 'InvalidArgument',
    description: 'The configuration file, environment or flags are invalid.',
  },
  not_found: { kind: 'NotFound', description: 'The addressed resource does not exist.' },
  image_not_found: { kind: 'NotFound', description: 'The image is not in the local store.' },
  manifest_unknown: {
    kind: 'NotFound',
    description: 'The registry has no manifest for the reference.',
  },
  platform_not_found: {
    kind: 'NotFound',
    description: 'The image index has no manifest for the host platform.',
  },
  already_exists: {
    kind: 'AlreadyExists',
    description: 'A resource with that name already exists.',
  },
  image_in_use: {
    kind: 'FailedPrecondition',
    description: 'The image is still pulling or referenced.',
  },
  kernel_in_use: {
    kind: 'Conflict',
    description: 'The kernel version is used by an instance and cannot be removed.',
  },
  image_not_ready: {
    kind: 'FailedPrecondition',
    description: 'The image exists but is not ready.',
  },
  image_failed: {
    kind: 'FailedPrecondition',
    description: 'Pulling or converting the image failed; the message holds the cause.',
  },
  build_failed: {
    kind: 'FailedPrecondition',
    description: 'A build step failed (a RUN exited non-zero); the message holds its output.',
  },
  cancelled: { kind: 'Conflict', description: 'The operation was cancelled before it finished.' },
  daemon_running: {
    kind: 'Conflict',
    description: 'Another daemon already owns the data directory.',
  },
  conflict: { kind: 'Conflict', description: 'The request conflicts with the current state.' },
  port_in_use: {
    kind: 'Conflict',
    description: 'A host port to publish is already in use on the host.',
  },
  unauthorized: { kind: 'Unauthenticated', description: 'A bearer token is missing or wrong.' },
  registry_unauthorized: {
    kind: 'Unauthenticated',
    description: 'The registry refused the credentials.',
  },
  registry_unavailable: {
    kind: 'Unavailable',
    description: 'The registry could not be reached or answered with a server error.',
  },
  registry_protocol: {
    kind: 'Internal',
    description: 'The registry answered something the distribution spec does not allow.',
  },
  unsupported_field: {
    kind: 'InvalidArgument',
    description:
      'The request sets a field this daemon cannot honour (a hypeman API feature Vessel lacks); the message names it.',
  },
  unsupported_media_type: {
    kind: 'InvalidArgument',
    description: 'A manifest or layer has a media type Vessel does not handle.',
  },
  digest_mismatch: {
    kind: 'InvalidArgument',
    description: 'Content did not match its declared digest.',
  },
  unsafe_layer: {
    kind: 'InvalidArgument',
    description: 'A layer entry would write outside the root filesystem or is malformed.',
  },
  layer_too_large: {
    kind: 'ResourceExhausted',
    description: 'A layer unpacks to more bytes than allowed (decompression bomb guard).',
  },
  disk_full: { kind: 'ResourceExhausted', description: 'The data directory ran out of space.' },
  output_too_large: {
    kind: 'ResourceExhausted',
    description: 'A JSON exec result would exceed its size cap; use the byte stream form.',
  },
  volume_in_use: {
    kind: 'Conflict',
    description:
      'The volume is attached (delete), or attached in a way the new attachment cannot share.',
  },
  volume_too_small: {
    kind: 'InvalidArgument',
    description: "An archive's content does not fit in the volume's size_gb.",
  },
  invalid_archive: {
    kind: 'InvalidArgument',
    description:
      'A volume archive is not a tar, tar.gz or tar.zst, or has an entry escaping the volume.',
  },
  network_unavailable: {
    kind: 'FailedPrecondition',
    description: 'Bridge networking was asked for; this host cannot make TAP devices.',
  },
  network_exhausted: {
    kind: 'ResourceExhausted',
    description: 'Every guest address of the bridge subnet is taken.',
  },
  too_many_sessions: {
    kind: 'ResourceExhausted',
    description: 'A VM already keeps the most sessions its agent allows (128); remove ended ones.',
  },
  too_many_streams: {
    kind: 'ResourceExhausted',
    description:
      'A VM already has the most concurrent execs, copies and stats its agent link allows.',
  },
  tool_missing: {
    kind: 'FailedPrecondition',
    description: 'A host tool Vessel needs is not installed.',
  },
  tool_failed: {
    kind: 'Internal',
    description: 'A host tool (mkfs.erofs, mkfs.ext4, ...) exited with an error.',
  },
  daemon_unreachable: {
    kind: 'Unavailable',
    description: 'The CLI could not reach or start the daemon.',
  },
  timeout: { kind: 'Unavailable', description: 'An operation did not finish in time.' },
  internal: {
    kind: 'Internal',
    description: 'An unexpected failure; the message and logs hold the cause.',
  },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface VesselErrorOptions {
  readonly cause?: unknown;
  readonly details?: Record<string, unknown>;
}

export class VesselError extends Error {
  readonly code: ErrorCode;
  readonly kind: ErrorKind;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: VesselErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VesselError';
    this.code = code;
    this.kind = ERROR_CODES[code].kind;
    this.details = options.details;
  }
}

export function isVesselError(err: unknown, code?: ErrorCode): err is VesselError {
  return err instanceof VesselError && (code === undefined || err.code === code);
}

/** Node system errors carry a string `code` such as `ENOENT`. */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = err.code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Wrap any error as a VesselError. VesselErrors pass through unchanged;
 * no space (ENOSPC, EDQUOT, SQLITE_FULL) becomes `disk_full`; anything else becomes `code` (default internal)
 * with the given context prefixed.
 */
export function toVesselError(
  err: unknown,
  context: string,
  code: ErrorCode = 'internal',
): VesselError {
  if (err instanceof VesselError) return err;
  if (isNoSpace(err)) {
    return new VesselError('disk_full', `${context}: no space left on device`, { cause: err });
  }
  return new VesselError(code, `${context}: ${errorMessage(err)}`, { cause: err });
}

/** A foreign error that means the filesystem is full: ENOSPC, EDQUOT, or SQLite's SQLITE_FULL. */
export function isNoSpace(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}
