/**
 * `exit_message`: how the main command ended, in words — the same phrases
 * the hypeman API uses ("success", "command not found", "killed by signal 9
 * (SIGKILL)").
 */
import os from 'node:os';

/** The main command's end as far as it is known. */
export interface MainExit {
  readonly code: number | null;
  readonly signal: number | null;
  /** Why it could not start, when the guest said so. */
  readonly message?: string;
}

function signalName(signo: number): string | undefined {
  return Object.entries(os.constants.signals).find(([, n]) => n === signo)?.[0];
}

function killed(signo: number): string {
  const name = signalName(signo);
  return `killed by signal ${signo}${name ? ` (${name})` : ''}`;
}

/** Describe an exit; null when nothing is known yet. */
export function describeExit(exit: MainExit): string | null {
  if (exit.signal !== null) return killed(exit.signal);
  const code = exit.code;
  if (code === null) return exit.message ?? null;
  if (code === 0) return 'success';
  const why = exit.message ? `: ${exit.message}` : '';
  if (code === 126) return `permission denied (command not executable)${why}`;
  if (code === 127) return `command not found${why}`;
  if (code > 128 && code < 128 + 65) return killed(code - 128);
  return `exit code ${code}${why}`;
}
