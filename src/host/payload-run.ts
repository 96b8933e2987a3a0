import { spawn } from 'node:child_process';
import { errorMessage } from '../core/errors.js';
import { MARK_DONE, MARK_LONG_MODE, MARK_RESET } from './bios-payload.js';

/** How far the payload got: nothing on the serial port, 'R', 'L', or 'D'. */
export type PayloadStage = 'none' | 'real-mode' | 'long-mode' | 'done';

export interface PayloadRunOptions {
  readonly qemu: string;
  readonly accel: 'kvm' | 'tcg';
  /** `-cpu` model; omitted means QEMU's default for the accelerator. */
  readonly cpu?: string;
  readonly machine: string;
  readonly biosPath: string;
  /** Limit for QEMU to start and the payload to reach long mode. */
  readonly startupMs: number;
  /** Limit for the timed part ('L' → 'D') once long mode is reached. */
  readonly deadlineMs: number;
}

export interface PayloadRun {
  /** `done`: 'D' seen. `timeout`: killed at a limit. `exited`: QEMU ended first. */
  readonly outcome: 'done' | 'timeout' | 'exited';
  readonly stage: PayloadStage;
  /** Milliseconds from 'L' to 'D' (only when done). */
  readonly ms?: number;
  /** Last lines QEMU wrote to stderr, for the reason text. */
  readonly stderr: string;
  readonly exitCode: number | null;
}

/** The QEMU argument array for one probe run. Pure, for tests and for the README. */
export function payloadArgs(
  options: Omit<PayloadRunOptions, 'qemu' | 'startupMs' | 'deadlineMs'>,
): string[] {
  return [
    ...['-accel', options.accel],
    ...(options.cpu === undefined ? [] : ['-cpu', options.cpu]),
    ...['-machine', options.machine, '-m', '16M', '-smp', '1'],
    ...['-nodefaults', '-no-user-config', '-no-reboot', '-display', 'none'],
    ...['-serial', 'stdio', '-bios', options.biosPath],
  ];
}

function tail(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return lines.slice(-3).join('; ').slice(0, 400);
}

/**
 * Boot the payload once and time it. QEMU is spawned directly (argument
 * array) rather than through `run()` because the timing needs the moment each
 * serial byte arrives, not the output at exit.
 *
 * QEMU never outlives this call: it is SIGKILLed as soon as 'D' arrives or a
 * limit passes, the promise settles only after the process has been reaped,
 * and a process-exit hook kills it should Node exit first.
 */
export function runPayload(options: PayloadRunOptions): Promise<PayloadRun> {
  return new Promise((resolve) => {
    const child = spawn(options.qemu, payloadArgs(options), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stage: PayloadStage = 'none';
    let longModeAt = 0;
    let ms: number | undefined;
    let outcome: PayloadRun['outcome'] = 'exited';
    let stderr = '';
    let settled = false;

    const kill = (): void => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    };
    process.once('exit', kill);
    let timer = setTimeout(() => {
      outcome = 'timeout';
      kill();
    }, options.startupMs);

    const finish = (exitCode: number | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      process.removeListener('exit', kill);
      resolve({
        outcome,
        stage,
        ...(ms === undefined ? {} : { ms }),
        stderr: tail(stderr),
        exitCode,
      });
    };

    child.stdout.on('data', (chunk: Buffer) => {
      for (const byte of chunk) {
        if (byte === MARK_RESET && stage === 'none') {
          stage = 'real-mode';
        } else if (byte === MARK_LONG_MODE && stage !== 'done') {
          stage = 'long-mode';
          longModeAt = performance.now();
          clearTimeout(timer);
          timer = setTimeout(() => {
            outcome = 'timeout';
            kill();
          }, options.deadlineMs);
        } else if (byte === MARK_DONE && stage === 'long-mode') {
          stage = 'done';
          ms = Math.round((performance.now() - longModeAt) * 10) / 10;
          outcome = 'done';
          clearTimeout(timer);
          kill();
        }
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 16_384) stderr += d;
    });
    child.on('error', (err) => {
      stderr += `\n${errorMessage(err)}`;
      kill();
      // 'close' follows when the process had started; when it never did, settle here.
      if (child.pid === undefined) finish(null);
    });
    child.on('close', (code) => finish(code));
  });
}
