/**
 * `vessel session start|ls|attach|logs|kill|rm`: long-running commands in a
 * guest that outlive the terminal that started them (a dev server, an agent,
 * a REPL). Their output is kept in the guest agent; attach later to see it
 * and the live stream, detach with ctrl-p ctrl-q (or Ctrl-C when not on a
 * tty) and the command runs on.
 */
import os from 'node:os';
import { pipeline } from 'node:stream/promises';
import { InvalidArgumentError, type Command } from 'commander';
import type { Session, VesselClient } from '../../client/index.js';
import { VesselError } from '../../core/errors.js';
import { parseSize } from '../../core/size.js';
import { connect, type GlobalOptions } from '../connect.js';
import { EXIT } from '../exit-codes.js';
import { EXIT_PIPE } from '../stdio.js';
import { ago, humanBytes, printJson, table } from '../output.js';

type Globals = () => GlobalOptions;
type SetExit = (code: number) => void;

const DEFAULT_DETACH_KEYS = 'ctrl-p,ctrl-q';

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A signal by number or name (`9`, `KILL`, `SIGKILL`). */
export function parseSignal(value: string): number {
  if (/^\d+$/.test(value)) {
    const n = Number(value);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = value.toUpperCase().replace(/^SIG/, '');
    const n = (os.constants.signals as Record<string, number | undefined>)[`SIG${name}`];
    if (n !== undefined) return n;
  }
  throw new InvalidArgumentError(`"${value}" is not a signal (a number 1-64 or a name like TERM)`);
}

