import fs from 'node:fs/promises';
import { VesselError } from '../core/errors.js';
import { run } from '../core/process.js';
import { MAIN_WINDOW } from '../guest/index.js';
import type { Image } from '../images/index.js';
import type { GuestVolume } from '../volumes/index.js';

/** The per-instance config the guest program reads (guest-agent/PROTOCOL.md §2). */
export interface GuestConfig {
  readonly version: 1;
  /** `agent`: no main command, only the guest agent (builder VMs). */
  readonly mode: 'exec' | 'systemd' | 'agent';
  readonly entrypoint: string[];
  readonly cmd: string[];
  readonly env: string[];
  readonly workdir: string;
  readonly user: string;
  readonly hostname: string;
  readonly root_device_serial: string;
  readonly overlay_device_serial: string;
  readonly control_port: string;
  /** The main command's stdio on the agent's main stream (exec mode). */
  readonly stdio?: { stdin: boolean; tty: boolean; window: number };
  /** Volumes to mount, in mount-path order (added at boot from the attachments). */
  readonly volumes?: readonly GuestVolume[];
}

export const ROOT_SERIAL = 'vessel-root';
export const OVERLAY_SERIAL = 'vessel-overlay';
export const CONFIG_SERIAL = 'vessel-config';
export const CONTROL_PORT = 'vessel.control';

const INIT_PROGRAMS = new Set([
  '/sbin/init',
  '/lib/systemd/systemd',
  '/usr/lib/systemd/systemd',
  '/usr/sbin/init',
]);

/** `systemd` when the command is an init program (it gets PID 1), else `exec`. */
export function guestMode(
  entrypoint: readonly string[],
  cmd: readonly string[],
): 'exec' | 'systemd' {
  return INIT_PROGRAMS.has(entrypoint[0] ?? cmd[0] ?? '') ? 'systemd' : 'exec';
}

export interface GuestConfigInput {
  readonly image: Image;
  readonly hostname: string;
  /** Replaces the image's CMD (like `docker run IMAGE CMD...`). */
  readonly cmd?: readonly string[];
  readonly entrypoint?: readonly string[];
  /** `KEY=VALUE` pairs added to (and overriding) the image's env. */
  readonly env?: readonly string[];
  readonly workdir?: string;
  readonly user?: string;
  readonly stdin?: boolean;
  readonly tty?: boolean;
  /** No main command: the guest runs only its agent (a build's RUN steps come as execs). */
  readonly agent?: boolean;
}

/**
 * Merge the image's metadata with the request, docker-style: CMD given on
 * the command line replaces the image's CMD; the entrypoint stays unless
 * replaced; env entries override by key. An image whose command is an init
 * (`/sbin/init`, systemd) boots in systemd mode.
 */
export function buildGuestConfig(input: GuestConfigInput): GuestConfig {
  const img = input.image;
  const entrypoint = [...(input.entrypoint ?? img.entrypoint ?? [])];
  const cmd = [...(input.cmd ?? img.cmd ?? [])];
  if (entrypoint.length + cmd.length === 0 && !input.agent) {
    throw new VesselError(
      'invalid_argument',
      `image "${img.name}" has no entrypoint or cmd; give a command to run`,
    );
  }
  const env = new Map<string, string>(Object.entries(img.env));
  if (!env.has('PATH'))
    env.set('PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  for (const kv of input.env ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0)
      throw new VesselError('invalid_argument', `environment entry "${kv}" must be KEY=VALUE`);
    env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  const argv0 = entrypoint[0] ?? cmd[0] ?? '';
  return {
    version: 1,
    mode: input.agent ? 'agent' : INIT_PROGRAMS.has(argv0) ? 'systemd' : 'exec',
    entrypoint,
    cmd,
    env: [...env].map(([k, v]) => `${k}=${v}`),
    workdir: input.workdir ?? img.working_dir ?? '/',
    user: input.user ?? img.user ?? '0:0',
    hostname: input.hostname,
    root_device_serial: ROOT_SERIAL,
    overlay_device_serial: OVERLAY_SERIAL,
    control_port: CONTROL_PORT,
    stdio: { stdin: input.stdin ?? false, tty: input.tty ?? false, window: MAIN_WINDOW },
  };
}

/** Write the config disk: the JSON, NUL-padded to a multiple of 4 KiB. */
export async function writeConfigDisk(file: string, config: GuestConfig): Promise<void> {
  const json = Buffer.from(JSON.stringify(config), 'utf8');
  const size = Math.ceil((json.length + 1) / 4096) * 4096;
  const buf = Buffer.alloc(size);
  json.copy(buf);
  await fs.writeFile(file, buf, { mode: 0o600 });
}

/** A sparse ext4 disk for the overlay's upper layer. */
export async function createOverlayDisk(file: string, sizeBytes: number): Promise<void> {
  const fh = await fs.open(file, 'wx', 0o600);
  try {
    await fh.truncate(sizeBytes);
  } finally {
    await fh.close();
  }
  await run('mkfs.ext4', [
    '-q',
    '-F',
    '-L',
    'vessel-overlay',
    '-E',
    'lazy_itable_init=1,lazy_journal_init=1',
    file,
  ]);
}
