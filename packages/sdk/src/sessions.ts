import type { Readable } from 'node:stream';
import type { Session, VesselClient } from '../../../src/client/index.js';
import type { SessionStream } from '../../../src/client/exec-stream.js';
import { commandArgv } from './commands.js';

export interface SessionStartOptions {
  /** Unique in the sandbox (default: s1, s2, …). */
  readonly name?: string;
  readonly cwd?: string;
  /** Added to (and overriding) the sandbox's environment. */
  readonly env?: Readonly<Record<string, string>>;
  readonly user?: string;
  /** Run under a pseudo-terminal of `rows` × `cols`. */
  readonly tty?: { readonly rows: number; readonly cols: number };
  /** Output kept in the guest, in bytes (4 KiB to 64 MiB; default 1 MiB). */
  readonly bufferBytes?: number;
  /** `single` (default): the first attacher asking for input holds it; `shared`: all do. */
  readonly input?: 'single' | 'shared';
}

export interface SessionAttachOptions {
  /** Output offset to start at (default: everything kept). */
  readonly from?: number;
  /** Ask for input: write to `stdin`, resize, signal (default true). */
  readonly input?: boolean;
  /** Keep streaming live output (default true). */
  readonly follow?: boolean;
}

/**
 * Commands that outlive the client that started them (a dev server, an agent, a REPL):
 * the guest keeps their output, clients attach and detach (`stream.close()`) at will, and
 * the exit code stays until the session is removed.
 */
export class Sessions {
  /** @internal */
  constructor(
    private readonly api: VesselClient,
    private readonly instance: () => string,
  ) {}

  start(cmd: string | readonly string[], options: SessionStartOptions = {}): Promise<Session> {
    const env = options.env && Object.entries(options.env).map(([k, v]) => `${k}=${v}`);
    return this.api.startSession(this.instance(), {
      command: commandArgv(cmd),
      ...(options.name === undefined ? {} : { name: options.name }),
      ...(env === undefined ? {} : { env }),
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
      ...(options.user === undefined ? {} : { user: options.user }),
      ...(options.tty ? { tty: true, rows: options.tty.rows, cols: options.tty.cols } : {}),
      ...(options.bufferBytes === undefined ? {} : { buffer_bytes: options.bufferBytes }),
      ...(options.input === undefined ? {} : { input: options.input }),
    });
  }

  list(): Promise<Session[]> {
    return this.api.listSessions(this.instance());
  }

  get(name: string): Promise<Session> {
    return this.api.getSession(this.instance(), name);
  }

  /** The kept output, then live output; `stream.attached` says where it starts. */
  attach(name: string, options: SessionAttachOptions = {}): Promise<SessionStream> {
    return this.api.attachSession(this.instance(), name, {
      input: options.input ?? true,
      ...(options.from === undefined ? {} : { from: options.from }),
      ...(options.follow === undefined ? {} : { follow: options.follow }),
    });
  }

  /** The kept output as bytes (stdout and stderr in arrival order); `follow` until it ends. */
  logs(name: string, options: { from?: number; follow?: boolean } = {}): Promise<Readable> {
    return this.api.sessionLogs(this.instance(), name, options);
  }

  /** Signal its process group (default SIGTERM). */
  kill(name: string, signal = 15): Promise<Session> {
    return this.api.signalSession(this.instance(), name, signal);
  }

  /** Forget an ended session; `force` kills a running one first. */
  remove(name: string, options: { force?: boolean } = {}): Promise<void> {
    return this.api.deleteSession(this.instance(), name, options);
  }
}
