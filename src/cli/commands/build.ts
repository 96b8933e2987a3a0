import fs from 'node:fs/promises';
import path from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import type { Build, BuildEvent, VesselClient } from '../../client/index.js';
import { parseDockerignore } from '../../core/dockerignore.js';
import { VesselError } from '../../core/errors.js';
import { connect, type GlobalOptions } from '../connect.js';
import { packPath } from '../cp-tar.js';
import { ago, printJson, table } from '../output.js';

type Globals = () => GlobalOptions;

function collectArg(value: string, prev: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) {
    // Docker: `--build-arg NAME` takes NAME's value from the environment.
    const env = process.env[value];
    if (eq === 0 || env === undefined)
      throw new InvalidArgumentError(
        `build arg "${value}" must be NAME=VALUE (or NAME set in the environment)`,
      );
    return { ...prev, [value]: env };
  }
  return { ...prev, [value.slice(0, eq)]: value.slice(eq + 1) };
}

interface BuildOptions {
  tag: string;
  file?: string;
  buildArg?: Record<string, string>;
  target?: string;
  /** commander's `--no-cache`: false when given. */
  cache?: boolean;
  network?: string;
  quiet?: boolean;
}

/**
 * Print a build's events to `out` (nothing when null) as they come; resolves
 * with the build at its end. Ctrl-C cancels the build (its builder VM goes),
 * as with docker build; a second Ctrl-C leaves at once.
 */
