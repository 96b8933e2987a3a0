import type { Command } from 'commander';
import type { Kernel } from '../../client/index.js';
import { connect, type GlobalOptions } from '../connect.js';
import { ago, humanBytes, printJson, table } from '../output.js';

type Globals = () => GlobalOptions;

/** `NAME` or `NAME/VERSION` (the form `vessel kernel ls` and instance records use). */
export function parseKernelRef(ref: string): { name: string; version?: string } {
  const slash = ref.indexOf('/');
  if (slash < 0) return { name: ref };
  return { name: ref.slice(0, slash), version: ref.slice(slash + 1) };
}

function kernelLine(k: Kernel): string {
  return `${k.name}/${k.version}  ${k.source_type}  ${humanBytes(k.size_bytes)}`;
}

export function registerKernelCommands(program: Command, globals: Globals): void {
  const kernel = program
    .command('kernel')
    .description('pull, list and remove guest kernels (instances auto-pull the default one)');

  kernel
    .command('pull')
    .description('pull a kernel from the catalog; the source decides the version')
    .argument('[name]', 'catalog name (default: debian-cloud-6.1)')
    .action(async (name: string | undefined) => {
      const g = globals();
      const client = await connect(g);
      if (!g.json && process.stderr.isTTY) {
        process.stderr.write(`pulling kernel ${name ?? '(default)'}…\n`);
      }
      const k = await client.pullKernel(name);
      if (g.json) return printJson(k);
      process.stdout.write(`${kernelLine(k)}\n`);
    });

  kernel
    .command('ls')
    .alias('list')
    .description('list pulled kernels')
    .action(async () => {
      const g = globals();
      const kernels = await (await connect(g)).listKernels();
      if (g.json) return printJson(kernels);
      process.stdout.write(
        `${table(
          ['NAME', 'VERSION', 'SOURCE', 'SIZE', 'USED BY', 'CREATED'],
          kernels.map((k) => [
            k.name,
            k.version,
            k.source_type,
            humanBytes(k.size_bytes),
            k.in_use_by.length > 0 ? k.in_use_by.join(',') : '-',
            ago(k.created_at),
          ]),
        )}\n`,
      );
    });

  kernel
    .command('rm')
    .alias('remove')
    .description('remove kernels (refused while an instance uses them)')
    .argument('<kernels...>', 'NAME (every version) or NAME/VERSION')
    .action(async (refs: string[]) => {
      const client = await connect(globals());
      for (const ref of refs) {
        const { name, version } = parseKernelRef(ref);
        await client.deleteKernel(name, version);
        process.stdout.write(`removed ${ref}\n`);
      }
    });
}
