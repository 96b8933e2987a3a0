import { spawn } from 'node:child_process';
import { VesselError, errnoCode } from './errors.js';

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number;
}

export interface RunOptions {
  readonly timeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Resolve even on a non-zero exit instead of throwing `tool_failed`. */
  readonly allowFailure?: boolean;
  /** Aborting kills the program (SIGKILL; SIGTERM to the group with `processGroup`). */
  readonly signal?: AbortSignal;
  /** Each line of output (stdout and stderr), as it comes: progress of long tools. */
  readonly onLine?: (line: string) => void;
  /**
   * Start the program in its own process group, and end the whole group on
   * abort: tools that fork helpers (mmdebstrap's apt and dpkg) leave none behind.
   */
  readonly processGroup?: boolean;
}

const MAX_CAPTURE = 1024 * 1024;

/**
 * Run a program with an argument array (never a shell string) and capture its
 * output. A missing program is `tool_missing`; a non-zero exit is `tool_failed`
 * with the tail of stderr in the message.
 */
export function run(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const group = options.processGroup === true;
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd,
      timeout: options.timeoutMs,
      killSignal: 'SIGKILL',
      ...(group ? { detached: true } : { signal: options.signal }),
    });
    const endGroup = (): void => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
    };
    if (group) options.signal?.addEventListener('abort', endGroup, { once: true });
    let stdout = '';
    let stderr = '';
    const partial = { stdout: '', stderr: '' };
    const lines = (from: 'stdout' | 'stderr', d: string): void => {
      if (!options.onLine) return;
      const parts = (partial[from] + d).split('\n');
      partial[from] = parts.pop() ?? '';
      for (const l of parts) options.onLine(l.replace(/\r$/, ''));
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_CAPTURE) stdout += d;
      lines('stdout', d);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_CAPTURE) stderr += d;
      lines('stderr', d);
    });
    child.on('error', (err) => {
      options.signal?.removeEventListener('abort', endGroup);
      if (errnoCode(err) === 'ENOENT') {
        reject(
          new VesselError('tool_missing', `${file} is not installed (not found on PATH)`, {
            cause: err,
          }),
        );
      } else {
        reject(
          new VesselError('tool_failed', `${file} could not run: ${err.message}`, { cause: err }),
        );
      }
    });
    child.on('close', (code, signal) => {
      options.signal?.removeEventListener('abort', endGroup);
      for (const from of ['stdout', 'stderr'] as const)
        if (partial[from]) options.onLine?.(partial[from].replace(/\r$/, ''));
      const exit = code ?? 128;
      if (exit !== 0 && !options.allowFailure) {
        const tail =
          stderr.trim().split('\n').slice(-5).join('\n') ||
          stdout.trim().split('\n').slice(-5).join('\n');
        const how = signal ? `was killed by ${signal}` : `exited with code ${exit}`;
        reject(
          new VesselError('tool_failed', `${file} ${how}${tail ? `: ${tail}` : ''}`, {
            details: { program: file, args: [...args], code: exit },
          }),
        );
        return;
      }
      resolve({ stdout, stderr, code: exit });
    });
  });
}
