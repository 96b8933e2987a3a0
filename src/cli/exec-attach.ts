import os from 'node:os';
import { Transform } from 'node:stream';
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
  if ('detached' in end) return 0;
  return 'detachedBy' in end ? 128 + end.detachedBy : shellExitCode(end);
}

function terminalSize(flags: AttachFlags): { rows: number; cols: number } | undefined {
  const stdout = process.stdout;
  return flags.tty && stdout.isTTY && stdout.rows > 0 && stdout.columns > 0
    ? { rows: stdout.rows, cols: stdout.columns }
    : undefined;
}

export interface PipeOptions {
  /** Typed on stdin, these bytes detach instead of reaching the command (ctrl-p ctrl-q). */
  readonly detachKeys?: Buffer;
  /** `forward` (default): the first SIGINT/SIGTERM/SIGHUP goes to the command; `detach`: none do. */
  readonly signals?: 'forward' | 'detach';
}

/** `ctrl-p,ctrl-q` (docker's notation) → the bytes 0x10 0x11; `ctrl-@`..`ctrl-_` and plain characters. */
export function parseDetachKeys(spec: string): Buffer {
  const out: number[] = [];
  for (const key of spec.split(',')) {
    const k = key.trim().toLowerCase();
    const ctrl = /^ctrl-(.)$/.exec(k);
    if (ctrl) {
      const c = ctrl[1]!.toUpperCase().charCodeAt(0);
      if (c < 0x40 || c > 0x5f)
        throw new Error(`"${key}" is not a control key (ctrl-a … ctrl-z, ctrl-@, ctrl-[ …)`);
      out.push(c - 0x40);
    } else if (k.length === 1) out.push(k.charCodeAt(0));
    else throw new Error(`"${key}" is not a key (a letter, or ctrl-<letter>)`);
  }
  if (out.length === 0) throw new Error('no detach keys given');
  return Buffer.from(out);
}

/**
 * Passes stdin through, except the detach sequence: a partial match is held back until
 * it completes (then `onDetach`) or breaks (then it is sent as typed).
 */
export function detachFilter(keys: Buffer, onDetach: () => void): Transform {
  let matched = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      const out: number[] = [];
      for (const b of chunk) {
        if (b === keys[matched]) {
          matched++;
          if (matched === keys.length) {
            matched = 0;
            if (out.length > 0) this.push(Buffer.from(out));
            onDetach();
            return cb();
          }
          continue;
        }
        for (let i = 0; i < matched; i++) out.push(keys[i]!);
        matched = b === keys[0] ? 1 : 0;
        if (matched === 0) out.push(b);
      }
      cb(null, out.length > 0 ? Buffer.from(out) : undefined);
    },
    flush(cb) {
      // Input ended in the middle of the sequence: it was typed, not a detach.
      cb(null, matched > 0 ? keys.subarray(0, matched) : undefined);
    },
  });
}

/**
 * Join this terminal to an exec or attach stream: output to stdout/stderr
 * byte for byte, stdin with `-i` (raw mode with `-t` on a terminal), window
 * size with `-t`, the first SIGINT/SIGTERM/SIGHUP forwarded and a second one
 * detaching (with `signals: 'detach'` the first detaches). Resolves with how
 * the command ended, the signal that detached, or `detached` after the detach keys.
 */
export async function pipeTerminal(
  stream: ExecStream,
  flags: AttachFlags,
  options: PipeOptions = {},
): Promise<ExecStreamExit | { detachedBy: number } | { detached: true }> {
  const stdin = process.stdin;
  const stdout = process.stdout;
  const size = (): { rows: number; cols: number } | undefined => terminalSize(flags);
  const raw = flags.tty && flags.interactive && stdin.isTTY;
  const restore = (): void => {
    if (raw && stdin.isTTY) stdin.setRawMode(false);
  };
  let detachedBy: number | undefined;
  let detachedByKeys = false;
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const name of FORWARDED) {
    const signo = os.constants.signals[name];
    let seen = options.signals === 'detach';
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
  const filter = options.detachKeys
    ? detachFilter(options.detachKeys, () => {
        detachedByKeys = true;
        restore();
        stream.close();
      })
    : undefined;
  if (flags.interactive) {
    if (raw) stdin.setRawMode(true);
    if (filter) stdin.pipe(filter).pipe(stream.stdin);
    else stdin.pipe(stream.stdin);
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
    if (isVesselError(err, 'daemon_unreachable')) {
      if (detachedByKeys) return { detached: true };
      if (detachedBy !== undefined) return { detachedBy };
    }
    throw err;
  } finally {
    restore();
    process.off('exit', restore);
    process.off('SIGWINCH', onWinch);
    stdout.off('error', onOutputError);
    process.stderr.off('error', onOutputError);
    for (const [name, handler] of handlers) process.off(name, handler);
    if (flags.interactive) {
      if (filter) {
        stdin.unpipe(filter);
        filter.unpipe(stream.stdin);
      } else stdin.unpipe(stream.stdin);
      stdin.destroy();
    }
    stream.close();
  }
}
