/**
 * Files in a Running instance's guest, through the agent: tar archives in and
 * out (`vessel cp`, Docker's `/archive`), and single-file read, write, list and
 * remove (the files API). Every byte is streamed under the agent's COPY_WINDOW
 * credit, so no copy is buffered whole in the daemon. Takes no lock: a copy
 * racing a stop fails with the closed channel's error.
 */
import type { Readable } from 'node:stream';
import { VesselError } from '../core/errors.js';
import type { PathInfo } from '../core/wire-ops.js';
import type { DirEntry, GuestClient } from '../guest/index.js';
import type { InstanceCore } from './core.js';

export type { DirEntry } from '../guest/index.js';

/** What `GET /files` finds at a path: a directory's entries, or a file's bytes. */
export type OpenedPath =
  | { readonly kind: 'dir'; readonly entries: DirEntry[] }
  | { readonly kind: 'file'; readonly size: number; readonly stream: Readable };

const MAX_PATH = 4096;

export function checkPath(path: string): void {
  if (!path.startsWith('/') || path.length > MAX_PATH || path.includes('\0')) {
    throw new VesselError(
      'invalid_argument',
      `path "${path.slice(0, 200)}" must be absolute (at most ${MAX_PATH} characters, no NUL)`,
      { details: { field: 'path' } },
    );
  }
}

/** The guest of a Running instance, or 409 naming the state. */
function runningGuest(
  core: InstanceCore,
  idOrName: string,
  op: string,
  path: string,
): { guest: GuestClient; name: string } {
  const row = core.row(idOrName);
  checkPath(path);
  const guest = core.runtimes.get(row.id)?.guest;
  if (row.state !== 'Running' || !guest) {
    throw new VesselError(
      'conflict',
      `instance "${row.name}" is ${row.state}; ${op} needs it Running`,
      {
        details: { instance: row.name, state: row.state },
      },
    );
  }
  return { guest, name: row.name };
}

function notFound(name: string, path: string): VesselError {
  return new VesselError('not_found', `no such path "${path}" in instance "${name}"`, {
    details: { instance: name, path },
  });
}

async function existing(
  guest: GuestClient,
  name: string,
  path: string,
  follow: boolean,
): Promise<PathInfo> {
  const info = await guest.stat(path, follow);
  if (!info.exists) {
    if (info.error) {
      throw new VesselError(
        'conflict',
        `cannot stat "${path}" in instance "${name}": ${info.error}`,
        {
          details: { instance: name, path },
        },
      );
    }
    throw notFound(name, path);
  }
  return info;
}

/** A tar stream of `path` (a file, directory or symlink, not followed): Docker's `GET /archive`. */
export async function archiveOut(
  core: InstanceCore,
  idOrName: string,
  path: string,
): Promise<{ stream: Readable; stat: PathInfo }> {
  const { guest, name } = runningGuest(core, idOrName, 'copying out', path);
  const stat = await existing(guest, name, path, false);
  return { stream: guest.copyOut(path), stat };
}

/**
 * Unpack the tar stream `body` into the directory `path` (it must exist):
 * Docker's `PUT /archive`. Entry names are the guest's business (it is the
 * guest's own filesystem); the guest rejects `..` entries.
 */
export async function archiveIn(
  core: InstanceCore,
  idOrName: string,
  path: string,
  body: Readable,
): Promise<void> {
  const { guest, name } = runningGuest(core, idOrName, 'copying in', path);
  const info = await existing(guest, name, path, true);
  if (!info.is_dir) {
    throw new VesselError(
      'invalid_argument',
      `"${path}" in instance "${name}" is not a directory; an archive is unpacked into a directory`,
      { details: { instance: name, path } },
    );
  }
  await guest.copyIn(path, body);
}

/** `GET /files`: a directory's entries, or a file's bytes (symlinks followed). */
export async function openPath(
  core: InstanceCore,
  idOrName: string,
  path: string,
): Promise<OpenedPath> {
  const { guest, name } = runningGuest(core, idOrName, 'reading files', path);
  const info = await existing(guest, name, path, true);
  if (info.is_dir) return { kind: 'dir', entries: await guest.list(path) };
  return { kind: 'file', size: info.size ?? 0, stream: guest.copyOut(path, { raw: true }) };
}

/** `PUT /files`: write `body` to the file `path` with `mode`, parents created. */
export async function writeFile(
  core: InstanceCore,
  idOrName: string,
  path: string,
  mode: number,
  body: Readable,
): Promise<void> {
  const { guest } = runningGuest(core, idOrName, 'writing files', path);
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new VesselError('invalid_argument', `mode ${mode} is not a permission mode (0..07777)`, {
      details: { field: 'mode' },
    });
  }
  await guest.copyIn(path, body, { raw: { mode } });
}

/** `DELETE /files`: remove `path` (`recursive` for a non-empty directory). */
export async function removePath(
  core: InstanceCore,
  idOrName: string,
  path: string,
  recursive: boolean,
): Promise<void> {
  const { guest, name } = runningGuest(core, idOrName, 'removing files', path);
  try {
    await guest.remove(path, recursive);
  } catch (err) {
    if (err instanceof VesselError && err.code === 'not_found') throw notFound(name, path);
    throw err;
  }
}

/**
 * The instance's root filesystem changes as an OCI layer tar (the guest
 * reads its overlay upper directory; guest-agent/PROTOCOL.md, DIFF). Used
 * by builds after a RUN step; the stream is the guest's word: hostile.
 */
export function diffOut(
  core: InstanceCore,
  idOrName: string,
  exclude: readonly string[],
): Readable {
  const { guest } = runningGuest(core, idOrName, 'reading its changes', '/');
  return guest.diff(exclude);
}
