import { Readable, Writable, type Duplex } from 'node:stream';
import { VesselError, errorMessage } from '../core/errors.js';
import type { SessionAttachedMessage } from '../core/exec-stream.js';
import {
  FrameDecoder,
  FrameType,
  MAIN_STREAM,
  MAX_PAYLOAD,
  encodeFrame,
  type Frame,
} from './frame.js';

/**
 * Output flow-control window of one exec stream (PROTOCOL.md §4, WINDOW): the
 * guest sends at most this many bytes (plus one piece) beyond what the
 * consumer of the stream has read, so a slow reader slows the command down
 * instead of filling the daemon's memory.
 */
export const EXEC_WINDOW = 256 * 1024;
/** The main command's window (the config disk's `stdio.window`). */
export const MAIN_WINDOW = 256 * 1024;
/** Stdin goes out in pieces this size, each within the window. */
const STDIN_PIECE = 64 * 1024;
/**
 * Flow-control window of a COPY_IN / COPY_OUT stream: about this much of a copy sits
 * in the daemon (and in the guest) whatever its size. Larger than EXEC_WINDOW:
 * copies are bulk transfers, and the window bounds throughput at one round trip.
 */
export const COPY_WINDOW = 1024 * 1024;
/**
 * Concurrent streams (execs, copies, stats, lists) per control connection. Each holds up to
 * a window of buffered output, so this bounds the daemon's memory per VM; the excess is
 * refused with `too_many_streams` rather than queued.
 */
export const MAX_STREAMS = 1024;
/** Bytes of JSON lines a session request may answer with. */
const MAX_LISTING = 4 * 1024 * 1024;
/** COPY_IN DATA pieces (each within the window). */
const COPY_PIECE = 256 * 1024;

export interface ExecRequest {
  readonly argv: readonly string[];
  readonly env?: readonly string[];
  readonly cwd?: string;
  readonly user?: string;
  readonly tty?: boolean;
  readonly rows?: number;
  readonly cols?: number;
  /** Whether the caller will send stdin (else the child's stdin is closed at once). */
  readonly stdin?: boolean;
}

export interface ExitStatus {
  readonly code: number | null;
  readonly signal: number | null;
  /** Why the main command could not start (its code is then 127 or 126). */
  readonly message?: string;
}

/** Receives the main command's stream (exec mode); called synchronously, in order. */
export interface MainStreamHandler {
  output(kind: 'stdout' | 'stderr', data: Buffer): void;
  exit(status: ExitStatus): void;
}

export interface PathInfo {
  readonly exists: boolean;
  readonly is_dir?: boolean;
  readonly is_file?: boolean;
  readonly is_symlink?: boolean;
  readonly link_target?: string | null;
  readonly mode?: number;
  readonly size?: number;
  readonly error?: string | null;
}

/** One LIST entry (PROTOCOL.md §4): lstat of a directory's child. */
export interface DirEntry {
  readonly name: string;
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
  readonly size: number;
  readonly mode: number;
  /** Seconds since the epoch. */
  readonly mtime: number;
  readonly link_target: string | null;
}

/** One running command in the guest. */
export interface ExecSession {
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** Write to the command's stdin; `end()` sends EOF. */
  readonly stdin: Writable;
  resize(rows: number, cols: number): void;
  signal(signo: number): void;
  /** Resolves with the exit status; rejects with the guest's error (e.g. not_found). */
  readonly result: Promise<ExitStatus>;
}

export interface SessionStartRequest extends Omit<ExecRequest, 'stdin'> {
  /** Unique in the guest; the agent picks s1, s2, … when absent. */
  readonly name?: string;
  /** Ring size in bytes (the agent clamps it to 4 KiB..64 MiB; default 1 MiB). */
  readonly buffer?: number;
  /** `single`: the first attacher asking for input holds it; `shared`: all do. */
  readonly input?: 'single' | 'shared';
}

/** A session in the guest (PROTOCOL.md §6). */
export interface GuestSession {
  readonly name: string;
  readonly pid: number;
  readonly argv: readonly string[];
  readonly tty: boolean;
  readonly input: 'single' | 'shared';
  readonly buffer: number;
  readonly running: boolean;
  readonly code: number | null;
  readonly signal: number | null;
  /** Unix seconds. */
  readonly startedAt: number;
  readonly endedAt: number | null;
  /** Byte offsets of the ring: its first byte and one past its last. */
  readonly start: number;
  readonly end: number;
  readonly attached: number;
}

