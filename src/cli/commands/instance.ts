import type { Command } from 'commander';
import type { Instance, VesselClient } from '../../client/index.js';
import { catalogEntry, defaultCatalogEntry } from '../../core/catalog.js';
import { VesselError } from '../../core/errors.js';
import { connect, type GlobalOptions } from '../connect.js';
import { EXIT } from '../exit-codes.js';
import { ago, printJson, table } from '../output.js';
import { formatPorts, networkRequest } from '../ports.js';
import { EXIT_PIPE, ReaderGone, reportBootFailure, startFailureCode, writeOut } from '../stdio.js';
import { resolveVolumeSpecs } from '../volume-spec.js';

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

/** Waits for a create to settle: Running, or stopped (it ran, or its boot failed). */
async function untilStarted(client: VesselClient, id: string): Promise<Instance> {
  const abort = new AbortController();
  const settled = (i: Instance): boolean =>
    i.state === 'Running' || i.state === 'Stopped' || i.state_error !== null;
  try {
    // Subscribe, then read: a change between the two is in the stream.
    const events = client.events({ instance: id, types: ['state'] }, abort.signal);
    const first = events.next();
    const now = await client.getInstance(id);
    if (settled(now)) return now;
    for (let e = await first; !e.done; e = await events.next()) {
      const inst = await client.getInstance(id);
      if (settled(inst)) return inst;
    }
    return await client.getInstance(id);
  } finally {
    abort.abort();
  }
}

/**
 * `run` in the foreground: attach to the main command (its output from the
 * first byte, stdin with -i, a tty with -t, signals forwarded) until the
 * instance stops; returns the exit code to end with.
 */
async function runAttached(
  client: VesselClient,
  inst: Instance,
  flags: { interactive: boolean; tty: boolean },
): Promise<number> {
  const stream = await client.attach(inst.id);
  const { pipeTerminal } = await import('../exec-attach.js');
  const end = await pipeTerminal(stream, flags);
  if ('detachedBy' in end) return 128 + end.detachedBy;
  if ('detached' in end) return EXIT.ok;
  const last = await client.getInstance(inst.id);
  if (last.state_error) {
    await reportBootFailure(client, last);
    return EXIT.failure;
  }
  if (last.state !== 'Stopped') {
    process.stderr.write(`error: the stream ended while ${last.name} was ${last.state}\n`);
    return EXIT.unavailable;
  }
  const code = last.exit_code ?? end.code;
  if ((code === 126 || code === 127) && last.exit_message)
    process.stderr.write(`vessel: ${last.name}: ${last.exit_message}\n`);
  return code ?? EXIT.failure;
}

/**
 * `vessel run [OPTIONS] -- CMD`: the `--` came before the word commander took
 * for the image (commander drops a leading `--`; only the raw words tell).
 */
