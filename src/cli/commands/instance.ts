import type { Command } from 'commander';
import type { Instance, VesselClient } from '../../client/index.js';
import { VesselError } from '../../core/errors.js';
import { connect, type GlobalOptions } from '../connect.js';
import { execAttached } from '../exec-attach.js';
import { EXIT } from '../exit-codes.js';
import { ago, printJson, table } from '../output.js';
import { formatPorts, networkRequest } from '../ports.js';

type Globals = () => GlobalOptions;
type SetExit = (code: number) => void;

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** `512m`, `2g`, `1024` (MiB) → MiB. */
export function parseMemory(text: string): number {
  const m = /^(\d+)([mMgG]?)[iI]?[bB]?$/.exec(text.trim());
  if (!m?.[1])
    throw new VesselError('invalid_argument', `--memory "${text}" is not a size like 512m or 2g`);
  const n = Number(m[1]);
  return m[2]?.toLowerCase() === 'g' ? n * 1024 : n;
}

/**
 * Print the app log until the instance stops; returns the exit code the
 * command should end with: the guest command's own, or 1 with the reason.
 */
async function follow(client: VesselClient, id: string): Promise<number> {
  let last: Instance | undefined;
  for await (const e of client.instanceLogs(id, { follow: true })) {
    if (e.type === 'log') process.stdout.write(e.text);
    else last = e.instance;
  }
  last ??= await client.getInstance(id);
  if (last.state !== 'Stopped') {
    process.stderr.write(`error: the log stream ended while ${last.name} was ${last.state}\n`);
    return EXIT.unavailable;
  }
  if (last.state_error) {
    process.stderr.write(`error: ${last.state_error}\n`);
    return last.exit_code ?? EXIT.failure;
  }
  return last.exit_code ?? EXIT.failure;
}