export interface SessionAttachRequest {
  readonly name: string;
  /** Offset to start at; null or absent: everything the ring holds. */
  readonly from?: number | null;
  /** Keep streaming live output (default true); false: the buffer, then the end. */
  readonly follow?: boolean;
  /** Ask for input (stdin, resize, signals). */
  readonly input?: boolean;
}

/** The first thing an attach says: where its output starts and what it may do. */
export type SessionAttachHeader = SessionAttachedMessage;

export interface SessionAttachEnd extends ExitStatus {
  /** The session still runs (a detach, or the end of a non-follow read). */
  readonly running: boolean;
  readonly detached: boolean;
  /** The offset after the last byte sent. */
  readonly end: number;
}

export interface SessionAttachment extends Omit<ExecSession, 'result'> {
  readonly header: Promise<SessionAttachHeader>;
  readonly result: Promise<SessionAttachEnd>;
  /** Leave the session running; `result` then resolves with `detached: true`. */
  detach(): void;
}

interface StreamState {
  onFrame(frame: Frame): void;
  onClose(err: Error): void;
}

const GUEST_ERRORS: Record<
  string,
  | 'not_found'
  | 'invalid_argument'
  | 'conflict'
  | 'internal'
  | 'already_exists'
  | 'too_many_sessions'
> = {
  not_found: 'not_found',
  already_exists: 'already_exists',
  resource_exhausted: 'too_many_sessions',
  invalid_argument: 'invalid_argument',
  permission_denied: 'conflict',
  unsupported: 'invalid_argument',
  internal: 'internal',
};

/**
 * The guest's ERROR frame as a VesselError. A command that could not start
 * carries the exit code a shell gives it (127 not found, 126 cannot execute)
 * in `details.exit_code`.
 */
function guestError(payload: Buffer): VesselError {
  let parsed: { code?: unknown; message?: unknown; exit_code?: unknown } = {};
  try {
    parsed = JSON.parse(payload.toString('utf8')) as typeof parsed;
  } catch {
    // keep the raw text below
  }
  const guestCode = typeof parsed.code === 'string' ? parsed.code : null;
  const code = (guestCode && GUEST_ERRORS[guestCode]) || 'internal';
  const message =
    typeof parsed.message === 'string' ? parsed.message : payload.toString('utf8') || 'guest error';
  const exitCode = parsed.exit_code === 126 || parsed.exit_code === 127 ? parsed.exit_code : null;
  return new VesselError(code, message, {
    details: { guest_code: guestCode, ...(exitCode === null ? {} : { exit_code: exitCode }) },
  });
}

/**
 * Stdin flow control: the host sends at most a window of bytes the guest has
 * not yet written to the command (the guest grants them back with WINDOW as
 * it writes), so a command that does not read its stdin makes the sender
 * wait instead of filling the guest's memory or the daemon's.
 */
class SendCredit {
  private avail: number;
  private waiters: Array<() => void> = [];
  private closed = false;

  constructor(window: number) {
    this.avail = window;
  }

  grant(n: number): void {
    this.avail += n;
    while (this.avail > 0 && this.waiters.length > 0) this.waiters.shift()!();
  }

  /** Resolves when `n` bytes may go (the last piece may overshoot by itself). */
  async take(n: number): Promise<void> {
    while (this.avail <= 0 && !this.closed)
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.avail -= n;
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w();
  }
}

/**
 * One output stream of a guest command. Bytes the consumer has read are
 * granted back to the guest (WINDOW frames, batched), so at most about one
 * window sits in this buffer whatever the consumer's pace.
 */
class GuestOutput extends Readable {
  private delivered = 0;
  private granted = 0;
  private readonly grant: (n: number) => void;
  private readonly batch: number;

  constructor(grant: (n: number) => void, window: number) {
    super({ highWaterMark: window });
    this.grant = grant;
    this.batch = Math.max(1, Math.floor(window / 4));
  }

  deliver(data: Buffer): void {
    // A guest that ignores the window would grow this buffer without end: a protocol error.
    if (this.readableLength + data.length > this.readableHighWaterMark * 2) {
      throw new VesselError(
        'internal',
        `guest protocol error: output beyond the flow-control window (${this.readableHighWaterMark} bytes)`,
      );
    }
    this.delivered += data.length;
    this.push(data);
    this.settle();
  }

