import { VesselError, type ErrorCode, type VesselErrorOptions } from '../core/errors.js';

/**
 * The error codes the vmm subsystem uses, in one place. `failed`: the VMM
 * refused or failed an operation; `notFound`: a device it was asked about does
 * not exist; `state`: the VM is in the wrong state for it; `unavailable`: its control socket is gone or
 * did not come up; `gone`: the VM process has exited; `timeout`: a deadline
 * passed.
 */
const CODES = {
  failed: 'internal',
  notFound: 'not_found',
  state: 'conflict',
  unavailable: 'internal',
  gone: 'conflict',
  timeout: 'timeout',
  spawn: 'tool_failed',
} as const satisfies Record<string, ErrorCode>;

export type VmmErrorReason = keyof typeof CODES;

export function vmmError(
  reason: VmmErrorReason,
  message: string,
  options: VesselErrorOptions = {},
): VesselError {
  return new VesselError(CODES[reason], message, {
    ...options,
    details: { vmmReason: reason, ...options.details },
  });
}
