/**
 * The CLI's side of byte-exact stdio: guest bytes go to this process's
 * stdout and stderr untouched and at the pace those accept them; Vessel's
 * own messages go to stderr only, never mixed into the guest's stdout.
 */
import type { Writable } from 'node:stream';
import type { Instance, VesselClient } from '../client/index.js';
import { isVesselError } from '../core/errors.js';

/** Raised when stdout's reader went away (EPIPE), as SIGPIPE would end a C program. */
export class ReaderGone extends Error {
  constructor() {
    super('the reader of the output went away');
  }
}

/**
 * Write `data` to `out`; resolves once it can take more. Rejects with
 * ReaderGone when the other end of a pipe closed.
 */
export function writeOut(out: Writable, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    if (out.destroyed) return reject(new ReaderGone());
    const onError = (err: NodeJS.ErrnoException): void => {
      out.off('drain', onDrain);
      reject(err.code === 'EPIPE' ? new ReaderGone() : err);
    };
    const onDrain = (): void => {
      out.off('error', onError);
      resolve();
    };
    out.once('error', onError);
    if (out.write(data)) {
      out.off('error', onError);
      resolve();
    } else out.once('drain', onDrain);
  });
}

/** SIGPIPE's exit status: what a shell reports for a writer whose reader left. */
export const EXIT_PIPE = 128 + 13;

/**
 * The exit code for a command that could not start, when the guest said
 * (127 not found, 126 cannot execute); undefined for other errors.
 */
export function startFailureCode(err: unknown): number | undefined {
  if (!isVesselError(err)) return undefined;
  const code = err.details?.exit_code;
  return code === 126 || code === 127 ? code : undefined;
}

/**
 * A boot that failed: the reason and the end of the serial console (kernel
 * and vessel-init messages) on stderr.
 */
export async function reportBootFailure(client: VesselClient, inst: Instance): Promise<void> {
  process.stderr.write(
    `error: ${inst.name}: ${inst.state_error ?? `the instance is ${inst.state}`}\n`,
  );
  try {
    const lines: Buffer[] = [];
    for await (const c of client.instanceLogBytes(inst.id, { source: 'console', tail: 20 }))
      if (c.type !== 'state') lines.push(c.data);
    const tail = Buffer.concat(lines);
    if (tail.length > 0) {
      process.stderr.write(
        `--- last lines of the console (vessel logs --source console ${inst.name}) ---\n`,
      );
      process.stderr.write(tail);
      if (tail.at(-1) !== 0x0a) process.stderr.write('\n');
    }
  } catch {
    // the reason above is what matters
  }
}