  // Every consumer (pipe, flowing mode, async iteration) takes data through read();
  // _read alone would miss consumption while a push is awaited (its `reading` latch).
  override read(size?: number): unknown {
    const chunk: unknown = super.read(size);
    this.settle();
    return chunk;
  }

  override _read(): void {
    this.settle();
  }

  private settle(): void {
    if (this.readableEnded) return;
    const due = this.delivered - this.readableLength - this.granted;
    if (due >= this.batch) {
      this.granted += due;
      this.grant(due);
    }
  }
}

/**
 * Host side of the guest control channel: many concurrent execs, copies and
 * stats multiplexed over one byte stream (a virtio-serial chardev socket or a
 * hybrid vsock connection).
 */
export class GuestClient {
  private readonly socket: Duplex;
  private readonly decoder: FrameDecoder;
  private readonly streams = new Map<number, StreamState>();
  private readonly pings = new Map<string, () => void>();
  /**
   * Odd stream ids, from a random start: a daemon that re-attaches to a guest
   * whose commands from the previous connection still run must not reuse their ids.
   */
  private nextId = (Math.floor(Math.random() * 0x3fff_ffff) << 1) | 1;
  private closed: Error | undefined;
  private main: MainStreamHandler | undefined;
  private onProtocolError: ((err: Error) => void) | undefined;
  /** Main-stream bytes received and not yet granted back. */
  private mainDue = 0;
  private readonly mainCredit = new SendCredit(MAIN_WINDOW);
  readonly agent: string;

  private constructor(socket: Duplex, agent: string, decoder: FrameDecoder) {
    this.socket = socket;
    this.agent = agent;
    // The decoder that read HELLO may already hold the next frame's first bytes.
    this.decoder = decoder;
  }

  /**
   * Wait for the guest's HELLO on `socket`, then return a client. The
   * client also asks for one (PROTOCOL.md §4), so attaching to a guest that
   * is already running — after a daemon restart or a restore — never waits
   * for a HELLO the guest believes it already sent.
   */
  static connect(
    socket: Duplex,
    options: {
      timeoutMs?: number;
      main?: MainStreamHandler;
      /** Told why the connection is dropped when the guest breaks the protocol. */
      onProtocolError?: (err: Error) => void;
    } = {},
  ): Promise<GuestClient> {
    socket.write(encodeFrame(FrameType.hello, 0, Buffer.alloc(0)));
    return new Promise((resolve, reject) => {
      const decoder = new FrameDecoder();
      const timer = setTimeout(
        () => fail(new VesselError('timeout', 'the guest agent did not say hello in time')),
        options.timeoutMs ?? 30_000,
      );
      const cleanup = (): void => {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('error', fail);
        socket.off('close', onClose);
      };
      function fail(err: Error): void {
        cleanup();
        reject(err);
      }
      const onClose = (): void =>
        fail(new VesselError('internal', 'the guest control channel closed before hello'));
      const onData = (chunk: Buffer): void => {
        let frames: Frame[];
        try {
          frames = decoder.push(chunk);
        } catch (err) {
          fail(err as Error);
          return;
        }
        const first = frames[0];
        if (!first) return;
        cleanup();
        if (first.type !== FrameType.hello) {
          reject(
            new VesselError(
              'internal',
              `guest protocol error: first frame has type ${first.type}, expected hello`,
            ),
          );
          return;
        }
        let hello: { version?: number; agent?: string } = {};
        try {
          hello = JSON.parse(first.payload.toString('utf8')) as typeof hello;
        } catch {
          // handled below
        }
        if (hello.version !== 1) {
          reject(
            new VesselError(
              'conflict',
              `guest agent speaks protocol version ${String(hello.version)}, Vessel speaks 1`,
            ),
          );
          return;
        }
        const client = new GuestClient(socket, hello.agent ?? 'unknown', decoder);
        if (options.main) client.main = options.main;
        client.onProtocolError = options.onProtocolError;
        client.attach(frames.slice(1));
        resolve(client);
      };
      socket.on('data', onData);
      socket.once('error', fail);
      socket.once('close', onClose);
    });
  }

  private attach(pending: Frame[]): void {
    for (const f of pending) this.dispatch(f);
    this.socket.on('data', (chunk: Buffer) => {
      try {
        for (const f of this.decoder.push(chunk)) this.dispatch(f);
      } catch (err) {
        // Bytes from a guest that break the protocol: this connection only is dropped.
        this.onProtocolError?.(err as Error);
        this.shutdown(err as Error);
        this.socket.destroy();
      }
    });
    this.socket.on('error', (err) => this.shutdown(err));
    this.socket.on('close', () =>
      this.shutdown(new VesselError('internal', 'the guest control channel closed')),
    );
  }