export async function followBuild(
  client: VesselClient,
  id: string,
  out: NodeJS.WritableStream | null,
  options: { cancelOnInterrupt?: boolean } = {},
): Promise<Build> {
  const drain = async (): Promise<Build> => {
    const done = new Map<number, string>();
    for await (const e of client.buildEvents(id)) if (out) print(e, done, out);
    return client.getBuild(id);
  };
  if (options.cancelOnInterrupt === false) return drain();
  let cancelling = false;
  const onSignal = (): void => {
    if (cancelling) process.exit(130);
    cancelling = true;
    process.stderr.write('cancelling the build...\n');
    void client.cancelBuild(id).catch(() => undefined);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await drain();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/**
 * The stored reference of catalog image `name`, built first (with its
 * progress on `out`) when it is not local yet. A build of it already running
 * (another `vessel run`) is followed, not repeated.
 */
export async function ensureCatalogImage(
  client: VesselClient,
  name: string,
  out: NodeJS.WritableStream,
): Promise<string> {
  const entry = (await client.listCatalog()).find((e) => e.name === name);
  if (!entry) throw new VesselError('not_found', `"${name}" is not in the image catalog`);
  if (entry.local) return entry.image;
  out.write(
    `${entry.name} is not built yet: building it once from this host's apt sources (${entry.source})\n`,
  );
  const build = await client.buildCatalogImage(entry.name);
  const end = await followBuild(client, build.id, out);
  if (end.status === 'cancelled') process.exit(130);
  if (end.status !== 'ready')
    throw new VesselError('build_failed', end.error ?? `build ${end.id} ${end.status}`);
  return entry.image;
}

function print(e: BuildEvent, done: Map<number, string>, out: NodeJS.WritableStream): void {
  if (e.type === 'log' && e.content !== undefined) out.write(`${e.content}\n`);
  if (e.type === 'step' && e.steps) {
    for (const [i, s] of e.steps.entries()) {
      if (done.get(i) === s.status) continue;
      done.set(i, s.status);
      if (s.status === 'done' && s.duration_ms !== null && s.duration_ms >= 100)
        out.write(`   done in ${(s.duration_ms / 1000).toFixed(1)} s\n`);
    }
  }
}

/** `vessel build` and `vessel builds`. */
export function registerBuildCommands(program: Command, globals: Globals): void {
  program
    .command('build')
    .description('build an image from a Dockerfile; RUN steps run in builder microVMs')
    .argument('<dir>', 'the build context (a directory)')
    .requiredOption('-t, --tag <name[:tag]>', 'name of the image to make')
    .option('-f, --file <path>', 'the Dockerfile (default: DIR/Dockerfile)')
    .option('--build-arg <name=value>', 'a build argument (repeatable)', collectArg)
    .option('--target <stage>', 'build up to this stage')
    .option('--no-cache', 'run every step again, ignoring the step cache')
    .option('--network <mode>', 'none (default) or egress: network for RUN steps')
    .option('-q, --quiet', 'print only the image digest')
    .action(async (dir: string, o: BuildOptions) => {
      const g = globals();
      const st = await fs.stat(dir).catch(() => undefined);
      if (!st?.isDirectory())
        throw new VesselError('invalid_argument', `${dir}: not a directory (the build context)`);
      if (o.network !== undefined && o.network !== 'none' && o.network !== 'egress')
        throw new VesselError(
          'invalid_argument',
          `--network must be none or egress, not "${o.network}"`,
        );
      const file = o.file ?? path.join(dir, 'Dockerfile');
      const dockerfile = await fs.readFile(file, 'utf8').catch(() => {
        throw new VesselError('invalid_argument', `${file}: no such Dockerfile`);
      });
      // Like docker's client: .dockerignore'd files never leave this machine.
      const ignoreText = await fs.readFile(path.join(dir, '.dockerignore'), 'utf8').catch(() => '');
      const ignore = ignoreText ? parseDockerignore(ignoreText) : undefined;
      const context = await packPath(dir, {
        name: '',
        ...(ignore
          ? {
              skip: (rel: string, isDir: boolean) =>
                rel !== '.dockerignore' && rel !== 'Dockerfile' && ignore.ignored(rel, isDir),
            }
          : {}),
      });
      const client = await connect(g);
      const build = await client.createBuild(
        {
          image: o.tag,
          dockerfile,
          dockerfile_path: path.basename(file),
          ...(o.buildArg ? { build_args: o.buildArg } : {}),
          ...(o.target ? { target: o.target } : {}),
          ...(o.cache === false ? { no_cache: true } : {}),
          ...(o.network === 'egress' ? { network: 'egress' as const } : {}),
        },
        context,
      );
      if (!o.quiet && !g.json) process.stdout.write(`build ${build.id}\n`);
      const end = await followBuild(
        client,
        build.id,
        o.quiet === true || g.json === true ? null : process.stdout,
      );
      if (g.json) printJson(end);
      if (end.status === 'ready') {
        if (o.quiet && !g.json) process.stdout.write(`${end.image_digest}\n`);
        return;
      }
      if (end.status === 'cancelled') process.exit(130);
      throw new VesselError(
        end.error_code === 'build_failed' ? 'build_failed' : 'internal',
        end.error ?? `build ${end.id} ${end.status}`,
      );
    });

  const builds = program.command('builds').description('builds: list, logs, cancel');
  builds
    .command('ls', { isDefault: true })
    .description('list builds')
    .action(async () => {
      const g = globals();
      const list = await (await connect(g)).listBuilds();
      if (g.json) return printJson(list);
      const out = table(
        ['ID', 'IMAGE', 'STATUS', 'STEPS', 'DURATION', 'CREATED'],
        list.map((b) => [
          b.id,
          b.image_ref,
          b.status,
          `${b.steps.filter((s) => s.status === 'cached').length} cached/${b.steps.length}`,
          b.duration_ms === null ? '-' : `${(b.duration_ms / 1000).toFixed(1)} s`,
          ago(b.created_at),
        ]),
      );
      process.stdout.write(`${out}\n`);
    });
  builds
    .command('logs')
    .description("a build's output from the start (live while it runs)")
    .argument('<id>')
    .action(async (id: string) => {
      const client = await connect(globals());
      await followBuild(client, id, process.stdout, { cancelOnInterrupt: false });
    });
  builds
    .command('cancel')
    .alias('rm')
    .description('cancel a running build, or delete a finished build record')
    .argument('<id>')
    .action(async (id: string) => {
      const g = globals();
      const client = await connect(g);
      const before = await client.getBuild(id);
      await client.cancelBuild(id);
      const active = before.status === 'queued' || before.status === 'building';
      if (g.json) return printJson({ id, status: active ? 'cancelled' : 'deleted' });
      process.stdout.write(`${id} ${active ? 'cancelled' : 'deleted'}\n`);
    });
}
