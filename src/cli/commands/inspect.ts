import type { Command } from 'commander';
import type { Instance, InstanceStats, VesselClient } from '../../client/index.js';
import { VesselError } from '../../core/errors.js';
import { connect, type GlobalOptions } from '../connect.js';
import { humanBytes, printJson, table } from '../output.js';

type Globals = () => GlobalOptions;
type SetExit = (code: number) => void;

/** Instance states with a hypervisor process: the ones `stats` shows by default. */
const LIVE = new Set(['Initializing', 'Running', 'Paused', 'Shutdown']);

/** One sample with the CPU use since the previous one (percent of one CPU). */
export interface StatsSample extends InstanceStats {
  cpu_percent: number | null;
}

/** CPU % between two samples of one instance: CPU seconds over wall seconds. */
export function cpuPercent(prev: InstanceStats | undefined, cur: InstanceStats): number | null {
  if (!prev || prev.cpu_seconds === null || cur.cpu_seconds === null || prev.pid !== cur.pid)
    return null;
  const wall = (Date.parse(cur.collected_at) - Date.parse(prev.collected_at)) / 1000;
  if (wall <= 0) return null;
  return Math.max(0, ((cur.cpu_seconds - prev.cpu_seconds) / wall) * 100);
}

const pair = (a: number | null, b: number | null): string => `${humanBytes(a)} / ${humanBytes(b)}`;

/** The `vessel stats` table. */
export function statsTable(samples: readonly StatsSample[]): string {
  return table(
    ['NAME', 'STATE', 'CPU %', 'MEM (RSS)', 'MEM %', 'NET RX / TX', 'DISK R / W'],
    samples.map((s) => [
      s.instance_name,
      s.state,
      s.cpu_percent === null ? '-' : s.cpu_percent.toFixed(1),
      `${humanBytes(s.memory_rss_bytes)} / ${humanBytes(s.allocated_memory_bytes)}`,
      s.memory_utilization_ratio === null ? '-' : (s.memory_utilization_ratio * 100).toFixed(1),
      pair(s.network_rx_bytes, s.network_tx_bytes),
      pair(s.disk_read_bytes, s.disk_write_bytes),
    ]),
  );
}

async function sample(
  client: VesselClient,
  names: readonly string[],
  prev: ReadonlyMap<string, InstanceStats>,
): Promise<StatsSample[]> {
  const all = await Promise.all(names.map((n) => client.instanceStats(n)));
  return all.map((s) => ({ ...s, cpu_percent: cpuPercent(prev.get(s.instance_id), s) }));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `inspect` (the whole instance as JSON) and `stats` (resource use, once or live). */
export function registerInspectCommands(
  program: Command,
  globals: Globals,
  _setExit: SetExit,
): void {
  program
    .command('inspect')
    .description('print instances as JSON: config, state, network, exit code, timings')
    .argument('<instances...>', 'ids or names')
    .action(async (ids: string[]) => {
      const client = await connect(globals());
      const found: Instance[] = [];
      for (const id of ids) found.push(await client.getInstance(id));
      printJson(found.length === 1 ? found[0] : found);
    });

  program
    .command('stats')
    .description('CPU %, memory, network and disk I/O of instances (default: every one with a VM)')
    .argument('[instances...]', 'ids or names')
    .option('-w, --watch', 'keep updating until Ctrl-C')
    .option('--interval <seconds>', 'seconds between samples', (v) => Number(v), 2)
    .action(async (ids: string[], o: { watch?: boolean; interval: number }) => {
      if (!Number.isFinite(o.interval) || o.interval < 0.2 || o.interval > 3600) {
        throw new VesselError('invalid_argument', '--interval must be 0.2..3600 seconds');
      }
      const client = await connect(globals());
      const json = globals().json === true;
      const names =
        ids.length > 0
          ? ids
          : (await client.listInstances()).filter((i) => LIVE.has(i.state)).map((i) => i.id);
      const prev = new Map<string, InstanceStats>();
      const remember = (samples: readonly StatsSample[]): void => {
        for (const s of samples) prev.set(s.instance_id, s);
      };
      // CPU % needs two samples: the first one only sets the baseline.
      remember(await sample(client, names, prev));
      const tty = process.stdout.isTTY;
      for (;;) {
        await sleep(o.watch ? o.interval * 1000 : 1000);
        const samples = await sample(client, names, prev);
        remember(samples);
        if (json) {
          process.stdout.write(
            o.watch ? `${JSON.stringify(samples)}\n` : `${JSON.stringify(samples, null, 2)}\n`,
          );
        } else {
          if (o.watch && tty) process.stdout.write('\x1b[H\x1b[2J');
          process.stdout.write(`${statsTable(samples)}\n`);
        }
        if (!o.watch) return;
      }
    });
}