  private dispatch(frame: Frame): void {
    if (frame.type === FrameType.hello) return; // the answer to our request, or a late one
    if (frame.type === FrameType.pong) {
      this.pings.get(frame.payload.toString('hex'))?.();
      return;
    }
    if (frame.stream === MAIN_STREAM) {
      this.onMainFrame(frame);
      return;
    }
    this.streams.get(frame.stream)?.onFrame(frame);
  }

  /** The handler writes synchronously, so credit goes back as soon as it returns. */
  private onMainFrame(frame: Frame): void {
    const main = this.main;
    if (!main) return;
    if (frame.type === FrameType.stdout || frame.type === FrameType.stderr) {
      main.output(frame.type === FrameType.stdout ? 'stdout' : 'stderr', frame.payload);
      this.mainDue += frame.payload.length;
      if (this.mainDue >= MAIN_WINDOW / 4 && !this.closed) {
        this.send(FrameType.window, MAIN_STREAM, u32(this.mainDue));
        this.mainDue = 0;
      }
    } else if (frame.type === FrameType.window && frame.payload.length === 4) {
      this.mainCredit.grant(frame.payload.readUInt32BE(0));
    } else if (frame.type === FrameType.exit) {
      this.mainCredit.close();
      main.exit(parseExit(frame.payload));
    }
  }

  /**
   * Send bytes to the main command's stdin (`run -i`); an empty buffer is
   * EOF. Resolves once the bytes are on their way within the guest's window.
   */
  async mainStdin(data: Buffer): Promise<void> {
    if (data.length === 0) this.send(FrameType.stdin, MAIN_STREAM);
    else await this.sendCredited(this.mainCredit, MAIN_STREAM, data);
  }

  private async sendCredited(
    credit: SendCredit,
    stream: number,
    data: Buffer,
    type: number = FrameType.stdin,
    pieceSize = STDIN_PIECE,
  ): Promise<void> {
    for (let off = 0; off < data.length; off += pieceSize) {
      const piece = data.subarray(off, off + pieceSize);
      await credit.take(piece.length);
      if (this.closed) throw this.closed;
      this.send(type, stream, piece);
    }
  }

  /** Deliver signal `signo` to the main command's process group. */
  mainSignal(signo: number): void {
    this.send(FrameType.signal, MAIN_STREAM, Buffer.from([signo]));
  }

  /** Resize the main command's terminal (`run -t`). */
  mainResize(rows: number, cols: number): void {
    this.send(FrameType.resize, MAIN_STREAM, winsize(rows, cols));
  }

  private shutdown(err: Error): void {
    if (this.closed) return;
    this.closed = err;
    for (const s of this.streams.values()) s.onClose(err);
    this.streams.clear();
    this.mainCredit.close();
  }

  private send(type: number, stream: number, payload?: Buffer | string): void {
    if (this.closed)
      throw new VesselError('conflict', `guest control channel is closed: ${this.closed.message}`);
    this.socket.write(encodeFrame(type, stream, payload));
  }

  private open(state: StreamState): number {
    if (this.streams.size >= MAX_STREAMS) {
      throw new VesselError(
        'too_many_streams',
        `the guest already has ${MAX_STREAMS} execs, copies and stats open; retry when some finish`,
      );
    }
    const id = this.nextId;
    this.nextId += 2;
    this.streams.set(id, state);
    return id;
  }

  /** Run a command in the guest. */
  exec(req: ExecRequest): ExecSession {
    const { session, end } = this.interactive(FrameType.exec, {
      ...commandHead(req),
      stdin: req.stdin ?? false,
      window: EXEC_WINDOW,
    });
    return { ...session, result: end.then(parseExit) };
  }

