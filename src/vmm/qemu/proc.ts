/**
 * Process and socket helpers for the QEMU backend: waiting for a socket file
 * to appear (fs.watch, bounded) and checking whether a pid still runs.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { errnoCode } from '../../core/errors.js';
import { vmmError } from '../errors.js';

/**
 * Is `pid` a live process (not a zombie)? A zombie counts as gone: QEMU has
 * exited and only waits for its parent to reap it.
 */
export async function pidAlive(pid: number): Promise<boolean> {
  try {
    const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
    // Field 3 follows the command name in parentheses, which may contain spaces.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ESRCH') return false;
    throw err;
  }
}

/** The NUL-separated command line of `pid`, or undefined when it is gone. */
export async function pidCmdline(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await fsp.readFile(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((s) => s !== '');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ESRCH') return undefined;
    throw err;
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.access(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * Wait until `file` exists, watching its directory (no sleep loop). Rejects
 * after `timeoutMs`, or as soon as `abort` settles (e.g. the process exited).
 */
export async function waitForFile(
  file: string,
  timeoutMs: number,
  abort: Promise<unknown>,
): Promise<void> {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const ac = new AbortController();
  const watcher = fs.watch(dir, { signal: ac.signal });
  try {
    // Subscribe first, then check: a file created in between is not missed.
    const appeared = new Promise<void>((resolve, reject) => {
      watcher.on('change', (_type, name) => {
        if (name === null || String(name) === base) {
          void exists(file).then((ok) => ok && resolve(), reject);
        }
      });
      watcher.on('error', (err) => {
        if (errnoCode(err) !== 'ABORT_ERR') reject(err);
      });
    });
    appeared.catch(() => undefined);
    if (await exists(file)) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(vmmError('timeout', `${file} did not appear within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    const aborted = abort.then(() => {
      throw vmmError('spawn', `the process exited before ${file} appeared`);
    });
    aborted.catch(() => undefined); // settles after we return when the VM keeps running
    try {
      await Promise.race([appeared, timeout, aborted]);
    } finally {
      clearTimeout(timer);
    }
  } finally {
    ac.abort();
  }
}

/** Remove a stale socket file; a missing file is fine. */
export async function removeStale(file: string): Promise<void> {
  await fsp.rm(file, { force: true });
}
