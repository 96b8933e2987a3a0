import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import type { ExecStream, VesselClient } from '../../../src/client/index.js';
import { VesselError } from '../../../src/core/errors.js';
import { shellExitCode } from '../../../src/core/exec-stream.js';

/** Bytes for a command's stdin. */
export type StdinSource = string | Uint8Array | Readable | AsyncIterable<Uint8Array>;

export interface CommandOptions {
  /** Working directory in the guest (default: the image's). */
  readonly cwd?: string;
  /** Added to (and overriding) the sandbox's environment. */
  readonly env?: Readonly<Record<string, string>>;
  /** `uid[:gid]` or a user name (default: the image's user). */
  readonly user?: string;
  /** Kill the command (SIGKILL to its process group) after this many ms; 0 or absent: never. */
  readonly timeoutMs?: number;
}

export interface StartOptions extends CommandOptions {
  /** `true`: write to `handle.stdin` yourself; bytes or a stream: sent, then EOF. Default: EOF. */
  readonly stdin?: true | StdinSource;
  /** Run under a pseudo-terminal of `rows` × `cols` (stdout and stderr merge). */
  readonly tty?: { readonly rows: number; readonly cols: number };
}

export interface RunOptions extends CommandOptions {
  /** Sent to the command's stdin, then EOF (default: EOF at once). */
  readonly stdin?: StdinSource;
  /** Called with stdout as it arrives, decoded as UTF-8 (a character split across chunks stays whole). */
  readonly onStdout?: (text: string) => void;
  readonly onStderr?: (text: string) => void;
}

/** How a command ended: `exitCode` is the shell's (`128 + n` for a death by signal n). */
export interface CommandExit {
  readonly exitCode: number;
  readonly signal: number | null;
}

/** A finished command: the exact output bytes, and the same as text. */
export class CommandResult implements CommandExit {
  constructor(
    readonly exitCode: number,
    readonly signal: number | null,
    /** stdout, byte for byte. */
    readonly stdoutBytes: Buffer,
    /** stderr, byte for byte. */
    readonly stderrBytes: Buffer,
  ) {}

  /** stdout decoded as UTF-8 (invalid bytes become U+FFFD; use `stdoutBytes` for binary). */
  get stdout(): string {
    return this.stdoutBytes.toString('utf8');
  }

  get stderr(): string {
    return this.stderrBytes.toString('utf8');
  }
}

/**
 * A command running in a sandbox. `stdout` and `stderr` are byte streams (async iterables of
 * Buffers): read them, or the command stalls once about 16 KiB wait unread (backpressure
 * reaches the guest), and `wait()` with it.
 */
export class CommandHandle {
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** The command's stdin when started with `stdin: true`; `end()` sends EOF. */
  readonly stdin: Writable;
  private readonly exit: Promise<CommandExit>;
  private readonly stream: ExecStream;

  /** @internal Made by {@link Commands.start}. */
  constructor(stream: ExecStream, what: string, timeoutMs: number | undefined) {
    this.stream = stream;
    this.stdout = stream.stdout;
    this.stderr = stream.stderr;
    this.stdin = stream.stdin;
    this.exit = withTimeout(stream, what, timeoutMs).then((s) => ({
      exitCode: shellExitCode(s),
      signal: s.signal,
    }));
    this.exit.catch(() => undefined); // a caller that only disconnects need not await it
  }

  /** Resolves when the command exits; rejects with a `VesselError` (e.g. `not_found` program, `timeout`). */
  wait(): Promise<CommandExit> {
    return this.exit;
  }

  /** Send a signal (default SIGKILL, 9) to the command. */
  kill(signal = 9): void {
    this.stream.signal(signal);
  }

  /** Resize the pseudo-terminal of a `tty` command. */
  resize(rows: number, cols: number): void {
    this.stream.resize(rows, cols);
  }

  /** Close the connection; the daemon kills the command. */
  disconnect(): void {
    this.stream.close();
  }
}

function withTimeout(
  stream: ExecStream,
  what: string,
  timeoutMs: number | undefined,
): Promise<{ code: number | null; signal: number | null }> {
  if (!timeoutMs) return stream.result;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stream.close();
      reject(new VesselError('timeout', `${what} did not finish within ${timeoutMs} ms; killed`));
    }, timeoutMs);
    stream.result.then(
      (s) => (clearTimeout(timer), resolve(s)),
      (err: unknown) => (clearTimeout(timer), reject(err as Error)),
    );
  });
}

/** The argv of a command: a string runs under `/bin/sh -c`, an array as is. */
export function commandArgv(cmd: string | readonly string[]): string[] {
  if (typeof cmd === 'string') return ['/bin/sh', '-c', cmd];
  if (cmd.length === 0) throw new VesselError('invalid_argument', 'a command needs an argv[0]');
  return [...cmd];
}

async function collect(s: Readable, on: ((text: string) => void) | undefined): Promise<Buffer> {
  const parts: Buffer[] = [];
  const decoder = on ? new StringDecoder('utf8') : undefined;
  for await (const chunk of s as AsyncIterable<Buffer>) {
    parts.push(chunk);
    const text = decoder?.write(chunk);
    if (text) on?.(text);
  }
  const rest = decoder?.end();
  if (rest) on?.(rest);
  return Buffer.concat(parts);
}

async function feed(stdin: Writable, source: StdinSource): Promise<void> {
  if (typeof source === 'string' || source instanceof Uint8Array) {
    stdin.end(Buffer.from(source));
    return;
  }
  await pipeline(source instanceof Readable ? source : Readable.from(source), stdin);
}

/** `sandbox.commands`: run commands in the sandbox over the exec WebSocket (bytes exact). */
export class Commands {
  /** @internal */
  constructor(
    private readonly api: VesselClient,
    private readonly instance: () => string,
  ) {}

  /** Start a command and return at once with its streams; see {@link CommandHandle}. */
  async start(cmd: string | readonly string[], options: StartOptions = {}): Promise<CommandHandle> {
    const argv = commandArgv(cmd);
    const env = options.env && Object.entries(options.env).map(([k, v]) => `${k}=${v}`);
    const source = options.stdin;
    const stream = await this.api.execStream(this.instance(), {
      argv,
      ...(env === undefined ? {} : { env }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      ...(options.user === undefined ? {} : { user: options.user }),
      ...(options.tty ? { tty: true, rows: options.tty.rows, cols: options.tty.cols } : {}),
      ...(source === undefined ? {} : { stdin: true }),
    });
    const handle = new CommandHandle(
      stream,
      `command ${JSON.stringify(argv[0])}`,
      options.timeoutMs,
    );
    if (source !== undefined && source !== true) {
      // A command that exits before reading everything closes its stdin: not an error here.
      feed(stream.stdin, source).catch(() => undefined);
    }
    return handle;
  }

  /**
   * Run a command to the end and collect its output. A non-zero exit is a result, not an
   * error; errors are the daemon's (`not_found` program, `conflict` when not Running, `timeout`).
   */
  async run(cmd: string | readonly string[], options: RunOptions = {}): Promise<CommandResult> {
    const { onStdout, onStderr, ...start } = options;
    const handle = await this.start(cmd, start);
    const [stdout, stderr, exit] = await Promise.all([
      collect(handle.stdout, onStdout),
      collect(handle.stderr, onStderr),
      handle.wait(),
    ]);
    return new CommandResult(exit.exitCode, exit.signal, stdout, stderr);
  }
}
