import { InvalidArgumentError, type Command } from 'commander';
import type { Snapshot } from '../../client/index.js';
import { connect, type GlobalOptions } from '../connect.js';
import { ago, humanBytes, printJson, table } from '../output.js';

type Globals = () => GlobalOptions;
type Kind = 'Standby' | 'Stopped';
type Target = 'Running' | 'Standby' | 'Stopped';

/** `disk` (Stopped) or `memory` (Standby); hypeman's names are accepted too. */
export function parseKind(value: string): Kind {
  const k = value.toLowerCase();
  if (k === 'disk' || k === 'stopped') return 'Stopped';
  if (k === 'memory' || k === 'standby') return 'Standby';
  throw new InvalidArgumentError(`"${value}" is not a snapshot kind (disk or memory)`);
}

export function parseTarget(value: string): Target {
  const t = value.toLowerCase();
  if (t === 'running') return 'Running';
  if (t === 'standby') return 'Standby';
  if (t === 'stopped') return 'Stopped';
  throw new InvalidArgumentError(`"${value}" is not a target state (Running, Standby, Stopped)`);
}

/** Repeated `--tag k=v`. */
export function collectTag(
  value: string,
  prev: Record<string, string> = {},
): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`tag "${value}" must be KEY=VALUE`);
  return { ...prev, [value.slice(0, eq)]: value.slice(eq + 1) };
}

function parseCompression(value: string): 'zstd' | 'lz4' {
  if (value === 'zstd' || value === 'lz4') return value;
  throw new InvalidArgumentError(`"${value}" is not a compression algorithm (zstd or lz4)`);
}

function kindWord(s: Snapshot): string {
  return s.kind === 'Standby' ? 'memory' : 'disk';
}

export function registerSnapshotCommands(program: Command, globals: Globals): void {
  const snapshot = program
    .command('snapshot')
    .description('named snapshots of instances: take, list, roll back to, fork from');

  snapshot
    .command('create')
    .description(
      'snapshot an instance: memory (Running, Paused or Standby; it keeps running) or disk (Stopped)',
    )
    .argument('<instance>', 'id or name')
    .option('--kind <kind>', 'memory or disk (default: disk when Stopped, else memory)', parseKind)
    .option('--name <name>', 'snapshot name (unique per instance)')
    .option('--tag <key=value>', 'a tag (repeatable)', collectTag)
    .option(
      '--compress <algorithm>',
      'compress the memory state afterwards: zstd or lz4',
      parseCompression,
    )
    .action(
      async (
        instance: string,
        o: { kind?: Kind; name?: string; tag?: Record<string, string>; compress?: 'zstd' | 'lz4' },
      ) => {
        const g = globals();
        const client = await connect(g);
        const kind =
          o.kind ??
          ((await client.getInstance(instance)).state === 'Stopped' ? 'Stopped' : 'Standby');
        const created = await client.createSnapshot(instance, {
          kind,
          ...(o.name === undefined ? {} : { name: o.name }),
          ...(o.tag === undefined ? {} : { tags: o.tag }),
          ...(o.compress === undefined
            ? {}
            : { compression: { enabled: true, algorithm: o.compress } }),
        });
        if (g.json) return printJson(created);
        process.stdout.write(`${created.id}\n`);
      },
    );

  snapshot
    .command('ls')
    .alias('list')
    .description('list snapshots')
    .option('--instance <id|name>', 'only snapshots of this instance')
    .option('--kind <kind>', 'only memory or disk snapshots', parseKind)
    .option('--name <name>', 'only snapshots with this name')
    .option('--tag <key=value>', 'only snapshots with this tag (repeatable)', collectTag)
    .action(
      async (o: {
        instance?: string;
        kind?: Kind;
        name?: string;
        tag?: Record<string, string>;
      }) => {
        const g = globals();
        const all = await (
          await connect(g)
        ).listSnapshots({
          ...(o.instance === undefined ? {} : { instance: o.instance }),
          ...(o.kind === undefined ? {} : { kind: o.kind }),
          ...(o.name === undefined ? {} : { name: o.name }),
          ...(o.tag === undefined ? {} : { tags: o.tag }),
        });
        if (g.json) return printJson(all);
        process.stdout.write(
          `${table(
            ['ID', 'NAME', 'KIND', 'INSTANCE', 'SIZE', 'COMPRESSION', 'CREATED'],
            all.map((s) => [
              s.id,
              s.name ?? '-',
              kindWord(s),
              s.source_instance_exists
                ? s.source_instance_name
                : `${s.source_instance_name} (deleted)`,
              humanBytes(s.size_bytes),
              s.compression ? `${s.compression.algorithm ?? 'zstd'} ${s.compression_state}` : '-',
              ago(s.created_at),
            ]),
          )}\n`,
        );
      },
    );

  snapshot
    .command('inspect')
    .description('show one snapshot as JSON')
    .argument('<snapshot>', 'id (or a name only one snapshot has)')
    .action(async (id: string) => {
      printJson(await (await connect(globals())).getSnapshot(id));
    });

  snapshot
    .command('rm')
    .alias('remove')
    .description('delete snapshots and their files')
    .argument('<snapshots...>', 'ids (or names)')
    .action(async (ids: string[]) => {
      const g = globals();
      const client = await connect(g);
      const removed: string[] = [];
      for (const id of ids) {
        await client.deleteSnapshot(id);
        removed.push(id);
        if (!g.json) process.stdout.write(`removed ${id}\n`);
      }
      if (g.json) printJson({ removed });
    });

  snapshot
    .command('restore')
    .description('roll an instance back to one of its snapshots (its current state is lost)')
    .argument('<instance>', 'id or name')
    .argument('<snapshot>', 'id (or name)')
    .option(
      '--state <state>',
      'end state: Running, Standby or Stopped (default: Running for memory snapshots, Stopped for disk ones)',
      parseTarget,
    )
    .action(async (instance: string, id: string, o: { state?: Target }) => {
      const g = globals();
      const inst = await (
        await connect(g)
      ).restoreSnapshot(instance, id, {
        ...(o.state === undefined ? {} : { target_state: o.state }),
      });
      if (g.json) return printJson(inst);
      process.stdout.write(`${inst.name} ${inst.state}\n`);
    });

  snapshot
    .command('fork')
    .description('a new instance from a snapshot (own name, hostname, MAC and address)')
    .argument('<snapshot>', 'id (or name)')
    .option('--name <name>', 'name of the new instance')
    .option(
      '--state <state>',
      'end state: Running, Standby or Stopped (default: Running for memory snapshots, Stopped for disk ones)',
      parseTarget,
    )
    .action(async (id: string, o: { name?: string; state?: Target }) => {
      const g = globals();
      const inst = await (
        await connect(g)
      ).forkSnapshot(id, {
        ...(o.name === undefined ? {} : { name: o.name }),
        ...(o.state === undefined ? {} : { target_state: o.state }),
      });
      if (g.json) return printJson(inst);
      process.stdout.write(`${inst.name}\n`);
    });
}
