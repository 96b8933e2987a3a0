import { InvalidArgumentError, type Command } from 'commander';
import type { Ingress } from '../../client/index.js';
import { connect, type GlobalOptions } from '../connect.js';
import { ago, printJson, table } from '../output.js';

type Globals = () => GlobalOptions;

function port(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 65535)
    throw new InvalidArgumentError(`"${value}" is not a port (1..65535)`);
  return n;
}

function line(i: Ingress): string {
  return `${i.name}  http://${i.hostname}:${i.host_port} -> ${i.instance}:${i.guest_port}`;
}

export function registerIngressCommands(program: Command, globals: Globals): void {
  const ingress = program
    .command('ingress')
    .description('HTTP routes by Host header to instances (`{instance}.example.com` patterns)');

  ingress
    .command('create')
    .description('route HOSTNAME on the host port to an instance port')
    .argument('<name>', 'ingress name')
    .requiredOption(
      '--hostname <host>',
      'Host header to match, or a pattern like {instance}.example.com',
    )
    .option('--instance <id|name>', 'target instance (default for a pattern: {instance})')
    .requiredOption('--guest-port <port>', 'port inside the instance', port)
    .option('--host-port <port>', 'port of the ingress listener (default 80)', port)
    .action(
      async (
        name: string,
        o: { hostname: string; instance?: string; guestPort: number; hostPort?: number },
      ) => {
        const g = globals();
        const created = await (
          await connect(g)
        ).createIngress({
          name,
          hostname: o.hostname,
          guest_port: o.guestPort,
          ...(o.instance === undefined ? {} : { instance: o.instance }),
          ...(o.hostPort === undefined ? {} : { host_port: o.hostPort }),
        });
        if (g.json) return printJson(created);
        process.stdout.write(`${line(created)}\n`);
      },
    );

  ingress
    .command('ls')
    .alias('list')
    .description('list ingress routes')
    .action(async () => {
      const g = globals();
      const all = await (await connect(g)).listIngresses();
      if (g.json) return printJson(all);
      process.stdout.write(
        `${table(
          ['NAME', 'HOSTNAME', 'LISTEN', 'INSTANCE', 'GUEST PORT', 'CREATED'],
          all.map((i) => [
            i.name,
            i.hostname,
            `${i.listen_address}:${i.host_port}`,
            i.instance,
            String(i.guest_port),
            ago(i.created_at),
          ]),
        )}\n`,
      );
    });

  ingress
    .command('inspect')
    .description('show one ingress route as JSON')
    .argument('<ingress>', 'id or name')
    .action(async (id: string) => {
      printJson(await (await connect(globals())).getIngress(id));
    });

  ingress
    .command('rm')
    .alias('remove')
    .description('remove ingress routes')
    .argument('<ingresses...>', 'ids or names')
    .action(async (ids: string[]) => {
      const g = globals();
      const client = await connect(g);
      const removed: string[] = [];
      for (const id of ids) {
        await client.deleteIngress(id);
        removed.push(id);
        if (!g.json) process.stdout.write(`removed ${id}\n`);
      }
      if (g.json) printJson({ removed });
    });
}
