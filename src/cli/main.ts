import { Command, CommanderError } from 'commander';
import { VERSION } from '../core/version.js';
import { errorMessage } from '../core/errors.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerImageCommands } from './commands/image.js';
import { registerIngressCommands } from './commands/ingress.js';
import { registerInstanceCommands } from './commands/instance.js';
import { registerKernelCommands } from './commands/kernel.js';
import { registerLifecycleCommands } from './commands/lifecycle.js';
import type { GlobalOptions } from './connect.js';
import { EXIT, exitCodeFor } from './exit-codes.js';

export interface DaemonFlags {
  readonly dataDir: string | undefined;
  readonly readyFd: number | undefined;
  readonly logLevel: string | undefined;
}

export interface CliDeps {
  /** Runs the daemon in the foreground; injected so the CLI does not depend on it. */
  readonly runDaemon: (flags: DaemonFlags) => Promise<number>;
}

const GLOBAL_FLAGS = new Set(['--json']);
const GLOBAL_WITH_VALUE = new Set(['--data-dir', '-H', '--host', '--token']);
const PASS_THROUGH = new Set(['run', 'exec']);

/**
 * Global flags may be written anywhere (`vessel image ls --json`), but `run`
 * and `exec` pass everything after their first argument to the guest
 * command. Move global flags in front of the subcommand, except where they
 * belong to a guest command (after `--`, or after `run IMAGE` / `exec NAME`).
 */
export function hoistGlobalFlags(argv: readonly string[]): string[] {
  const front: string[] = [];
  const rest: string[] = [];
  let command: string | undefined;
  let frozen = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (frozen || a === '--') {
      frozen = true;
      rest.push(a);
      continue;
    }
    if (GLOBAL_FLAGS.has(a) || [...GLOBAL_WITH_VALUE].some((f) => a.startsWith(`${f}=`))) {
      front.push(a);
      continue;
    }
    if (GLOBAL_WITH_VALUE.has(a) && i + 1 < argv.length) {
      front.push(a, argv[++i]!);
      continue;
    }
    rest.push(a);
    if (a.startsWith('-')) continue;
    if (command === undefined) command = a;
    else if (PASS_THROUGH.has(command)) frozen = true;
  }
  return [...front, ...rest];
}

/** Run the `vessel` command line; resolves with the process exit code. */
export async function runCli(argv: readonly string[], deps: CliDeps): Promise<number> {
  let exitCode: number = EXIT.ok;
  const setExit = (code: number): void => {
    exitCode = code;
  };
  const program = new Command();
  program
    .name('vessel')
    .description('Run OCI container images as microVMs')
    .version(VERSION, '-v, --version')
    .option('--data-dir <dir>', 'data directory (default /var/lib/vessel, env VESSEL_DATA_DIR)')
    .option('-H, --host <url>', 'talk to a daemon over TCP (env VESSEL_HOST); needs --token')
    .option('--token <token>', 'bearer token for --host (env VESSEL_TOKEN)')
    .option('--json', 'print machine-readable JSON')
    .enablePositionalOptions()
    .showHelpAfterError()
    .exitOverride();
  const globals = (): GlobalOptions => program.opts<GlobalOptions>();

  program
    .command('daemon')
    .description('run the Vessel daemon in the foreground')
    .option('--ready-fd <fd>', 'write "ready" to this file descriptor once listening', (v) =>
      Number.parseInt(v, 10),
    )
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace')
    .action(async (o: { readyFd?: number; logLevel?: string }) => {
      setExit(
        await deps.runDaemon({
          dataDir: globals().dataDir,
          readyFd: o.readyFd,
          logLevel: o.logLevel,
        }),
      );
    });

  registerInstanceCommands(program, globals, setExit);
  registerLifecycleCommands(program, globals, setExit);
  registerImageCommands(program, globals, setExit);
  registerKernelCommands(program, globals);
  registerIngressCommands(program, globals);
  registerDoctorCommand(program, globals, setExit);

  try {
    await program.parseAsync(hoistGlobalFlags(argv), { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      ) {
        return EXIT.ok;
      }
      return EXIT.usage;
    }
    process.stderr.write(`error: ${errorMessage(err)}\n`);
    return exitCodeFor(err);
  }
  return exitCode;
}
