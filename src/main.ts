/**
 * Process entry point of `vessel`: the CLI, with the daemon injected for the
 * `vessel daemon` command. The only module that sees both.
 *
 * The daemon (and the config loader, which validates with TypeBox) is imported
 * only when `vessel daemon` runs: every other command starts in the time of a
 * bare `node` (bench P8, test/unit/cli/startup.test.ts).
 */
import { runCli } from './cli/index.js';
import type { ConfigOverrides } from './core/config.js';
import { errorMessage } from './core/errors.js';

const code = await runCli(process.argv.slice(2), {
  runDaemon: async (flags) => {
    const [{ loadConfig }, { runDaemonMain }] = await Promise.all([
      import('./core/config.js'),
      import('./daemon/index.js'),
    ]);
    const overrides: ConfigOverrides = {};
    if (flags.dataDir) overrides.data_dir = flags.dataDir;
    if (flags.logLevel) overrides.log_level = flags.logLevel;
    let config;
    try {
      config = loadConfig({ flags: overrides });
    } catch (err) {
      process.stderr.write(`error: ${errorMessage(err)}\n`);
      return 2;
    }
    return runDaemonMain({
      config,
      ...(flags.readyFd === undefined ? {} : { readyFd: flags.readyFd }),
    });
  },
});
process.exitCode = code;