  /**
   * A stream with a command's stdio (EXEC, SESSION_ATTACH): credited output, credited
   * stdin, resize and signals. `end` resolves with the EXIT payload, after every output
   * byte; DATA frames (an attach's header) go to `onData`.
   */
  private interactive(
    type: number,
    head: Record<string, unknown>,
    onData?: (payload: Buffer) => void,
  ): { id: number; session: Omit<ExecSession, 'result'>; end: Promise<Buffer> } {
    let id = 0;
    const grant = (n: number): void => {
      if (this.streams.has(id) && !this.closed) this.send(FrameType.window, id, u32(n));
    };
    const stdout = new GuestOutput(grant, EXEC_WINDOW);
    const stderr = new GuestOutput(grant, EXEC_WINDOW);
    const stdinCredit = new SendCredit(EXEC_WINDOW);
    let settle!: { resolve: (payload: Buffer) => void; reject: (e: Error) => void };
    const end = new Promise<Buffer>((resolve, reject) => (settle = { resolve, reject }));
    const finish = (): void => {
      stdout.push(null);
      stderr.push(null);
      stdinCredit.close();
    };
    id = this.open({
      onFrame: (f) => {
        if (f.type === FrameType.stdout) stdout.deliver(f.payload);
        else if (f.type === FrameType.stderr) stderr.deliver(f.payload);
        else if (f.type === FrameType.window && f.payload.length === 4)
          stdinCredit.grant(f.payload.readUInt32BE(0));
        else if (f.type === FrameType.data) onData?.(f.payload);
        else if (f.type === FrameType.exit) {
          this.streams.delete(id);
          finish();
          settle.resolve(f.payload);
        } else if (f.type === FrameType.error) {
          this.streams.delete(id);
          finish();
          settle.reject(guestError(f.payload));
        }
      },
      onClose: (err) => {
        finish();
        settle.reject(err);
      },
    });
    const send = (type: number, payload?: Buffer | string): void => this.send(type, id, payload);
    const stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        this.sendCredited(stdinCredit, id, chunk).then(() => cb(), cb);
      },
      final: (cb) => {
        try {
          if (this.streams.has(id)) send(FrameType.stdin);
          cb();
        } catch (err) {
          cb(err as Error);
        }
      },
    });
    send(type, JSON.stringify(head));
    return {
      id,
      end,
      session: {
        stdout,
        stderr,
        stdin,
        resize: (rows, cols) => send(FrameType.resize, winsize(rows, cols)),
        signal: (signo) => send(FrameType.signal, Buffer.from([signo])),
      },
    };
  }

  /** Start a session: a command whose output the agent keeps in a ring (PROTOCOL.md §6). */
  async sessionStart(req: SessionStartRequest): Promise<GuestSession> {
    const { lines } = await this.request(
      FrameType.sessionStart,
      {
        ...(req.name ? { name: req.name } : {}),
        ...commandHead(req),
        ...(req.buffer ? { buffer: req.buffer } : {}),
        input: req.input ?? 'single',
      },
      'session start',
    );
    const first = lines[0];
    if (lines.length !== 1 || !first)
      throw new VesselError('internal', 'guest answered session start without the session');
    return parseSession(first);
  }

  /** Every session the agent keeps, running or ended, by name. */
  async sessionList(): Promise<GuestSession[]> {
    const { lines } = await this.request(FrameType.sessionCtl, { op: 'list' }, 'session list');
    return lines.map(parseSession);
  }

  /** Signal a running session's process group. */
  async sessionSignal(name: string, signal: number): Promise<void> {
    await this.request(FrameType.sessionCtl, { op: 'signal', name, signal }, 'session signal');
  }

  /** Forget an ended session (its buffer and exit status). */
  async sessionRemove(name: string): Promise<void> {
    await this.request(FrameType.sessionCtl, { op: 'remove', name }, 'session remove');
  }

  /**
   * Attach to a session: its ring from `from` (null: all it holds), then the live output
   * with `follow`; stdin, resize and signals reach it when `input` was granted (the
   * header says). `detach()` leaves it running; `result` then resolves with `detached`.
   */
  sessionAttach(req: SessionAttachRequest): SessionAttachment {
    let onHeader!: { resolve: (h: SessionAttachHeader) => void; reject: (e: Error) => void };
    const header = new Promise<SessionAttachHeader>(
      (resolve, reject) => (onHeader = { resolve, reject }),
    );
    header.catch(() => undefined);
    const { id, session, end } = this.interactive(
      FrameType.sessionAttach,
      {
        name: req.name,
        from: req.from ?? null,
        follow: req.follow ?? true,
        input: req.input ?? false,
        window: EXEC_WINDOW,
      },
      (payload) => {
        try {
          onHeader.resolve(parseAttachHeader(payload));
        } catch (err) {
          onHeader.reject(err as Error);
        }
      },
    );
    const result = end.then(parseAttachEnd);
    result.then(
      () => onHeader.reject(new VesselError('internal', 'guest ended an attach without a header')),
      (err: Error) => onHeader.reject(err),
    );
    return {
      ...session,
      header,
      result,
      detach: () => {
        if (this.streams.has(id) && !this.closed) this.send(FrameType.detach, id);
      },
    };
  }

  /** A request answered by DATA frames of JSON lines (maybe none), then EXIT or ERROR. */
  private request(
    type: number,
    head: Record<string, unknown>,
    what: string,
    limit = MAX_LISTING,
  ): Promise<{ lines: unknown[] }> {
    return new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      let size = 0;
      const id = this.open({
        onFrame: (f) => {
          if (f.type === FrameType.data) {
            size += f.payload.length;
            if (size > limit) {
              this.streams.delete(id);
              reject(new VesselError('internal', `guest answered ${what} with too much data`));
              return;
            }
            parts.push(f.payload);
            return;
          }
          this.streams.delete(id);
          if (f.type === FrameType.error) return reject(guestError(f.payload));
          if (f.type !== FrameType.exit)
            return reject(
              new VesselError('internal', `guest answered ${what} with frame ${f.type}`),
            );
          try {
            resolve({ lines: jsonLines(Buffer.concat(parts).toString('utf8'), what) });
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        },
        onClose: reject,
      });
      this.send(type, id, JSON.stringify(head));
    });
  }

  /** Path metadata in the guest. */
  stat(path: string, follow = true): Promise<PathInfo> {
    return new Promise((resolve, reject) => {
      const id = this.open({
        onFrame: (f) => {
          this.streams.delete(id);
          if (f.type === FrameType.statResult)
            resolve(JSON.parse(f.payload.toString('utf8')) as PathInfo);
          else if (f.type === FrameType.error) reject(guestError(f.payload));
          else reject(new VesselError('internal', `guest answered stat with frame type ${f.type}`));
        },
        onClose: reject,
      });
      this.send(FrameType.stat, id, JSON.stringify({ path, follow }));
    });
  }

  /**
   * Unpack a tar stream into `path` in the guest; with `raw` write the bytes
   * to the file `path` instead (parents created, `mode` set). The source is
   * read only as fast as the guest consumes it (COPY_WINDOW of credit), so
   * a copy of any size holds about one window here. If the guest fails
   * early, the rest of the source is still read and discarded (the guest
   * keeps granting while it drains), and the guest's error is the result.
   */
  async copyIn(
    path: string,
    source: Readable,
    options: { raw?: { mode: number } } = {},
  ): Promise<void> {
    const credit = new SendCredit(COPY_WINDOW);
    let id = 0;
    const answer = new Promise<void>((resolve, reject) => {
      id = this.open({
        onFrame: (f) => {
          if (f.type === FrameType.window && f.payload.length === 4) {
            credit.grant(f.payload.readUInt32BE(0));
            return;
          }
          this.streams.delete(id);
          credit.close();
          if (f.type === FrameType.exit) resolve();
          else if (f.type === FrameType.error) reject(guestError(f.payload));
          else reject(new VesselError('internal', `guest answered a copy with frame ${f.type}`));
        },
        onClose: (err) => {
          credit.close();
          reject(err);
        },
      });
    });
    // Settled by the sender below or the guest's answer, whichever fails first.
    answer.catch(() => undefined);
    const head = {
      path,
      window: COPY_WINDOW,
      ...(options.raw ? { raw: true, mode: options.raw.mode } : {}),
    };
    this.send(FrameType.copyIn, id, JSON.stringify(head));
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        if (!this.streams.has(id)) break; // the guest answered early (an error)
        await this.sendCredited(
          credit,
          id,
          chunk,
          FrameType.data,
          Math.min(COPY_PIECE, MAX_PAYLOAD),
        );
      }
      if (this.streams.has(id)) this.send(FrameType.data, id);
    } catch (err) {
      // The source failed: end the guest's stream, report the source's error.
      if (this.streams.has(id) && !this.closed) this.send(FrameType.data, id);
      await answer.catch(() => undefined);
      throw err instanceof Error ? err : new Error(String(err));
    }
    return answer;
  }

  /**
   * A tar stream of `path` in the guest (with `raw`: the bytes of the file
   * `path`); errors surface on the stream. The guest sends only what the
   * reader of the stream has taken plus COPY_WINDOW.
   */
  copyOut(path: string, options: { raw?: boolean } = {}): Readable {
    return this.download(FrameType.copyOut, { path, ...(options.raw ? { raw: true } : {}) });
  }

  /**
   * What the guest changed since boot, as an OCI image layer tar computed in the
   * guest from the overlay's upper directory (PROTOCOL.md, DIFF): whiteouts
   * `.wh.<name>`, opaque directories `.wh..wh..opq`. `exclude` lists paths relative
   * to the root (`etc/hosts`) left out with everything below them. Flow-controlled
   * like copyOut; errors surface on the stream with the guest's code in
   * `details.guest_code` (`unsupported` for a change a layer cannot express).
   */
  diff(exclude: readonly string[]): Readable {
    return this.download(FrameType.diff, { exclude });
  }

  /** A COPY_OUT-style request: DATA frames (credited), an empty DATA, then EXIT or ERROR. */
  private download(type: number, head: Record<string, unknown>): Readable {
    let id = 0;
    const grant = (n: number): void => {
      if (this.streams.has(id) && !this.closed) this.send(FrameType.window, id, u32(n));
    };
    const out = new GuestOutput(grant, COPY_WINDOW);
    id = this.open({
      onFrame: (f) => {
        if (f.type === FrameType.data) {
          // A consumer that went away (an aborted download): discard, and keep the guest
          // going to its end so its thread and this stream are freed (there is no cancel).
          if (out.destroyed) grant(f.payload.length);
          else if (f.payload.length > 0) out.deliver(f.payload);
        } else if (f.type === FrameType.exit) {
          this.streams.delete(id);
          out.push(null);
        } else if (f.type === FrameType.error) {
          this.streams.delete(id);
          out.destroy(guestError(f.payload));
        }
      },
      onClose: (err) => out.destroy(err),
    });
    out.once('close', () => {
      if (!out.readableEnded) grant(COPY_WINDOW);
    });
    this.send(type, id, JSON.stringify({ ...head, window: COPY_WINDOW }));
    return out;
  }

  /** The entries of directory `path` in the guest (lstat, sorted by name). */
  async list(path: string): Promise<DirEntry[]> {
    const { lines } = await this.request(FrameType.list, { path }, 'list', Infinity);
    return lines.map(parseEntry);
  }

  /** Remove `path` in the guest (`recursive` for a non-empty directory). */
  remove(path: string, recursive: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const id = this.open({
        onFrame: (f) => {
          this.streams.delete(id);
          if (f.type === FrameType.exit) resolve();
          else if (f.type === FrameType.error) reject(guestError(f.payload));
          else reject(new VesselError('internal', `guest answered remove with frame ${f.type}`));
        },
        onClose: reject,
      });
      this.send(FrameType.remove, id, JSON.stringify({ path, recursive }));
    });
  }

  /**
   * Tell the guest its new identity after a restore from a snapshot taken as
   * another instance (a fork) or with another address: hostname, and the
   * config disk's `network` section (PROTOCOL.md, RECONFIGURE).
   */
  reconfigure(identity: { hostname: string; network?: unknown }): Promise<void> {
    return new Promise((resolve, reject) => {
      const id = this.open({
        onFrame: (f) => {
          this.streams.delete(id);
          if (f.type === FrameType.exit) resolve();
          else if (f.type === FrameType.error) reject(guestError(f.payload));
          else
            reject(new VesselError('internal', `guest answered reconfigure with frame ${f.type}`));
        },
        onClose: reject,
      });
      this.send(FrameType.reconfigure, id, JSON.stringify(identity));
    });
  }

  /** Round trip to the agent; resolves with the time in milliseconds. */
  ping(timeoutMs = 5000): Promise<number> {
    const token = Buffer.from(`${Date.now()}-${Math.random()}`);
    const key = token.toString('hex');
    const start = performance.now();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pings.delete(key);
        reject(
          new VesselError('timeout', `guest agent did not answer a ping within ${timeoutMs} ms`),
        );
      }, timeoutMs);
      this.pings.set(key, () => {
        clearTimeout(timer);
        this.pings.delete(key);
        resolve(performance.now() - start);
      });
      this.send(FrameType.ping, 0, token);
    });
  }

  /**
   * Resolves once the channel has ended (everything the guest sent has been
   * dispatched) or after `timeoutMs`, whichever is first.
   */
  drained(timeoutMs: number): Promise<void> {
    if (this.closed || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.socket.off('close', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.socket.once('close', done);
    });
  }

  close(): void {
    this.shutdown(new VesselError('conflict', 'guest client closed'));
    this.socket.end();
  }
}

