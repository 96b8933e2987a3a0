import fs from 'node:fs';
import type { Config } from '../core/config.js';
import { createLogger } from '../core/logger.js';
import { Daemon } from './daemon.js';

export interface DaemonMainOptions {
  readonly config: Config;
  /** File descriptor to write "ready\n" to once listening (set by the CLI's autostart). */
  readonly readyFd?: number;
}

/**
 * Run the daemon in the foreground until SIGTERM/SIGINT. Resolves with the
 * process exit code.
 */
export async function runDaemonMain(options: DaemonMainOptions): Promise<number> {
  const logger = createLogger({ level: options.config.log_level });
  const daemon = new Daemon({ config: options.config, logger });
  try {
    await daemon.start();
  } catch (err) {
    logger.fatal({ err }, 'daemon failed to start');
    if (options.readyFd !== undefined) {
      const message = err instanceof Error ? err.message : String(err);
      try {
        fs.writeSync(options.readyFd, `error ${message}\n`);
        fs.closeSync(options.readyFd);
      } catch {
        // the parent went away
      }
    }
    return 1;
  }
  logger.info({ dataDir: daemon.paths.dataDir, pid: process.pid }, 'vessel daemon ready');
  if (options.readyFd !== undefined) {
    try {
      fs.writeSync(options.readyFd, 'ready\n');
      fs.closeSync(options.readyFd);
    } catch {
      // the parent went away; keep serving
    }
  }
  return new Promise<number>((resolve) => {
    const shutdown = (signal: string): void => {
      logger.info({ signal }, 'shutting down');
      const force = setTimeout(() => {
        logger.error('shutdown took longer than 10 s; exiting');
        resolve(1);
      }, 10_000);
      force.unref();
      void daemon.stop().then(() => {
        clearTimeout(force);
        resolve(0);
      });
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
  });
}