function parseOffset(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a byte offset`);
  return Number(value);
}

function parseBuffer(value: string): number {
  try {
    return parseSize(value, '--buffer');
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

function status(s: Session): string {
  if (s.state === 'running') return 'running';
  return s.exit_signal !== null && s.exit_code === 128 + s.exit_signal
    ? `exited (signal ${s.exit_signal})`
    : `exited (${s.exit_code ?? '?'})`;
}

function shortCommand(argv: readonly string[]): string {
  const text = argv.map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(' ');
  return text.length > 40 ? `${text.slice(0, 39)}…` : text;
}

/**
 * Attach this terminal to a session; resolves with the exit code to end with:
 * the session's (a shell's view) when it ended, 0 after a detach.
 */
async function attachTerminal(
  client: VesselClient,
  instance: string,
  name: string,
  o: { stdin: boolean; interactive?: boolean; from?: number; detachKeys: string },
): Promise<number> {
  const { pipeTerminal, parseDetachKeys } = await import('../exec-attach.js');
  const { shellExitCode } = await import('../../core/exec-stream.js');
  let keys: Buffer;
  try {
    keys = parseDetachKeys(o.detachKeys);
  } catch (err) {
    throw new VesselError('invalid_argument', `--detach-keys: ${(err as Error).message}`);
  }
  // A terminal types into it by default; piped stdin only with -i (its EOF closes the
  // session's stdin for good).
  const wantsInput = o.stdin && (o.interactive === true || process.stdin.isTTY === true);
  const stream = await client.attachSession(instance, name, {
    input: wantsInput,
    ...(o.from === undefined ? {} : { from: o.from }),
  });
  const h = stream.attached;
  if (h.from > (o.from ?? h.start)) {
    process.stderr.write(`vessel: ${h.from - (o.from ?? 0)} bytes of output were dropped\n`);
  }
  if (wantsInput && !h.input)
    process.stderr.write(
      `vessel: another client has the input of session "${name}"; attached read-only\n`,
    );
  if (process.stdin.isTTY && h.input)
    process.stderr.write(`vessel: attached to "${name}"; detach with ${o.detachKeys}\n`);
  const end = await pipeTerminal(
    stream,
    { interactive: h.input, tty: h.tty },
    // Detach keys only when a person types: piped bytes pass through untouched.
    { ...(process.stdin.isTTY ? { detachKeys: keys } : {}), signals: 'detach' },
  );
  if ('detached' in end || 'detachedBy' in end || end.running) {
    process.stderr.write(
      `\r\nvessel: detached from "${name}"; it runs on (vessel session attach ${instance} ${name})\n`,
    );
    return EXIT.ok;
  }
  return shellExitCode(end);
}

export function registerSessionCommands(
  program: Command,
  globals: Globals,
  setExit: SetExit,
): void {
  const session = program
    .command('session')
    .description(
      'commands that outlive this terminal: start one, detach, attach again later and see what you missed',
    );

  session
    .command('start')
    .description('start a command as a session in a running instance; prints its name')
    .argument('<instance>', 'id or name')
    .argument('<command...>', 'command and arguments (after --)')
    .option('--name <name>', 'session name (default: s1, s2, …)')
    .option('-t, --tty', 'run it on a pseudo-terminal (a shell, a REPL)')
    .option('-a, --attach', 'attach to it at once (as session attach)')
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'working directory')
    .option('-u, --user <user>', 'user[:group]')
    .option('--buffer <size>', 'output kept in the guest, e.g. 4m (default 1m)', parseBuffer)
    .option('--shared-input', 'every attached client may type (default: the first one)')
    .option('--detach-keys <keys>', 'with --attach: keys that detach', DEFAULT_DETACH_KEYS)
    .action(
      async (
        instance: string,
        command: string[],
        o: {
          name?: string;
          tty?: boolean;
          attach?: boolean;
          env: string[];
          workdir?: string;
          user?: string;
          buffer?: number;
          sharedInput?: boolean;
          detachKeys: string;
        },
      ) => {
        const argv = command[0] === '--' ? command.slice(1) : command;
        if (argv.length === 0)
          throw new VesselError('invalid_argument', 'session start needs a command');
        const g = globals();
        const client = await connect(g);
        const tty = o.tty === true;
        const size =
          tty && process.stdout.isTTY && process.stdout.rows > 0
            ? { rows: process.stdout.rows, cols: process.stdout.columns }
            : {};
        const s = await client.startSession(instance, {
          command: argv,
          ...(o.name ? { name: o.name } : {}),
          tty,
          ...size,
          ...(o.env.length > 0 ? { env: o.env } : {}),
          ...(o.workdir ? { cwd: o.workdir } : {}),
          ...(o.user ? { user: o.user } : {}),
          ...(o.buffer ? { buffer_bytes: o.buffer } : {}),
          ...(o.sharedInput ? { input: 'shared' as const } : {}),
        });
        if (o.attach) {
          setExit(
            await attachTerminal(client, instance, s.name, {
              stdin: true,
              detachKeys: o.detachKeys,
            }),
          );
          return;
        }
        if (g.json) printJson(s);
        else process.stdout.write(`${s.name}\n`);
      },
    );

  session
    .command('ls')
    .alias('list')
    .description("an instance's sessions, running and ended")
    .argument('<instance>', 'id or name')
    .action(async (instance: string) => {
      const g = globals();
      const list = await (await connect(g)).listSessions(instance);
      if (g.json) return printJson(list);
      process.stdout.write(
        table(
          ['NAME', 'STATUS', 'PID', 'COMMAND', 'STARTED', 'OUTPUT', 'KEPT', 'ATTACHED'],
          list.map((s) => [
            s.name,
            status(s),
            String(s.pid),
            shortCommand(s.command),
            ago(s.started_at),
            humanBytes(s.output_end),
            humanBytes(s.output_end - s.output_start),
            String(s.attached),
          ]),
        ),
      );
    });

  session
    .command('attach')
    .description(
      'attach this terminal: the kept output, then live; type into it; ctrl-p ctrl-q detaches and it runs on',
    )
    .argument('<instance>', 'id or name')
    .argument('<session>', 'session name')
    .option('--no-stdin', 'watch only, never type into it')
    .option(
      '-i, --interactive',
      "send this stdin even when it is not a terminal (a pipe; EOF closes the session's stdin)",
    )
    .option(
      '--from <offset>',
      'start at this output offset (default: all that is kept)',
      parseOffset,
    )
    .option('--detach-keys <keys>', 'keys that detach (docker notation)', DEFAULT_DETACH_KEYS)
    .action(
      async (
        instance: string,
        name: string,
        o: { stdin: boolean; interactive?: boolean; from?: number; detachKeys: string },
      ) => {
        const client = await connect(globals());
        setExit(await attachTerminal(client, instance, name, o));
      },
    );

  session
    .command('logs')
    .description("a session's kept output (stdout and stderr); -f follows until it ends")
    .argument('<instance>', 'id or name')
    .argument('<session>', 'session name')
    .option('-f, --follow', 'keep printing new output until the session ends')
    .option('--from <offset>', 'start at this output offset', parseOffset)
    .action(async (instance: string, name: string, o: { follow?: boolean; from?: number }) => {
      const client = await connect(globals());
      const body = await client.sessionLogs(instance, name, {
        follow: o.follow === true,
        ...(o.from === undefined ? {} : { from: o.from }),
      });
      try {
        await pipeline(body, process.stdout, { end: false });
      } catch (err) {
        // `| head`: the reader left, as SIGPIPE would end a writer.
        if ((err as NodeJS.ErrnoException).code === 'EPIPE') return setExit(EXIT_PIPE);
        throw err;
      }
    });

  session
    .command('kill')
    .description(
      "send a signal to a session's processes (default KILL); it stays listed with its exit code",
    )
    .argument('<instance>', 'id or name')
    .argument('<session>', 'session name')
    .option('-s, --signal <signal>', 'signal name or number', parseSignal, 9)
    .action(async (instance: string, name: string, o: { signal: number }) => {
      const g = globals();
      const s = await (await connect(g)).signalSession(instance, name, o.signal);
      if (g.json) printJson(s);
    });

  session
    .command('rm')
    .description('forget ended sessions (their output and exit code); -f kills running ones first')
    .argument('<instance>', 'id or name')
    .argument('<sessions...>', 'session names')
    .option('-f, --force', 'kill a running session first')
    .action(async (instance: string, names: string[], o: { force?: boolean }) => {
      const client = await connect(globals());
      for (const name of names) {
        await client.deleteSession(instance, name, { force: o.force === true });
        process.stdout.write(`${name}\n`);
      }
    });
}