const ENTRY_TYPES = new Set(['file', 'dir', 'symlink', 'other']);

/** What EXEC and SESSION_START share: the command, its environment and terminal. */
function commandHead(req: Omit<ExecRequest, 'stdin'>): Record<string, unknown> {
  return {
    argv: req.argv,
    env: req.env ?? [],
    cwd: req.cwd ?? '/',
    user: req.user ?? '0:0',
    tty: req.tty ?? false,
    rows: req.rows ?? 24,
    cols: req.cols ?? 80,
  };
}

/** JSON lines of a listing (LIST, SESSION_CTL list); guest output is untrusted. */
function jsonLines(text: string, what: string): unknown[] {
  const out: unknown[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      throw new VesselError('internal', `guest sent a malformed line in its ${what} answer`);
    }
  }
  return out;
}

const num = (x: unknown): number => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
const isRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x);

/** One LIST entry, checked field by field. */
function parseEntry(v: unknown): DirEntry {
  if (
    !isRecord(v) ||
    typeof v.name !== 'string' ||
    typeof v.type !== 'string' ||
    !ENTRY_TYPES.has(v.type)
  )
    throw new VesselError('internal', 'guest sent a malformed directory entry');
  return {
    name: v.name,
    type: v.type as DirEntry['type'],
    size: num(v.size),
    mode: num(v.mode),
    mtime: num(v.mtime),
    link_target: typeof v.link_target === 'string' ? v.link_target : null,
  };
}

