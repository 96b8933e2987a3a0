import { Command, CommanderError } from 'commander';
import { VERSION } from '../core/version.js';
import { errorMessage } from '../core/errors.js';
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

/** What a command module exports to add its commands to the program. */
export type RegisterCommands = (
  program: Command,
  globals: () => GlobalOptions,
  setExit: (code: number) => void,
) => void;

/** A module of `commands/`, imported only when one of its commands runs. */
export interface CommandModule {
  /** The top-level commands (and their aliases) it registers; a unit test holds it to that. */
  readonly names: readonly string[];
  readonly load: () => Promise<RegisterCommands>;
}

/**
 * Every command module, in help order. `vessel ps` imports only the module that owns `ps`
 * (so it never pays for TypeBox, tar-stream, ws, ...); `vessel --help` and unknown commands
 * import them all. To add a command: register it in its module and add its name here, or add
 * a module with its names. Never import `./commands/*` statically (lint-enforced).
 */
export const COMMAND_MODULES: readonly CommandModule[] = [
  {
    names: ['run', 'ps', 'logs', 'exec', 'start', 'stop', 'rm'],
    load: async () => (await import('./commands/instance.js')).registerInstanceCommands,
  },
  {
    names: ['pause', 'resume', 'standby', 'restore', 'fork', 'wait', 'events'],
    load: async () => (await import('./commands/lifecycle.js')).registerLifecycleCommands,
  },
  {
    names: ['image'],
    load: async () => (await import('./commands/image.js')).registerImageCommands,
  },
  {
    names: ['kernel'],
    load: async () => (await import('./commands/kernel.js')).registerKernelCommands,
  },
  {
    names: ['ingress'],
    load: async () => (await import('./commands/ingress.js')).registerIngressCommands,
  },
  {
    names: ['snapshot'],
    load: async () => (await import('./commands/snapshot.js')).registerSnapshotCommands,
  },
  {
    names: ['inspect', 'stats'],
    load: async () => (await import('./commands/inspect.js')).registerInspectCommands,
  },
  {
    names: ['volume'],
    load: async () => (await import('./commands/volume.js')).registerVolumeCommands,
  },
  {
    names: ['build', 'builds'],
    load: async () => (await import('./commands/build.js')).registerBuildCommands,
  },
  {
    names: ['workspace'],
    load: async () => (await import('./commands/workspace.js')).registerWorkspaceCommands,
  },
  {
    names: ['session'],
    load: async () => (await import('./commands/session.js')).registerSessionCommands,
  },
  {
    names: ['cp'],
    load: async () => (await import('./commands/cp.js')).registerCpCommand,
  },
  {
    names: ['doctor'],
    load: async () => (await import('./commands/doctor.js')).registerDoctorCommand,
  },
  {
    names: ['mcp'],
    load: async () => (await import('./commands/mcp.js')).registerMcpCommand,
  },
];

/** Commands defined in this file (no module to load). */
const BUILT_IN = new Set(['daemon']);

const GLOBAL_FLAGS = new Set(['--json']);
const GLOBAL_WITH_VALUE = new Set(['--data-dir', '-H', '--host', '--token']);
const PASS_THROUGH = new Set(['run', 'exec']);

/** `--data-dir=/d`, `-H=…`: a global flag and its value in one word. */
const isGlobalWithValue = (a: string): boolean =>
  [...GLOBAL_WITH_VALUE].some((f) => a.startsWith(`${f}=`));

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
    if (GLOBAL_FLAGS.has(a) || isGlobalWithValue(a)) {
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

/**
 * The command modules that `argv` (global flags hoisted) needs: the owner of its command
 * (of `help <command>`'s command), none for `--version` or a built-in command, and all of
 * them when there is no command or an unknown one, so help and suggestions list everything.
 */
export function modulesFor(argv: readonly string[]): readonly CommandModule[] {
  const owner = (name: string | undefined): readonly CommandModule[] | undefined => {
    if (name === undefined) return undefined;
    if (BUILT_IN.has(name)) return [];
    const m = COMMAND_MODULES.find((c) => c.names.includes(name));
    return m && [m];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (GLOBAL_WITH_VALUE.has(a)) i++;
    else if (GLOBAL_FLAGS.has(a) || isGlobalWithValue(a)) continue;
    else if (a === '-v' || a === '--version') return [];
    else if (a === 'help') return owner(argv[i + 1]) ?? COMMAND_MODULES;
    else return owner(a) ?? COMMAND_MODULES;
  }
  return COMMAND_MODULES;
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

  const args = hoistGlobalFlags(argv);
  const registers = await Promise.all(modulesFor(args).map((m) => m.load()));
  for (const register of registers) register(program, globals, setExit);

  try {
    await program.parseAsync(args, { from: 'user' });
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