function imageAfterSeparator(cmd: Command, image: string): boolean {
  const raw = (cmd.parent as unknown as { rawArgs?: string[] } | null)?.rawArgs ?? [];
  const at = raw.indexOf('run');
  if (at < 0) return false;
  const sep = raw.indexOf('--', at);
  return sep >= 0 && sep < raw.indexOf(image, at);
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
    .argument(
      '[image]',
      'image reference (pulled when missing), or a catalog name such as debian-bookworm ' +
        '(built on this host when missing); none (`vessel run -- CMD`): the default catalog image',
    )
    .argument('[command...]', 'command to run instead of the image CMD (after --)')
    .option('--name <name>', 'instance name')
    .option('-d, --detach', 'boot in the background; print the instance id once it is Running')
    .option(
      '-i, --interactive',
      'keep the command’s stdin open and stream this process’s stdin to it',
    )
    .option('-t, --tty', 'run the command under a pseudo-terminal (stdout and stderr merge)')
    .option('--rm', 'delete the instance when it stops')
    .option('--cpus <n>', 'vCPUs', (v) => Number.parseInt(v, 10))
    .option('-m, --memory <size>', 'memory, e.g. 512m or 2g')
    .option('--disk-io <rate>', 'disk I/O limit over all its disks, e.g. 100MB/s')
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
    .option(
      '--workspace-path <dir>',
      'with a directory first (`vessel run ./repo [IMAGE] -- CMD`): where it goes in the guest',
      '/work',
    )
    .option('--export <file>', 'with a directory first: write the changes CMD made as a git patch')
    .option('--keep', 'with a directory first: keep the instance afterwards (default: deleted)')
    .option(
      '-v, --volume <src:dest[:ro|:overlay]>',
      'attach a volume by name (repeatable); a host directory (./dir, /abs/dir) is imported as a ' +
        'fresh volume: a snapshot copy taken now, not a live share (later host edits are not seen)',
      collect,
      [],
    )
    .passThroughOptions()
    .action(
      async (
        imageArg: string | undefined,
        command: string[],
        o: {
          name?: string;
          detach?: boolean;
          interactive?: boolean;
          tty?: boolean;
          rm?: boolean;
          cpus?: number;
          memory?: string;
          diskIo?: string;
          env: string[];
          workdir?: string;
          user?: string;
          entrypoint?: string;
          publish: string[];
          network?: string;
          netGroup?: string;
          egress?: boolean;
          volume: string[];
          workspacePath: string;
          export?: string;
          keep?: boolean;
        },
        cmd: Command,
      ) => {
        const g = globals();
        // With pass-through options a `--` after the image reaches us as an argument; a
        // leading one (`vessel run -- CMD`, no image) is dropped by commander.
        let image = imageArg;
        // `vessel run ./repo [IMAGE] -- CMD`: a directory first is a workspace.
        let workspace: string | undefined;
        if (image !== undefined && /^(\.{1,2}(\/|$)|\/|~)/.test(image)) {
          workspace = image.replace(/^~(?=\/|$)/, process.env.HOME ?? '~');
          image = command[0] !== undefined && command[0] !== '--' ? command.shift() : undefined;
        }
        if (command[0] === '--') command = command.slice(1);
        else if (
          workspace === undefined &&
          image !== undefined &&
          imageAfterSeparator(cmd, image)
        ) {
          // `vessel run [OPTIONS] -- CMD`: commander took CMD's first word for the image.
          command = [image, ...command];
          image = undefined;
        }
        if (o.detach && o.rm)
          throw new VesselError('invalid_argument', '--rm and --detach cannot be combined');
        const net = networkRequest(o);
        if (workspace !== undefined && o.detach)
          throw new VesselError(
            'invalid_argument',
            'a workspace run is in the foreground; for a background VM use vessel run -d IMAGE, then vessel workspace prepare',
          );
        if (workspace !== undefined && command.length === 0)
          throw new VesselError(
            'invalid_argument',
            `vessel run ${imageArg ?? ''} needs a command after --`,
          );
        const client = await connect(g);
        const golden = catalogEntry(image ?? defaultCatalogEntry().name);
        if (golden) {
          // A catalog image is built on this host the first time (progress on stderr).
          const { ensureCatalogImage } = await import('./build.js');
          image = await ensureCatalogImage(client, golden.name, process.stderr);
        }
        if (image === undefined) throw new VesselError('invalid_argument', 'no image given');
        const volumes = await resolveVolumeSpecs(client, o.volume, (l) =>
          process.stderr.write(`${l}\n`),
        );
        if (workspace !== undefined) {
          const { runInWorkspace } = await import('./workspace.js');
          setExit(
            await runInWorkspace(client, {
              dir: workspace,
              image,
              command,
              path: o.workspacePath,
              ...(o.export ? { exportTo: o.export } : {}),
              keep: o.keep === true,
              create: {
                ...(o.name ? { name: o.name } : {}),
                ...(o.env.length > 0 ? { env: o.env } : {}),
                ...(o.cpus ? { vcpus: o.cpus } : {}),
                ...(o.memory ? { memory_mib: parseMemory(o.memory) } : {}),
                ...(volumes.length > 0 ? { volumes } : {}),
                ...net,
              },
              exec: {
                ...(o.env.length > 0 ? { env: o.env } : {}),
                ...(o.user ? { user: o.user } : {}),
              },
              flags: { interactive: o.interactive === true, tty: o.tty === true },
              started: (id) => untilStarted(client, id),
            }),
          );
          return;
        }
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
          ...(o.diskIo ? { disk_io_bps: o.diskIo } : {}),
          ...(o.interactive ? { stdin: true } : {}),
          ...(o.tty ? { tty: true } : {}),
          ...(volumes.length > 0 ? { volumes } : {}),
          ...net,
        });
        if (o.detach) {
          // Like `docker run -d`: return once it started, or fail with the boot error.
          const now = await untilStarted(client, inst.id);
          if (now.state_error) {
            await reportBootFailure(client, now);
            setExit(EXIT.failure);
            return;
          }
          if (g.json) printJson(now);
          else process.stdout.write(`${inst.id}\n`);
          return;
        }
        try {
          setExit(
            await runAttached(client, inst, {
              interactive: o.interactive === true,
              tty: o.tty === true,
            }),
          );
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
    .description(
      "print an instance's logs: the main command's stdout and stderr, byte for byte (or --source console|vmm|daemon)",
    )
    .argument('<instance>', 'id or name')
    .option('-f, --follow', 'keep streaming until the instance stops')
    .option('-n, --tail <lines>', 'only the last N lines', (v) => Number.parseInt(v, 10))
    .option(
      '--source <source>',
      'app (the command’s output; default), console (kernel and vessel-init messages), vmm (the hypervisor), daemon (lifecycle operations)',
    )
    .action(async (id: string, o: { follow?: boolean; tail?: number; source?: string }) => {
      const sources = ['app', 'console', 'vmm', 'daemon'] as const;
      const source = sources.find((s) => s === o.source);
      if (o.source !== undefined && !source) {
        throw new VesselError(
          'invalid_argument',
          `--source must be app, console, vmm or daemon, not "${o.source}"`,
        );
      }
      const client = await connect(globals());
      const abort = new AbortController();
      try {
        for await (const c of client.instanceLogBytes(
          id,
          {
            ...(o.follow ? { follow: true } : {}),
            ...(o.tail === undefined ? {} : { tail: o.tail }),
            ...(source ? { source } : {}),
          },
          abort.signal,
        )) {
          if (c.type === 'state') continue;
          await writeOut(c.type === 'stderr' ? process.stderr : process.stdout, c.data);
        }
      } catch (err) {
        abort.abort();
        if (err instanceof ReaderGone) return setExit(EXIT_PIPE);
        throw err;
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
        // Over the exec WebSocket: bytes exact both ways, stdin only with -i (else the
        // command reads EOF), a tty with -t, Ctrl-C forwarded as SIGINT to the command.
        const flags = { interactive: o.interactive === true, tty: o.tty === true };
        const { execAttached } = await import('../exec-attach.js'); // ws: exec only
        try {
          setExit(await execAttached(client, id, req, flags));
        } catch (err) {
          const code = startFailureCode(err);
          if (code === undefined) throw err;
          process.stderr.write(`vessel: ${(err as Error).message}\n`);
          setExit(code);
        }
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
    .description('delete instances (a running one only with -f, which kills it)')
    .argument('<instances...>', 'ids or names')
    .option('-f, --force', 'kill and delete running instances')
    .action(async (ids: string[], o: { force?: boolean }) => {
      const client = await connect(globals());
      for (const id of ids) {
        if (!o.force) {
          const inst = await client.getInstance(id);
          if (!['Stopped', 'Standby', 'Created'].includes(inst.state)) {
            throw new VesselError(
              'conflict',
              `instance "${inst.name}" is ${inst.state}: stop it first, or use rm -f to kill and remove it`,
            );
          }
        }
        await client.deleteInstance(id);
        process.stdout.write(`${id}\n`);
      }
    });
}