const intOrNull = (v: unknown, max: number): number | null =>
  typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= max ? v : null;
const offset = (v: unknown): number => intOrNull(v, Number.MAX_SAFE_INTEGER) ?? 0;

/** A session as the agent describes it (SESSION_START's DATA, list lines). */
function parseSession(v: unknown): GuestSession {
  if (!isRecord(v) || typeof v.name !== 'string' || !Array.isArray(v.argv))
    throw new VesselError('internal', 'guest sent a malformed session');
  const time = (x: unknown): number | null =>
    typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : null;
  return {
    name: v.name.slice(0, 63),
    pid: intOrNull(v.pid, 0x7fff_ffff) ?? 0,
    argv: v.argv.filter((a): a is string => typeof a === 'string'),
    tty: v.tty === true,
    input: v.input === 'shared' ? 'shared' : 'single',
    buffer: offset(v.buffer),
    running: v.running === true,
    code: intOrNull(v.code, 255),
    signal: intOrNull(v.signal, 255),
    startedAt: time(v.started_at) ?? 0,
    endedAt: time(v.ended_at),
    start: offset(v.start),
    end: offset(v.end),
    attached: offset(v.attached),
  };
}

function parseJsonPayload(payload: Buffer, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(payload.toString('utf8'));
  } catch {
    v = undefined;
  }
  if (!isRecord(v)) throw new VesselError('internal', `guest sent a malformed ${what}`);
  return v;
}

