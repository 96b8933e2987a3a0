/**
 * Save a VM's state to a file through QMP migration (QEMU 7.2 has no `file:`
 * migration URI, so `exec:cat > <path>`).
 */
import { vmmError } from '../errors.js';
import type { QmpClient, QmpEvent } from './qmp.js';

/** Migration bandwidth cap for snapshots: effectively unlimited (QEMU's default is 32 MiB/s). */
const SNAPSHOT_BANDWIDTH = 64 * 1024 * 1024 * 1024;

/** Quote for /bin/sh: QEMU runs the `exec:` command through the shell. */
export function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

interface MigrateInfo {
  readonly status?: string;
  readonly 'error-desc'?: string;
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

/**
 * Pause the VM (if running) and write its state to `path`. Completion comes
 * from the MIGRATION event (subscribed before the command, then checked once
 * with `query-migrate`, so a fast completion is not missed). The VM is left
 * paused (`postmigrate`); `cont` resumes it.
 */
export async function saveSnapshot(qmp: QmpClient, path: string): Promise<void> {
  const status = await qmp.execute<{ status: string }>('query-status');
  if (status.status === 'running') await qmp.execute('stop');
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'events', state: true }],
  });
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SNAPSHOT_BANDWIDTH });

  let off: (() => void) | undefined;
  const finished = new Promise<string>((resolve, reject) => {
    off = qmp.onEvent((ev: QmpEvent) => {
      if (ev.event !== 'MIGRATION') return;
      const s = ev.data.status;
      if (typeof s === 'string' && TERMINAL.has(s)) resolve(s);
    });
    qmp.closed.then(
      () => reject(vmmError('unavailable', `QMP closed while saving a snapshot to ${path}`)),
      reject,
    );
  });
  finished.catch(() => undefined); // may settle after we return
  try {
    await qmp.execute('migrate', { uri: `exec:cat > ${shQuote(path)}` });
    const now = await qmp.execute<MigrateInfo>('query-migrate');
    const result =
      now.status !== undefined && TERMINAL.has(now.status) ? now.status : await finished;
    if (result !== 'completed') {
      const info = await qmp.execute<MigrateInfo>('query-migrate');
      throw vmmError(
        'failed',
        `saving a snapshot to ${path} ${result}: ${info['error-desc'] ?? 'no detail from QEMU'}`,
        { details: { migrationStatus: result } },
      );
    }
  } finally {
    off?.();
  }
}