export function registerInstanceCommands(
  program: Command,
  globals: Globals,
  setExit: SetExit,
): void {
  program
    .command('run')
    .description(
      'create and boot a microVM from an image; in the foreground, stream its output and exit with its code',
    )
    .argument('<image>', 'image reference (pulled when missing)')
    .argument('[command...]', 'command to run instead of the image CMD (after --)')
    .option('--name <name>', 'instance name')
    .option('-d, --detach', 'boot in the background and print the instance id')
    .option('--rm', 'delete the instance when it stops')
    .option('--cpus <n>', 'vCPUs', (v) => Number.parseInt(v, 10))
    .option('-m, --memory <size>', 'memory, e.g. 512m or 2g')
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'working directory in the guest')
    .option('-u, --user <user>', 'user[:group] in the guest')
    .option('--entrypoint <path>', 'replace the image entrypoint')
    .option(
      '-p, --publish <[ip:]host:guest[/udp]>',
      'publish a guest port on the host (repeatable; host address default 127.0.0.1)',
      collect,
      [],
    )
    .option(
      '--network <mode>',
      'bridge (TAP + NAT), user (rootless) or none (loopback only); default with -p, --egress or --net-group: bridge when the host can, else user',
    )
    .option('--net-group <name>', 'bridge mode: instances of the same group may reach each other')
    .option('--egress', 'let the guest open connections out (user mode reaches host loopback)')
    .passThroughOptions()
    .action(
      async (
        image: string,
        command: string[],
        o: {
          name?: string;
          detach?: boolean;
          rm?: boolean;
          cpus?: number;
          memory?: string;
          env: string[];
          workdir?: string;
          user?: string;
          entrypoint?: string;
          publish: string[];
          network?: string;
          netGroup?: string;
          egress?: boolean;
        },
      ) => {
        const g = globals();
        // With pass-through options the `--` separator reaches us as an argument.
        if (command[0] === '--') command = command.slice(1);
        if (o.detach && o.rm)
          throw new VesselError('invalid_argument', '--rm and --detach cannot be combined');
        const net = networkRequest(o);
        const client = await connect(g);
        const inst = await client.createInstance({
          image,
          ...(o.name ? { name: o.name } : {}),
          ...(command.length > 0 ? { cmd: command } : {}),
          ...(o.entrypoint ? { entrypoint: [o.entrypoint] } : {}),
          ...(o.env.length > 0 ? { env: o.env } : {}),
          ...(o.workdir ? { workdir: o.workdir } : {}),
          ...(o.user ? { user: o.user } : {}),
          ...(o.cpus ? { vcpus: o.cpus } : {}),
          ...(o.memory ? { memory_mib: parseMemory(o.memory) } : {}),
          ...net,
        });
        if (o.detach) {
          if (g.json) printJson(inst);
          else process.stdout.write(`${inst.id}\n`);
          return;
        }
        try {
          setExit(await follow(client, inst.id));
        } finally {
          if (o.rm) await client.deleteInstance(inst.id);
        }
      },
    );

  program
    .command('ps')
    .description('list instances (running ones; -a for all)')
    .option('-a, --all', 'include stopped instances')
    .action(async (o: { all?: boolean }) => {
      const g = globals();
      const all = await (await connect(g)).listInstances();
      const shown = o.all ? all : all.filter((i) => i.state !== 'Stopped');
      if (g.json) return printJson(shown);
      process.stdout.write(
        `${table(
          ['ID', 'NAME', 'IMAGE', 'STATE', 'ACCEL', 'CREATED', 'PORTS'],
          shown.map((i) => [
            i.id.slice(0, 12),
            i.name,
            i.image,
            i.state + (i.exit_code !== null && i.state === 'Stopped' ? ` (${i.exit_code})` : ''),
            i.accel ?? '-',
            ago(i.created_at),
            formatPorts(i.ports),
          ]),
        )}\n`,
      );
    });

  program
    .command('logs')
    .description('print the app log (the serial console without boot markers)')
    .argument('<instance>', 'id or name')
    .option('-f, --follow', 'keep streaming until the instance stops')
    .option('-n, --tail <lines>', 'only the last N lines', (v) => Number.parseInt(v, 10))
    .option(
      '--source <source>',
      'app (default), vmm (the hypervisor), daemon (lifecycle operations)',
    )
    .action(async (id: string, o: { follow?: boolean; tail?: number; source?: string }) => {
      if (o.source !== undefined && !['app', 'vmm', 'daemon'].includes(o.source)) {
        throw new VesselError(
          'invalid_argument',
          `--source must be app, vmm or daemon, not "${o.source}"`,
        );
      }
      const client = await connect(globals());
      for await (const e of client.instanceLogs(id, {
        ...(o.follow ? { follow: true } : {}),
        ...(o.tail === undefined ? {} : { tail: o.tail }),
        ...(o.source ? { source: o.source as 'app' | 'vmm' | 'daemon' } : {}),
      })) {
        if (e.type === 'log') process.stdout.write(e.text);
      }
    });

  program
    .command('exec')
    .description(
      'run a command in a running instance; -i streams stdin, -t allocates a tty (exit code = the command’s)',
    )
    .argument('<instance>', 'id or name')
    .argument('<command...>', 'command and arguments')
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
    .option('-w, --workdir <dir>', 'working directory')
    .option('-u, --user <user>', 'user[:group]')
    .option('-i, --interactive', 'stream this process’s stdin to the command')
    .option('-t, --tty', 'allocate a pseudo-terminal in the guest')
    .passThroughOptions()
    .action(
      async (
        id: string,
        command: string[],
        o: { env: string[]; workdir?: string; user?: string; interactive?: boolean; tty?: boolean },
      ) => {
        // `vessel exec NAME -- CMD` as with run: the separator is not part of the command.
        const argv = command[0] === '--' ? command.slice(1) : command;
        if (argv.length === 0) throw new VesselError('invalid_argument', 'exec needs a command');
        const client = await connect(globals());
        const req = {
          argv,
          ...(o.env.length > 0 ? { env: o.env } : {}),
          ...(o.workdir ? { cwd: o.workdir } : {}),
          ...(o.user ? { user: o.user } : {}),
        };
        if (o.interactive || o.tty) {
          // Streams over the exec WebSocket.
          const flags = { interactive: o.interactive === true, tty: o.tty === true };
          setExit(await execAttached(client, id, req, flags));
          return;
        }
        const r = await client.execInstance(id, req);
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
        setExit(r.exit_code ?? (r.signal ? 128 + r.signal : EXIT.failure));
      },
    );

  for (const [verb, desc] of [
    ['start', 'boot stopped instances'],
    ['stop', 'stop instances (graceful, then forced)'],
  ] as const) {
    program
      .command(verb)
      .description(desc)
      .argument('<instances...>', 'ids or names')
      .option('-t, --time <seconds>', 'stop: seconds before forcing', (v) => Number.parseInt(v, 10))
      .action(async (ids: string[], o: { time?: number }) => {
        const client = await connect(globals());
        for (const id of ids) {
          const inst =
            verb === 'start'
              ? await client.startInstance(id)
              : await client.stopInstance(id, o.time);
          process.stdout.write(`${inst.name}: ${inst.state}\n`);
        }
      });
  }

  program
    .command('rm')
    .description('delete instances (running ones are killed)')
    .argument('<instances...>', 'ids or names')
    .action(async (ids: string[]) => {
      const client = await connect(globals());
      for (const id of ids) {
        await client.deleteInstance(id);
        process.stdout.write(`removed ${id}\n`);
      }
    });
}
