/** `GET /instances/{id}/stat`: a path in the guest, through the agent. */
import { VesselError } from '../core/errors.js';
import type { PathInfo } from '../core/wire-ops.js';
import type { InstanceCore } from './core.js';

/** Stat `path` in a Running instance (`followLinks`: stat, else lstat). Takes no lock. */
export async function statPath(
  core: InstanceCore,
  idOrName: string,
  path: string,
  followLinks: boolean,
): Promise<PathInfo> {
  const row = core.row(idOrName);
  if (!path.startsWith('/')) {
    throw new VesselError('invalid_argument', `path "${path}" must be absolute`, {
      details: { field: 'path' },
    });
  }
  const guest = core.runtimes.get(row.id)?.guest;
  if (row.state !== 'Running' || !guest) {
    throw new VesselError(
      'conflict',
      `instance "${row.name}" is ${row.state}; stat needs it Running`,
      { details: { instance: row.name, state: row.state } },
    );
  }
  const info = await guest.stat(path, followLinks);
  // Hypeman's PathInfo: link_target only for a symlink, error only for a failure.
  return {
    ...info,
    ...(info.is_symlink ? {} : { link_target: null }),
  };
}
