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

  await migrate(qmp, 'migrate', `exec:cat > ${shQuote(path)}`, `saving a snapshot to ${path}`);
}

/**
 * Load a state saved by {@link saveSnapshot} into a VM started with
 * `-incoming defer` (and `-S`): it stays paused afterwards.
 */
export async function loadSnapshot(qmp: QmpClient, path: string): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'events', state: true }],
  });
  await migrate(qmp, 'migrate-incoming', `exec:cat ${shQuote(path)}`, `restoring ${path}`);
}

/** Run a migration command and wait for its terminal status (event first, then one query). */
async function migrate(qmp: QmpClient, command: string, uri: string, what: string): Promise<void> {
  let off: (() => void) | undefined;
  const finished = new Promise<string>((resolve, reject) => {
    off = qmp.onEvent((ev: QmpEvent) => {
      if (ev.event !== 'MIGRATION') return;
      const s = ev.data.status;
      if (typeof s === 'string' && TERMINAL.has(s)) resolve(s);
    });
    qmp.closed.then(() => reject(vmmError('unavailable', `QMP closed while ${what}`)), reject);
  });
  finished.catch(() => undefined); // may settle after we return
  try {
    await qmp.execute(command, { uri });
    const now = await qmp.execute<MigrateInfo>('query-migrate');
    const result =
      now.status !== undefined && TERMINAL.has(now.status) ? now.status : await finished;
    if (result !== 'completed') {
      const info = await qmp.execute<MigrateInfo>('query-migrate');
      throw vmmError(
        'failed',
        `${what}: migration ${result}: ${info['error-desc'] ?? 'no detail from QEMU'}`,
        { details: { migrationStatus: result } },
      );
    }
  } finally {
    off?.();
  }
}
