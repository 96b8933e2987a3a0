/**
 * Run the real `vessel` CLI (bin/vessel.js) with bytes in and bytes out: stdout and stderr
 * come back as Buffers (or stdout goes to a file descriptor), stdin comes from bytes, a
 * stream, a file descriptor, or a pipe that stays open, and the CLI's own peak RSS is
 * sampled while it runs.
 */
import { spawn, type StdioOptions } from 'node:child_process';
import type { Readable } from 'node:stream';
import { BIN } from './cli.js';
import { sampleMemory } from './proc-mem.js';

export interface BytesOptions {
  /** Written to the CLI's stdin, then EOF. */
  readonly input?: Buffer | Readable;
  /** The CLI's stdin is this file descriptor (e.g. an open file). */
  readonly stdinFd?: number;
  /**
   * Written to the CLI's stdin, which then stays open (no EOF) until the CLI exits: a
   * command that should not read stdin must not see these bytes, nor wait for EOF.
   */
  readonly holdStdin?: Buffer;
  /** The CLI's stdout is this file descriptor; `stdout` in the result is then empty. */
  readonly stdoutFd?: number;
  /** SIGKILL the CLI and reject after this long (default 120 s). */
  readonly timeoutMs?: number;
}

export interface BytesResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  /** Wall time from spawn to exit. */
  readonly ms: number;
  /** The CLI's peak resident set (VmHWM, KiB) as last sampled before it exited. */
  readonly peakRssKiB: number;
}

/** `node bin/vessel.js --data-dir <dataDir> ...args`; resolves when it exits. */
export function vesselBytes(
  dataDir: string,
  args: readonly string[],
  options: BytesOptions = {},
): Promise<BytesResult> {
  const stdin =
    options.stdinFd ??
    (options.input !== undefined || options.holdStdin !== undefined ? 'pipe' : 'ignore');
  const stdio: StdioOptions = [stdin, options.stdoutFd ?? 'pipe', 'pipe'];
  const t0 = Date.now();
  const child = spawn(process.execPath, [BIN, '--data-dir', dataDir, ...args], { stdio });
  const hwm = sampleMemory(child.pid!, 'VmHWM', 50);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (d: Buffer) => out.push(d));
  child.stderr?.on('data', (d: Buffer) => err.push(d));
  // A CLI that exits before taking all of its input closes the pipe: not this helper's error.
  child.stdin?.on('error', () => undefined);
  const input = options.input;
  if (Buffer.isBuffer(input)) child.stdin?.end(input);
  else if (input) input.pipe(child.stdin!);
  else if (options.holdStdin) child.stdin?.write(options.holdStdin);
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(
          `vessel ${args.join(' ')} did not exit within ${timeoutMs} ms; stderr: ` +
            JSON.stringify(Buffer.concat(err).toString('utf8').slice(-2000)),
        ),
      );
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      hwm.stop();
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      child.stdin?.destroy();
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out),
        stderr: Buffer.concat(err),
        ms: Date.now() - t0,
        peakRssKiB: hwm.stop(),
      });
    });
  });
}
