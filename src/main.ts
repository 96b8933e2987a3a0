/**
 * Process entry point of `vessel`: the CLI, with the daemon injected for the
 * `vessel daemon` command. The only module that sees both.
 */
import { runCli } from './cli/index.js';
import { loadConfig, type ConfigOverrides } from './core/config.js';
import { errorMessage } from './core/errors.js';
import { runDaemonMain } from './daemon/index.js';

const code = await runCli(process.argv.slice(2), {
  runDaemon: async (flags) => {
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
