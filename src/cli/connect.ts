import path from 'node:path';
import type { Readable } from 'node:stream';
import { VesselClient } from '../client/index.js';
import { VesselError, isVesselError } from '../core/errors.js';
import { DEFAULT_DATA_DIR, Paths } from '../core/paths.js';

export interface GlobalOptions {
  dataDir?: string;
  host?: string;
  token?: string;
  json?: boolean;
}

export function dataDirOf(opts: GlobalOptions): string {
  return opts.dataDir ?? process.env.VESSEL_DATA_DIR ?? DEFAULT_DATA_DIR;
}

/**
 * Start `vessel daemon` in the background and wait for its ready
 * notification on an inherited pipe (fd 3) — no polling of the socket.
 */
async function startDaemon(dataDir: string): Promise<void> {
  // Imported here: every command connects, few start the daemon (bench P8).
  const [{ spawn }, { default: fs }] = await Promise.all([
    import('node:child_process'),
    import('node:fs'),
  ]);
  const paths = new Paths(dataDir);
  fs.mkdirSync(paths.logsDir, { recursive: true, mode: 0o700 });
  const log = fs.openSync(paths.daemonLog, 'a', 0o600);
  const entry = process.argv[1];
  if (!entry)
    throw new VesselError(
      'daemon_unreachable',
      'cannot locate the vessel entry point to start the daemon',
    );
  const child = spawn(
    process.execPath,
    [entry, '--data-dir', dataDir, 'daemon', '--ready-fd', '3'],
    {
      detached: true,
      stdio: ['ignore', log, log, 'pipe'],
      env: process.env,
    },
  );
  fs.closeSync(log);
  const pipe = child.stdio[3] as Readable;
  const answer = await new Promise<string>((resolve) => {
    let text = '';
    const timer = setTimeout(
      () => resolve('error the daemon did not report ready within 30 s'),
      30_000,
    );
    pipe.setEncoding('utf8');
    pipe.on('data', (d: string) => {
      text += d;
      if (text.includes('\n')) {
        clearTimeout(timer);
        resolve(text.trim());
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(text.trim() || `error the daemon exited with code ${code ?? 'null'}`);
    });
  });
  pipe.destroy();
  child.unref();
  if (answer !== 'ready') {
    throw new VesselError(
      'daemon_unreachable',
      `could not start the Vessel daemon: ${answer.replace(/^error /, '')} (log: ${paths.daemonLog})`,
    );
  }
}

/**
 * A client for the daemon named by the options: TCP when `--host` is given,
 * else the unix socket in the data dir, starting the daemon when none runs.
 */
export async function connect(opts: GlobalOptions, autostart = true): Promise<VesselClient> {
  const host = opts.host ?? process.env.VESSEL_HOST;
  if (host) {
    const token = opts.token ?? process.env.VESSEL_TOKEN;
    if (!token)
      throw new VesselError(
        'invalid_argument',
        '--host needs a bearer token (--token or VESSEL_TOKEN)',
      );
    return new VesselClient({ baseUrl: host.includes('://') ? host : `http://${host}`, token });
  }
  const dataDir = dataDirOf(opts);
  const socketPath = new Paths(dataDir).socket;
  const client = new VesselClient({ socketPath });
  try {
    await client.health();
    return client;
  } catch (err) {
    if (!autostart || !isVesselError(err, 'daemon_unreachable')) throw err;
  }
  await startDaemon(path.resolve(dataDir));
  await client.health();
  return client;
}
