/**
 * An instance's bytes: exec (waiting out a boot in progress), the main
 * command's stdin, signals and terminal size, and log reads. None of these
 * take the instance lock: long I/O never blocks stop or delete.
 */
import { VesselError } from '../core/errors.js';
import type { ExecRequest, ExecSession, GuestClient } from '../guest/index.js';
import type { InstanceCore } from './core.js';
import type { GuestConfig } from './guest-config.js';
import { readLog, type LogChunk, type LogSource, type ReadLogOptions } from './logs.js';

/**
 * Resolves once the instance is no longer Initializing (Running, or stopped
 * because its boot failed or its command already ended), or after the boot
 * timeout. Subscribes before reading, so no change is missed.
 */
function untilBooted(core: InstanceCore, id: string): Promise<void> {
  return new Promise((resolve) => {
    const booting = (): boolean => core.repo.get(id)?.state === 'Initializing';
    const done = (): void => {
      clearTimeout(timer);
      sub.close();
      resolve();
    };
    const sub = core.bus.subscribe(
      (e) => {
        if (e.type === 'delete' || e.new_state !== 'Initializing') done();
      },
      { filter: (e) => e.instance_id === id, name: 'boot-wait', bufferSize: 16 },
    );
    const timer = setTimeout(done, core.o.bootTimeoutMs ?? 120_000);
    if (!booting()) done();
  });
}

/**
 * The guest client of a Running instance. An instance still Initializing is
 * waited for (bounded by the boot timeout), so `run -d` then `exec` works.
 */
export async function runningGuest(core: InstanceCore, idOrName: string): Promise<GuestClient> {
  let row = core.row(idOrName);
  if (row.state === 'Initializing') {
    await untilBooted(core, row.id);
    row = core.row(row.id);
  }
  const rt = core.runtimes.get(row.id);
  // Re-adopted or restored: Running again while its agent reconnects.
  if (row.state === 'Running' && rt && !rt.guest) await rt.guestConnecting;
  if (row.state !== 'Running' || !rt?.guest) {
    const why = row.state_error ? ` (${row.state_error})` : '';
    throw new VesselError(
      'conflict',
      `instance "${row.name}" is ${row.state}${why}; exec needs it Running`,
      { details: { instance: row.name, state: row.state } },
    );
  }
  return rt.guest;
}

/** Run a command in the guest with the instance's environment under the request's. */
export async function exec(
  core: InstanceCore,
  idOrName: string,
  req: ExecRequest,
): Promise<ExecSession> {
  const guest = await runningGuest(core, idOrName);
  return guest.exec({ ...req, env: instanceEnv(core, idOrName, req.env) });
}

/** Like `docker exec`: the instance's environment, then the request's overrides. */
export function instanceEnv(
  core: InstanceCore,
  idOrName: string,
  env: readonly string[] = [],
): string[] {
  const row = core.row(idOrName);
  const base = ((row.guest as Partial<GuestConfig>).env ?? []).filter(
    (kv) => !env.some((o) => o.split('=')[0] === kv.split('=')[0]),
  );
  return [...base, ...env];
}

/** The main command's controls for an attached client (`run -i`/`-t`). */
export interface MainControls {
  /** Bytes to its stdin; an empty buffer closes it. Resolves within the guest's window. */
  stdin(data: Buffer): Promise<void>;
  signal(signo: number): Promise<void>;
  resize(rows: number, cols: number): Promise<void>;
  /** Whether the instance was created with `stdin: true`. */
  readonly stdinOpen: boolean;
  readonly tty: boolean;
}

export function mainControls(core: InstanceCore, idOrName: string): MainControls {
  const row = core.row(idOrName);
  const stdio = (row.guest as Partial<GuestConfig>).stdio;
  // Anything sent ahead of the boot waits for the agent, as `docker run -i` input does;
  // anything for a command that has ended is dropped, as a closed pipe would drop it.
  const guest = async (): Promise<GuestClient | undefined> => {
    await untilBooted(core, row.id);
    return core.runtimes.get(row.id)?.guest;
  };
  return {
    stdin: async (data) => (await guest())?.mainStdin(data),
    signal: async (signo) => (await guest())?.mainSignal(signo),
    resize: async (rows, cols) => (await guest())?.mainResize(rows, cols),
    stdinOpen: stdio?.stdin ?? false,
    tty: stdio?.tty ?? false,
  };
}

/** The source a plain `logs` shows: the app log, or the console for an image's own init. */
export function defaultLogSource(core: InstanceCore, idOrName: string): LogSource {
  const mode = (core.row(idOrName).guest as Partial<GuestConfig>).mode;
  return mode === 'systemd' ? 'console' : 'app';
}

export function logs(
  core: InstanceCore,
  idOrName: string,
  source: LogSource,
  options: ReadLogOptions,
): AsyncGenerator<LogChunk> {
  return readLog(core, core.row(idOrName).id, source, options);
}
