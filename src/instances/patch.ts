/**
 * Changing an instance in place (`PATCH /instances/{id}`): environment,
 * tags and expiry; and the command overrides a start may carry.
 *
 * The environment is the main command's: a running main command keeps the
 * one it started with, the next boot gets the new one. Exec inherits the
 * instance's environment, so new execs see the change at once.
 */
import { VesselError } from '../core/errors.js';
import type { Tags } from '../core/tags.js';
import type { InstanceCore } from './core.js';
import { guestMode } from './guest-config.js';
import type { InstanceState } from './state.js';

export interface InstancePatch {
  /** Merged into the environment by key. */
  readonly env?: Readonly<Record<string, string>>;
  /** Replaces the tags. */
  readonly tags?: Tags;
  /** New expiry; null turns expiry off. */
  readonly expires_at?: string | null;
}

/** Merge `KEY=VALUE` entries by key: existing keys keep their place, new ones are appended. */
export function mergeEnv(
  base: readonly string[],
  changes: Readonly<Record<string, string>>,
): string[] {
  const out = base.map((kv) => {
    const key = kv.slice(0, kv.indexOf('='));
    return Object.hasOwn(changes, key) ? `${key}=${changes[key]}` : kv;
  });
  const have = new Set(base.map((kv) => kv.slice(0, kv.indexOf('='))));
  for (const [k, v] of Object.entries(changes)) if (!have.has(k)) out.push(`${k}=${v}`);
  return out;
}

/** Apply a patch under the instance's lock; publishes an `update` event. */
export async function update(
  core: InstanceCore,
  id: string,
  patch: InstancePatch,
  now = Date.now(),
): Promise<void> {
  await core.locked(id, () => {
    const row = core.row(id);
    if (patch.expires_at !== undefined && row.expires_at && Date.parse(row.expires_at) <= now) {
      throw new VesselError(
        'conflict',
        `instance "${row.name}" expired at ${row.expires_at} and is being deleted; its expiry cannot change`,
        { details: { instance: row.name, expires_at: row.expires_at } },
      );
    }
    const guest = row.guest as { env?: string[] };
    const next = {
      ...row,
      ...(patch.env ? { guest: { ...row.guest, env: mergeEnv(guest.env ?? [], patch.env) } } : {}),
      ...(patch.tags ? { tags: { ...patch.tags } } : {}),
      ...(patch.expires_at !== undefined ? { expires_at: patch.expires_at } : {}),
    };
    core.save(next, row.state as InstanceState);
    core.emit('update', core.row(id));
    return Promise.resolve();
  });
}

export interface CommandOverrides {
  readonly entrypoint?: readonly string[];
  readonly cmd?: readonly string[];
}

/**
 * Start with other commands: stored on the row, so this boot and later ones
 * run them (the hypeman API's start body). Call under the instance's lock.
 */
export function applyCommandOverrides(
  core: InstanceCore,
  id: string,
  overrides: CommandOverrides,
): void {
  if (overrides.entrypoint === undefined && overrides.cmd === undefined) return;
  const row = core.row(id);
  const g = row.guest as { entrypoint?: string[]; cmd?: string[] };
  const entrypoint = [...(overrides.entrypoint ?? g.entrypoint ?? [])];
  const cmd = [...(overrides.cmd ?? g.cmd ?? [])];
  if (entrypoint.length + cmd.length === 0) {
    throw new VesselError(
      'invalid_argument',
      `instance "${row.name}" would have no command to run: give entrypoint or cmd`,
    );
  }
  const guest = { ...row.guest, entrypoint, cmd, mode: guestMode(entrypoint, cmd) };
  core.repo.update({ ...row, guest });
}
