/**
 * Save and load a VM's state through QMP migration over a unix socket in the VM's run
 * directory: the daemon writes (or reads) the state file itself. QEMU never spawns a
 * helper (its seccomp sandbox forbids it: no `exec:cat`) and never opens a path outside
 * its jail.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { vmmError } from '../errors.js';
import type { QmpClient, QmpEvent } from './qmp.js';

/** Migration bandwidth cap for snapshots: effectively unlimited (QEMU's default is 32 MiB/s). */
const SNAPSHOT_BANDWIDTH = 64 * 1024 * 1024 * 1024;

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
export async function saveSnapshot(qmp: QmpClient, file: string, runDir: string): Promise<void> {
  const status = await qmp.execute<{ status: string }>('query-status');
  if (status.status === 'running') await qmp.execute('stop');
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'events', state: true }],
  });
  await qmp.execute('migrate-set-parameters', { 'max-bandwidth': SNAPSHOT_BANDWIDTH });
  const sock = path.join(runDir, 'migrate-out.sock');
  await fsp.rm(sock, { force: true });
  const server = net.createServer();
  server.listen(sock);
  await once(server, 'listening');
  try {
    // The hypervisor runs as the run directory's owner: it must be able to connect.
    const owner = await fsp.stat(runDir);
    await fsp.chown(sock, owner.uid, owner.gid);
    let connected = false;
    const written = once(server, 'connection').then(([conn]) => {
      connected = true;
      return pipeline(conn as net.Socket, fs.createWriteStream(file, { mode: 0o600 }));
    });
    written.catch(() => undefined); // awaited below, after the migration's own status
    try {
      await migrate(qmp, 'migrate', `unix:${sock}`, `saving a snapshot to ${file}`);
    } catch (err) {
      // QEMU only sees a broken pipe; the cause is usually our side (ENOSPC writing the file).
      if (!connected) throw err;
      const cause = await written.then(
        () => undefined,
        (e: unknown) => e,
      );
      throw cause ?? err;
    }
    await written;
  } finally {
    server.close();
    await fsp.rm(sock, { force: true });
  }
}

/**
 * Load a state saved by {@link saveSnapshot} into a VM started with
 * `-incoming defer` (and `-S`): it stays paused afterwards.
 */
export async function loadSnapshot(qmp: QmpClient, file: string, runDir: string): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: [{ capability: 'events', state: true }],
  });
  const sock = path.join(runDir, 'migrate-in.sock');
  await fsp.rm(sock, { force: true });
  await fsp.access(file).catch((err: unknown) => {
    throw vmmError('failed', `restoring ${file}: cannot read the saved state`, { cause: err });
  });
  // QEMU listens once migrate-incoming is accepted; then the daemon streams the file in.
  await migrate(qmp, 'migrate-incoming', `unix:${sock}`, `restoring ${file}`, () =>
    streamInto(sock, file),
  );
}

/**
 * Connect to the hypervisor's incoming socket and send it the file. QEMU closes its end as
 * soon as it has read the end of the stream, which can race our own end of writing: a
 * failure here counts only when the migration itself fails (migrate() reports that).
 */
async function streamInto(sock: string, file: string): Promise<void> {
  const conn = net.createConnection({ path: sock });
  await once(conn, 'connect');
  await pipeline(fs.createReadStream(file), conn).catch(() => undefined);
}
/** Run a migration command and wait for its terminal status (event first, then one query). */
async function migrate(
  qmp: QmpClient,
  command: string,
  uri: string,
  what: string,
  feed?: () => Promise<void>,
): Promise<void> {
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
    const fed = feed?.();
    fed?.catch(() => undefined); // a failed feed also fails the migration, reported below
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
    await fed;
  } finally {
    off?.();
  }
}
