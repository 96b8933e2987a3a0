import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import type { Volume } from '../../client/index.js';
import { VesselError } from '../../core/errors.js';
import { parseSize } from '../../core/size.js';
import { connect, type GlobalOptions } from '../connect.js';
import { ago, printJson, table } from '../output.js';
import { sizeGbFor } from '../volume-spec.js';

type Globals = () => GlobalOptions;

const GIB = 1024 ** 3;

/** `--size 10G` → whole GiB. */
function sizeGb(value: string): number {
  let bytes: number;
  try {
    bytes = parseSize(value, '--size');
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
  if (bytes < GIB || bytes % GIB !== 0)
    throw new InvalidArgumentError(`--size "${value}" must be a whole number of GiB (1G, 10G)`);
  return bytes / GIB;
}

function collectTag(value: string, prev: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`tag "${value}" must be KEY=VALUE`);
  return { ...prev, [value.slice(0, eq)]: value.slice(eq + 1) };
}

function attachments(v: Volume): string {
  if (v.attachments.length === 0) return '-';
  return v.attachments
    .map(
      (a) => `${a.instance_id}:${a.mount_path}${a.overlay ? ':overlay' : a.readonly ? ':ro' : ''}`,
    )
    .join(', ');
}

export function registerVolumeCommands(program: Command, globals: Globals): void {
  const volume = program
    .command('volume')
    .description('ext4 volumes: data that outlives instances (attach with `vessel run -v`)');

  volume
    .command('create')
    .description('create an empty volume')
    .argument('<name>', 'volume name')
    .requiredOption('--size <size>', 'size in whole GiB, e.g. 1G or 10G', sizeGb)
    .option('--tag <key=value>', 'a tag (repeatable)', collectTag)
    .action(async (name: string, o: { size: number; tag?: Record<string, string> }) => {
      const g = globals();
      const v = await (
        await connect(g)
      ).createVolume({ name, size_gb: o.size, ...(o.tag ? { tags: o.tag } : {}) });
      if (g.json) return printJson(v);
      process.stdout.write(`${v.id}\n`);
    });

  volume
    .command('import')
    .description(
      'create a volume from a tar, tar.gz or tar.zst file (entries may not leave the volume; device nodes are skipped)',
    )
    .argument('<name>', 'volume name')
    .argument('<file>', 'FILE.tar, FILE.tar.gz or FILE.tar.zst')
    .option(
      '--size <size>',
      'size in whole GiB (default: estimated from the file; content that does not fit is refused)',
      sizeGb,
    )
    .action(async (name: string, file: string, o: { size?: number }) => {
      const g = globals();
      const st = await fs.stat(file).catch(() => {
        throw new VesselError('invalid_argument', `${file}: no such file`);
      });
      const head = Buffer.alloc(4);
      const fh = await fs.open(file, 'r');
      await fh.read(head, 0, 4, 0).finally(() => fh.close());
      const compressed = head[0] === 0x1f || head[0] === 0x28;
      const size = o.size ?? sizeGbFor(compressed ? st.size * 4 : st.size);
      const v = await (
        await connect(g)
      ).createVolumeFromArchive(createReadStream(file), { name, size_gb: size });
      if (g.json) return printJson(v);
      process.stdout.write(`${v.id}\n`);
    });

  volume
    .command('ls')
    .alias('list')
    .description('list volumes')
    .option('--tag <key=value>', 'only volumes with this tag (repeatable)', collectTag)
    .action(async (o: { tag?: Record<string, string> }) => {
      const g = globals();
      const all = await (await connect(g)).listVolumes(o.tag ? { tags: o.tag } : {});
      if (g.json) return printJson(all);
      process.stdout.write(
        `${table(
          ['ID', 'NAME', 'SIZE', 'ATTACHED', 'CREATED'],
          all.map((v) => [v.id, v.name, `${v.size_gb}GiB`, attachments(v), ago(v.created_at)]),
        )}\n`,
      );
    });

  volume
    .command('inspect')
    .description('show one volume as JSON')
    .argument('<volume>', 'id or name')
    .action(async (id: string) => {
      printJson(await (await connect(globals())).getVolume(id));
    });

  volume
    .command('rm')
    .alias('remove')
    .description('delete volumes (refused while attached)')
    .argument('<volumes...>', 'ids or names')
    .action(async (ids: string[]) => {
      const g = globals();
      const client = await connect(g);
      const removed: string[] = [];
      for (const id of ids) {
        await client.deleteVolume(id);
        removed.push(id);
        if (!g.json) process.stdout.write(`removed ${id}\n`);
      }
      if (g.json) printJson({ removed });
    });
}
