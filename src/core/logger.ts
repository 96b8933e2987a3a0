import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  readonly level?: string;
  /** Where to write; defaults to stderr. */
  readonly destination?: DestinationStream;
}

/** The root logger; subsystems derive children with {@link subsystemLogger}. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    { level: options.level ?? 'info', base: { pid: process.pid } },
    options.destination ?? pino.destination(2),
  );
}

export function subsystemLogger(root: Logger, subsystem: string): Logger {
  return root.child({ subsystem });
}

/** A logger that drops everything, for tests and tools. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
