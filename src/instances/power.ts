/** Start, stop, pause and resume: one checked hop each, under the instance's lock. */
import fs from 'node:fs/promises';
import { VesselError } from '../core/errors.js';
import { boot } from './boot.js';
import type { InstanceCore } from './core.js';
import { applyCommandOverrides, type CommandOverrides } from './patch.js';
import { onExit } from './runtime.js';
import { snapshotPaths } from './snapshot.js';
import { assertTransition, type InstanceState } from './state.js';

/** Boot a stopped instance; its writable disk persists. */
export async function start(
  core: InstanceCore,
  id: string,
  overrides: CommandOverrides = {},
): Promise<void> {
  await core.locked(id, async () => {
    const row = core.row(id);
    const state = row.state as InstanceState;
    assertTransition(row.name, state, 'Initializing');
    applyCommandOverrides(core, id, overrides);
    await boot(core, id);
    core.emit('start', core.row(id), { old_state: state });
  });
}

/** Graceful stop (ACPI power-off), forced after `timeoutMs`. A standby instance drops its snapshot. */
export async function stop(core: InstanceCore, id: string, timeoutMs = 10_000): Promise<void> {
  await core.locked(id, async () => {
    const before = core.row(id);
    const rt = core.runtimes.get(id);
    if (!rt) {
      if (before.state === 'Stopped') return;
      assertTransition(before.name, before.state as InstanceState, 'Stopped');
      await fs.rm(snapshotPaths(core.o.paths.instanceDir(id)).dir, {
        recursive: true,
        force: true,
      });
      core.settleStopped(id, null);
    } else {
      rt.ending = 'stop';
      await onExit(core, id, rt, await rt.handle.stop({ graceful: true, timeoutMs }));
    }
    core.emit('stop', core.row(id), { old_state: before.state as InstanceState });
  });
}

/** Freeze the vCPUs; memory and devices stay (QMP `stop`). Call under the instance's lock. */
export async function pauseLocked(core: InstanceCore, id: string): Promise<void> {
  const row = core.row(id);
  assertTransition(row.name, row.state as InstanceState, 'Paused');
  await core.runtime(row).handle.pause();
  core.transition(id, 'Paused');
  core.emit('pause', core.row(id), { old_state: row.state as InstanceState });
}

/** Let a paused instance run again (QMP `cont`). */
export async function resume(core: InstanceCore, id: string): Promise<void> {
  await core.locked(id, async () => {
    const row = core.row(id);
    assertTransition(row.name, row.state as InstanceState, 'Running');
    if (row.state !== 'Paused') {
      throw new VesselError('conflict', `instance "${row.name}" is ${row.state}, not Paused`);
    }
    await core.runtime(row).handle.resume();
    core.transition(id, 'Running');
    core.emit('resume', core.row(id), { old_state: 'Paused' });
  });
}
