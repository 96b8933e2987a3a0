import { PassThrough, Writable, type Duplex, type Readable } from 'node:stream';
import { VesselError, errorMessage } from '../core/errors.js';
import { FrameDecoder, FrameType, MAX_PAYLOAD, encodeFrame, type Frame } from './frame.js';

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

interface StreamState {
  onFrame(frame: Frame): void;
  onClose(err: Error): void;
}

const GUEST_ERRORS: Record<string, 'not_found' | 'invalid_argument' | 'conflict' | 'internal'> = {
  not_found: 'not_found',
  invalid_argument: 'invalid_argument',
  permission_denied: 'conflict',
  unsupported: 'invalid_argument',
  internal: 'internal',
};

function guestError(payload: Buffer): VesselError {
  let parsed: { code?: string; message?: string } = {};
  try {
    parsed = JSON.parse(payload.toString('utf8')) as typeof parsed;
  } catch {
    // keep the raw text below
  }
  const code = (parsed.code && GUEST_ERRORS[parsed.code]) || 'internal';
  return new VesselError(code, parsed.message ?? (payload.toString('utf8') || 'guest error'), {
    details: { guest_code: parsed.code ?? null },
  });
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
  static connect(socket: Duplex, options: { timeoutMs?: number } = {}): Promise<GuestClient> {
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
    this.streams.get(frame.stream)?.onFrame(frame);
  }

  private shutdown(err: Error): void {
    if (this.closed) return;
    this.closed = err;
    for (const s of this.streams.values()) s.onClose(err);
    this.streams.clear();
  }

  private send(type: number, stream: number, payload?: Buffer | string): void {
    if (this.closed)
      throw new VesselError('conflict', `guest control channel is closed: ${this.closed.message}`);
    this.socket.write(encodeFrame(type, stream, payload));
  }

  private open(state: StreamState): number {
    const id = this.nextId;
    this.nextId += 2;
    this.streams.set(id, state);
    return id;
  }

  /** Run a command in the guest. */
  exec(req: ExecRequest): ExecSession {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let settle!: { resolve: (s: ExitStatus) => void; reject: (e: Error) => void };
    const result = new Promise<ExitStatus>((resolve, reject) => (settle = { resolve, reject }));
    const finish = (): void => {
      stdout.end();
      stderr.end();
    };
    const id = this.open({
      onFrame: (f) => {
        if (f.type === FrameType.stdout) stdout.write(f.payload);
        else if (f.type === FrameType.stderr) stderr.write(f.payload);
        else if (f.type === FrameType.exit) {
          this.streams.delete(id);
          finish();
          try {
            const s = JSON.parse(f.payload.toString('utf8')) as {
              code?: number | null;
              signal?: number | null;
            };
            settle.resolve({ code: s.code ?? null, signal: s.signal ?? null });
          } catch (err) {
            settle.reject(
              new VesselError(
                'internal',
                `guest sent a malformed exit status: ${errorMessage(err)}`,
              ),
            );
          }
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
        try {
          for (let off = 0; off < chunk.length; off += MAX_PAYLOAD)
            send(FrameType.stdin, chunk.subarray(off, off + MAX_PAYLOAD));
          cb();
        } catch (err) {
          cb(err as Error);
        }
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
    send(
      FrameType.exec,
      JSON.stringify({
        argv: req.argv,
        env: req.env ?? [],
        cwd: req.cwd ?? '/',
        user: req.user ?? '0:0',
        tty: req.tty ?? false,
        rows: req.rows ?? 24,
        cols: req.cols ?? 80,
        stdin: req.stdin ?? false,
      }),
    );
    return {
      stdout,
      stderr,
      stdin,
      result,
      resize: (rows, cols) => {
        const b = Buffer.alloc(4);
        b.writeUInt16BE(rows, 0);
        b.writeUInt16BE(cols, 2);
        send(FrameType.resize, b);
      },
      signal: (signo) => send(FrameType.signal, Buffer.from([signo])),
    };
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

  /** Unpack a tar stream into `path` in the guest. */
  async copyIn(path: string, tar: Readable): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      const id = this.open({
        onFrame: (f) => {
          this.streams.delete(id);
          if (f.type === FrameType.exit) resolve();
          else if (f.type === FrameType.error) reject(guestError(f.payload));
        },
        onClose: reject,
      });
      this.send(FrameType.copyIn, id, JSON.stringify({ path }));
      void (async () => {
        try {
          for await (const chunk of tar as AsyncIterable<Buffer>) {
            for (let off = 0; off < chunk.length; off += MAX_PAYLOAD) {
              this.send(FrameType.data, id, chunk.subarray(off, off + MAX_PAYLOAD));
            }
          }
          this.send(FrameType.data, id);
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      })();
    });
    return done;
  }

  /** A tar stream of `path` in the guest; errors surface on the stream. */
  copyOut(path: string): Readable {
    const out = new PassThrough();
    const id = this.open({
      onFrame: (f) => {
        if (f.type === FrameType.data) {
          if (f.payload.length > 0) out.write(f.payload);
        } else if (f.type === FrameType.exit) {
          this.streams.delete(id);
          out.end();
        } else if (f.type === FrameType.error) {
          this.streams.delete(id);
          out.destroy(guestError(f.payload));
        }
      },
      onClose: (err) => out.destroy(err),
    });
    this.send(FrameType.copyOut, id, JSON.stringify({ path }));
    return out;
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

  close(): void {
    this.shutdown(new VesselError('conflict', 'guest client closed'));
    this.socket.end();
  }
}
