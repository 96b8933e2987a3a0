import type { Command } from 'commander';
import { VesselError } from '../../core/errors.js';
import { INSTANCE_STATE_NAMES, LIFECYCLE_EVENT_TYPES } from '../../core/wire-names.js';
import { connect, type GlobalOptions } from '../connect.js';
import { EXIT } from '../exit-codes.js';

type Globals = () => GlobalOptions;
type SetExit = (code: number) => void;

const ACTIONS = [
  ['pause', 'pause running instances (vCPUs stop, memory stays)'],
  ['resume', 'resume paused instances'],
  ['standby', 'snapshot instances to disk and stop their VMMs'],
  ['restore', 'bring standby instances back, memory and all'],
] as const;

function stateArg(text: string): string {
  const match = INSTANCE_STATE_NAMES.find((s) => s.toLowerCase() === text.toLowerCase());
  if (!match) {
    throw new VesselError(
      'invalid_argument',
      `unknown state "${text}" (one of ${INSTANCE_STATE_NAMES.join(', ')})`,
    );
  }
  return match;
}

function typesArg(text: string): string[] {
  const types = text.split(',').filter(Boolean);
  const bad = types.filter((t) => !(LIFECYCLE_EVENT_TYPES as readonly string[]).includes(t));
  if (bad.length > 0) {
    throw new VesselError(
      'invalid_argument',
      `unknown event type ${bad.map((b) => `"${b}"`).join(', ')} (one of ${LIFECYCLE_EVENT_TYPES.join(', ')})`,
    );
  }
  return types;
}

/** `pause`, `resume`, `standby`, `restore`, `fork`, `wait`, `events`. */
export function registerLifecycleCommands(
  program: Command,
  globals: Globals,
  setExit: SetExit,
): void {
  for (const [verb, desc] of ACTIONS) {
    program
      .command(verb)
      .description(desc)
      .argument('<instances...>', 'ids or names')
      .action(async (ids: string[]) => {
        const client = await connect(globals());
        for (const id of ids) {
          const inst = await client.instanceAction(id, verb);
          process.stdout.write(`${inst.name}: ${inst.state}\n`);
        }
      });
  }

  program
    .command('fork')
    .description(
      'copy a stopped or standby instance into a new one (its disk, and its memory when standby)',
    )
    .argument('<instance>', 'id or name')
    .option('--name <name>', 'name of the new instance')
    .action(async (id: string, o: { name?: string }) => {
      const client = await connect(globals());
      const inst = await client.forkInstance(id, o.name);
      if (globals().json) process.stdout.write(`${JSON.stringify(inst, null, 2)}\n`);
      else process.stdout.write(`${inst.name}: ${inst.state} (forked from ${id})\n`);
    });

  program
    .command('wait')
    .description('wait until an instance reaches a state; exit 1 on timeout')
    .argument('<instance>', 'id or name')
    .argument('<state>', `one of ${INSTANCE_STATE_NAMES.join(', ')}`, stateArg)
    .option('-t, --timeout <seconds>', 'give up after this long', (v) => Number(v), 60)
    .action(async (id: string, state: string, o: { timeout: number }) => {
      if (!Number.isFinite(o.timeout) || o.timeout < 0 || o.timeout > 3600) {
        throw new VesselError('invalid_argument', '--timeout must be 0..3600 seconds');
      }
      const client = await connect(globals());
      const r = await client.waitInstance(id, state, o.timeout);
      if (globals().json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else if (r.timed_out) process.stderr.write(`timed out: ${id} is ${r.state}\n`);
      else process.stdout.write(`${id}: ${r.state}\n`);
      if (r.timed_out) setExit(EXIT.failure);
    });

  program
    .command('events')
    .description('follow instance lifecycle events (Ctrl-C to stop)')
    .option('--instance <instance>', 'only this instance (id or name)')
    .option('--type <types>', `comma-separated: ${LIFECYCLE_EVENT_TYPES.join(',')}`, typesArg)
    .action(async (o: { instance?: string; type?: string[] }) => {
      const client = await connect(globals());
      const json = globals().json === true;
      for await (const e of client.events({
        ...(o.instance ? { instance: o.instance } : {}),
        ...(o.type ? { types: o.type } : {}),
      })) {
        if (json) {
          process.stdout.write(`${JSON.stringify(e)}\n`);
          continue;
        }
        const states =
          e.old_state === e.new_state
            ? (e.new_state ?? '')
            : `${e.old_state ?? '-'} → ${e.new_state ?? '-'}`;
        const err = e.state_error ? `  (${e.state_error})` : '';
        process.stdout.write(`${e.time}  ${e.instance_name}  ${e.type}  ${states}${err}\n`);
      }
    });
}
