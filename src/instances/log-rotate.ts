/**
 * Bounded instance logs. The console log and the app log are appended by the
 * daemon through one fd per VM that lives on the runtime record; once a file
 * passes its limit it is copied to `<file>.1` (replacing the previous one) and
 * truncated in place ("copytruncate"), so at most about twice the limit stays
 * on disk per log however fast a guest writes.
 *
 * Why copytruncate and not rename + reopen: the fd is owned by the runtime
 * record (opened in `attach`, closed in `onExit`/`detach`) and must stay valid
 * for its whole life; a truncated O_APPEND fd simply writes at the new end.
 * The copy runs synchronously between two appends on the daemon's one
 * thread, so no byte is written while it is taken, and the app log (framed)
 * is only ever cut on a frame boundary. Alternative: reopen a new fd per
 * rotation, which needs the runtime record to own a rotating writer.
 *
 * Readers (logs.ts) read `<file>.1` first; a follower notices a rotation by
 * the generation counter below and finishes its old offset in `<file>.1`,
 * whose offsets are the truncated file's offsets.
 */
import { copyFileSync, fstatSync, ftruncateSync, renameSync, rmSync } from 'node:fs';

/** Per log file; the default keeps at most ~32 MiB per log and instance. */
export const DEFAULT_LOG_MAX_BYTES = 16 * 1024 * 1024;
/** Below this a rotation would copy more often than it writes. */
const MIN_LOG_MAX_BYTES = 64 * 1024;

/**
 * The limit: `VESSEL_LOG_MAX_BYTES` (bytes) when set and sane, else the default.
 * An environment knob until the config file grows an `instances.log_max_bytes`.
 */
export function logMaxBytes(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.VESSEL_LOG_MAX_BYTES;
  if (raw === undefined || raw === '') return DEFAULT_LOG_MAX_BYTES;
  const n = Number(raw);
  return Number.isSafeInteger(n) && n >= MIN_LOG_MAX_BYTES ? n : DEFAULT_LOG_MAX_BYTES;
}

/** Where the previous part of `file` is kept. */
export function rotatedPath(file: string): string {
  return `${file}.1`;
}

/** How many times each file was rotated in this process (followers compare it). */
const generations = new Map<string, number>();

export function rotationGeneration(file: string): number {
  return generations.get(file) ?? 0;
}

/** Forget a file's counter (the instance is gone). */
export function forgetRotation(file: string): void {
  generations.delete(file);
}

/**
 * Call right after a complete append to `fd` (opened with `'a'` on `file`):
 * rotates when the file reached `max` bytes. Returns whether it rotated.
 */
export function rotateIfNeeded(fd: number, file: string, max = logMaxBytes()): boolean {
  if (fstatSync(fd).size < max) return false;
  // Through a temp name, so a reader holding the old `.1` open keeps a whole file.
  const tmp = `${rotatedPath(file)}.tmp`;
  try {
    copyFileSync(file, tmp);
    renameSync(tmp, rotatedPath(file));
  } catch {
    // No room for the copy (disk full) or the directory is going: the bound wins over
    // keeping the older half, so truncate anyway.
    rmSync(tmp, { force: true });
  }
  ftruncateSync(fd, 0);
  generations.set(file, rotationGeneration(file) + 1);
  return true;
}