function parseAttachHeader(payload: Buffer): SessionAttachHeader {
  const v = parseJsonPayload(payload, 'attach header');
  return {
    start: offset(v.start),
    from: offset(v.from),
    end: offset(v.end),
    tty: v.tty === true,
    input: v.input === true,
    running: v.running === true,
  };
}

function parseAttachEnd(payload: Buffer): SessionAttachEnd {
  const v = parseJsonPayload(payload, 'attach end');
  return {
    code: intOrNull(v.code, 255),
    signal: intOrNull(v.signal, 255),
    running: v.running === true,
    detached: v.detached === true,
    end: offset(v.end),
  };
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(Math.min(n, 0xffff_ffff), 0);
  return b;
}

function winsize(rows: number, cols: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(rows, 0);
  b.writeUInt16BE(cols, 2);
  return b;
}

/** An EXIT frame's JSON: `{code, signal, message?}`. */
function parseExit(payload: Buffer): ExitStatus {
  let s: { code?: unknown; signal?: unknown; message?: unknown };
  try {
    s = JSON.parse(payload.toString('utf8')) as typeof s;
  } catch (err) {
    throw new VesselError('internal', `guest sent a malformed exit status: ${errorMessage(err)}`);
  }
  return {
    code: intOrNull(s.code, 255),
    signal: intOrNull(s.signal, 255),
    ...(typeof s.message === 'string' ? { message: s.message.slice(0, 4096) } : {}),
  };
}
