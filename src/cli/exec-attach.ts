import os from 'node:os';
import { finished } from 'node:stream/promises';
import type {
  ExecStream,
  ExecStreamExit,
  ExecStreamRequest,
  VesselClient,
} from '../client/index.js';
import { isVesselError } from '../core/errors.js';
import { shellExitCode } from '../core/exec-stream.js';

export interface AttachFlags {
  /** `-i`: stream this process's stdin to the command. */
  readonly interactive: boolean;
  /** `-t`: a pty in the guest; raw mode here when stdin is a terminal too. */
  readonly tty: boolean;
}

type Command = Pick<ExecStreamRequest, 'argv' | 'env' | 'cwd' | 'user'>;

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * `vessel exec -i/-t`: attach this terminal to a command in an instance over
 * the exec WebSocket. Resolves with the exit code a shell would report
 * (the command's code, or 128 + its signal).
 *
 * Signals: the first SIGINT/SIGTERM/SIGHUP is forwarded to the command; a
 * second one detaches (the daemon kills the command) and exits 128 + n.
 * The local terminal leaves raw mode on every path out.
 */
export async function execAttached(
  client: VesselClient,
  id: string,
  command: Command,
  flags: AttachFlags,
): Promise<number> {
  const stream = await client.execStream(id, {
    ...command,
    tty: flags.tty,
    stdin: flags.interactive,
    ...terminalSize(flags),
  });
  const end = await pipeTerminal(stream, flags);
  return 'detachedBy' in end ? 128 + end.detachedBy : shellExitCode(end);
}

function terminalSize(flags: AttachFlags): { rows: number; cols: number } | undefined {
  const stdout = process.stdout;
  return flags.tty && stdout.isTTY && stdout.rows > 0 && stdout.columns > 0
    ? { rows: stdout.rows, cols: stdout.columns }
    : undefined;
}

/**
 * Join this terminal to an exec or attach stream: output to stdout/stderr
 * byte for byte, stdin with `-i` (raw mode with `-t` on a terminal), window
 * size with `-t`, the first SIGINT/SIGTERM/SIGHUP forwarded and a second one
 * detaching. Resolves with how the command ended, or the signal that detached.
 */
export async function pipeTerminal(
  stream: ExecStream,
  flags: AttachFlags,
): Promise<ExecStreamExit | { detachedBy: number }> {
  const stdin = process.stdin;
  const stdout = process.stdout;
  const size = (): { rows: number; cols: number } | undefined => terminalSize(flags);
  const raw = flags.tty && flags.interactive && stdin.isTTY;
  const restore = (): void => {
    if (raw && stdin.isTTY) stdin.setRawMode(false);
  };
  let detachedBy: number | undefined;
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const name of FORWARDED) {
    const signo = os.constants.signals[name];
    let seen = false;
    const handler = (): void => {
      if (!seen) {
        seen = true;
        stream.signal(signo);
        return;
      }
      detachedBy = signo;
      restore();
      stream.close();
    };
    handlers.set(name, handler);
    process.on(name, handler);
  }
  const onWinch = (): void => {
    const s = size();
    if (s) stream.resize(s.rows, s.cols);
  };
  if (flags.tty) process.on('SIGWINCH', onWinch);
  process.once('exit', restore);

  // A reader that went away (`| head`) ends the session as SIGPIPE would end a writer.
  const onOutputError = (err: NodeJS.ErrnoException): void => {
    if (err.code !== 'EPIPE') return;
    detachedBy = os.constants.signals.SIGPIPE;
    restore();
    stream.close();
  };
  stdout.on('error', onOutputError);
  process.stderr.on('error', onOutputError);
  stream.stdout.pipe(stdout, { end: false });
  stream.stderr.pipe(process.stderr, { end: false });
  if (flags.interactive) {
    if (raw) stdin.setRawMode(true);
    stdin.pipe(stream.stdin);
  }
  if (flags.tty) onWinch(); // an attach learns the size only now
  try {
    const [status] = await Promise.all([
      stream.result,
      finished(stream.stdout),
      finished(stream.stderr),
    ]);
    return status;
  } catch (err) {
    if (detachedBy !== undefined && isVesselError(err, 'daemon_unreachable')) return { detachedBy };
    throw err;
  } finally {
    restore();
    process.off('exit', restore);
    process.off('SIGWINCH', onWinch);
    stdout.off('error', onOutputError);
    process.stderr.off('error', onOutputError);
    for (const [name, handler] of handlers) process.off(name, handler);
    if (flags.interactive) {
      stdin.unpipe(stream.stdin);
      stdin.destroy();
    }
    stream.close();
  }
}
