import fs from 'node:fs';
import net from 'node:net';
import { VesselError, errnoCode } from '../core/errors.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/** A live PID that runs node is taken to be a daemon still starting up. */
function looksLikeVessel(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('node');
  } catch {
    return false;
  }
}

/** Does something answer on the unix socket? */
export function socketAnswers(socket: string, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect(socket);
    const done = (ok: boolean): void => {
      conn.destroy();
      resolve(ok);
    };
    conn.setTimeout(timeoutMs, () => done(false));
    conn.once('connect', () => done(true));
    conn.once('error', () => done(false));
  });
}

/**
 * Claim the data directory for this process: create the PID file
 * exclusively; a PID file of a dead process is stale and replaced. Returns
 * the release function.
 */
export async function acquirePidFile(file: string, socket: string): Promise<() => void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o644 });
      return () => {
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
        } catch {
          // already gone
        }
      };
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    if (
      Number.isInteger(pid) &&
      pid > 0 &&
      pid !== process.pid &&
      alive(pid) &&
      ((await socketAnswers(socket)) || looksLikeVessel(pid))
    ) {
      throw new VesselError(
        'daemon_running',
        `a Vessel daemon (pid ${pid}) already serves this data directory`,
        {
          details: { pid },
        },
      );
    }
    fs.rmSync(file, { force: true });
  }
  throw new VesselError(
    'daemon_running',
    `could not claim the PID file ${file}; another daemon is starting`,
  );
}
