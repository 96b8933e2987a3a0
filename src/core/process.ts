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
  readonly signal?: AbortSignal;
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
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd,
      signal: options.signal,
      timeout: options.timeoutMs,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_CAPTURE) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_CAPTURE) stderr += d;
    });
    child.on('error', (err) => {
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
