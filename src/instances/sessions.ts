/**
 * Guest sessions: long-running commands the guest agent keeps, with their
 * output in a ring buffer in the guest (guest-agent/PROTOCOL.md §6). Nothing
 * about a session lives in the daemon: the agent is the record, so a session
 * survives the daemon's restart (the re-adopted guest still has it) and
 * standby/restore (its memory is the snapshot's). None of this takes the
 * instance lock: like exec, it never blocks stop or delete.
 */
import { VesselError } from '../core/errors.js';
import type { Session, StartSessionRequest } from '../core/wire-sessions.js';
import type { GuestSession, SessionAttachment } from '../guest/index.js';

export type { SessionAttachment };
import type { InstanceCore } from './core.js';
import { instanceEnv, runningGuest } from './io.js';

const SIGKILL = 9;
/** How long `remove --force` waits for a killed session to end. */
const KILL_WAIT_MS = 10_000;

export interface AttachSessionOptions {
  /** Output offset to start at; absent: everything the ring holds. */
  readonly from?: number;
  /** Keep streaming live output (default true). */
  readonly follow?: boolean;
  /** Ask for input: stdin, resize, signals. */
  readonly input?: boolean;
}

/** The wire form of the agent's description. */
export function sessionView(s: GuestSession): Session {
  const iso = (secs: number): string => new Date(secs * 1000).toISOString();
  return {
    name: s.name,
    command: [...s.argv],
    pid: s.pid,
    tty: s.tty,
    input: s.input,
    buffer_bytes: s.buffer,
    state: s.running ? 'running' : 'exited',
    exit_code: s.code,
    exit_signal: s.signal,
    started_at: iso(s.startedAt),
    ended_at: s.endedAt === null ? null : iso(s.endedAt),
    output_start: s.start,
    output_end: s.end,
    attached: s.attached,
  };
}

export class Sessions {
  constructor(private readonly core: InstanceCore) {}

  async list(idOrName: string): Promise<Session[]> {
    const guest = await runningGuest(this.core, idOrName);
    return (await guest.sessionList()).map(sessionView);
  }

  async get(idOrName: string, name: string): Promise<Session> {
    const found = (await this.list(idOrName)).find((s) => s.name === name);
    if (!found) throw this.notFound(idOrName, name);
    return found;
  }

  /** Start a command as a session, with the instance's environment under the request's. */
  async start(idOrName: string, req: StartSessionRequest): Promise<Session> {
    const guest = await runningGuest(this.core, idOrName);
    const s = await guest.sessionStart({
      ...(req.name ? { name: req.name } : {}),
      argv: req.command,
      env: instanceEnv(this.core, idOrName, req.env),
      ...(req.cwd ? { cwd: req.cwd } : {}),
      ...(req.user ? { user: req.user } : {}),
      tty: req.tty ?? false,
      ...(req.rows ? { rows: req.rows } : {}),
      ...(req.cols ? { cols: req.cols } : {}),
      ...(req.buffer_bytes ? { buffer: req.buffer_bytes } : {}),
      input: req.input ?? 'single',
    });
    return sessionView(s);
  }

  async signal(idOrName: string, name: string, signo: number): Promise<Session> {
    const guest = await runningGuest(this.core, idOrName);
    await this.named(idOrName, name, () => guest.sessionSignal(name, signo));
    return this.get(idOrName, name);
  }

  /**
   * Forget an ended session. A running one is refused (conflict), unless `force`:
   * then it is killed (SIGKILL to its process group) and removed once it ended.
   */
  async remove(idOrName: string, name: string, force = false): Promise<void> {
    const guest = await runningGuest(this.core, idOrName);
    const s = await this.get(idOrName, name);
    if (s.state === 'running') {
      if (!force)
        throw new VesselError(
          'conflict',
          `session "${name}" is still running; kill it first, or remove it with force`,
          { details: { session: name } },
        );
      // Follow from the end: the attachment ends when the session does.
      const watch = guest.sessionAttach({ name, from: s.output_end, follow: true });
      watch.stdout.resume();
      watch.stderr.resume();
      await this.named(idOrName, name, () => guest.sessionSignal(name, SIGKILL)).catch(
        (err: unknown) => {
          // It may have ended on its own in between.
          if (!(err instanceof VesselError && err.code === 'invalid_argument')) throw err;
        },
      );
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        watch.result,
        new Promise((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new VesselError(
                  'timeout',
                  `session "${name}" did not end within ${KILL_WAIT_MS / 1000} s of SIGKILL`,
                ),
              ),
            KILL_WAIT_MS,
          );
        }),
      ]).finally(() => {
        clearTimeout(timer);
        watch.detach();
      });
    }
    await this.named(idOrName, name, () => guest.sessionRemove(name));
  }

  /** Attach to a session (see GuestClient.sessionAttach). */
  async attach(
    idOrName: string,
    name: string,
    options: AttachSessionOptions = {},
  ): Promise<SessionAttachment> {
    const guest = await runningGuest(this.core, idOrName);
    const a = guest.sessionAttach({
      name,
      ...(options.from === undefined ? {} : { from: options.from }),
      follow: options.follow ?? true,
      input: options.input ?? false,
    });
    // The header comes first, or the guest's error (an unknown name) instead.
    await a.header.catch((err: unknown) => {
      throw this.rename(idOrName, name, err);
    });
    return a;
  }

  /** Runs a guest call whose `not_found` means the session, and says so. */
  private async named<T>(idOrName: string, name: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw this.rename(idOrName, name, err);
    }
  }

  private rename(idOrName: string, name: string, err: unknown): unknown {
    return err instanceof VesselError && err.code === 'not_found'
      ? this.notFound(idOrName, name)
      : err;
  }

  private notFound(idOrName: string, name: string): VesselError {
    const instance = this.core.row(idOrName).name;
    return new VesselError('not_found', `instance "${instance}" has no session "${name}"`, {
      details: { instance, session: name },
    });
  }
}
