// Issue 11, item 4 — kill -9 of the hypervisor at random points of boot, standby and
// restore: the instance leaves its VMM states within a second (timed on the lifecycle
// event stream), ends Stopped (or Standby, when the snapshot was whole), and nothing leaks.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { Instance } from '../../src/client/index.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { assertNoLeaks, LeakChecker, vmmPids, type LeakSnapshot } from './leaks.js';
import { figure, size } from './suite.js';
import {
  recordEvents,
  running,
  sleep,
  startVmEnv,
  sh,
  type EventRecorder,
  type VmEnv,
} from './vm-env.js';

const why = await vmSkipReason();

const TRIALS = size(2, 20);
/** Attempts are bounded: a random point can fall after the phase ended (then it is retried). */
const MAX_ATTEMPTS = TRIALS * 3;
/** States in which a hypervisor process runs the instance. */
const VMM_STATES = new Set(['Initializing', 'Running', 'Paused']);
/** The issue's bound from the kill to the state leaving Running/Initializing. */
const LEAVE_MS = 1000;

type Phase = 'boot' | 'standby' | 'restore';

/** One kill inside a phase: how long the state took to leave the VMM states, and where it ended. */
interface Outcome {
  readonly leaveMs: number;
  readonly killedIn: string;
  readonly final: Instance;
}

describe(
  'kill -9 of the hypervisor during boot, standby and restore',
  { skip: why, timeout: 3600_000 },
  () => {
    let env: VmEnv | undefined;
    let checker: LeakChecker;
    let base: LeakSnapshot;
    let events: EventRecorder;
    /** How long each phase takes undisturbed: random kill points are drawn from [0, span). */
    let spans: Record<Phase, number>;

    before(async () => {
      env = await startVmEnv('vkill');
      events = await recordEvents(env.client);
      spans = await calibrate(env);
      checker = new LeakChecker(() => env!);
      base = await checker.snapshot(); // after calibrate's VM: descriptors opened once are in
    });

    after(async () => {
      await events?.stop();
      await env?.close();
    });

    /** The instance's state as the event stream last told it before `at`. */
    function stateAt(id: string, at: number): string | undefined {
      const hops = events.seen.filter(
        (s) => s.event.instance_id === id && s.event.type === 'state' && s.at <= at,
      );
      return hops.at(-1)?.event.new_state ?? undefined;
    }

    /** Poll for the VMM of `id` and kill -9 it; undefined when the phase ended first. */
    async function killVmm(
      e: VmEnv,
      id: string,
      ended: () => boolean,
    ): Promise<number | undefined> {
      for (;;) {
        const pid = (await vmmPids(e.dir, id))[0];
        if (pid === undefined && ended()) return undefined;
        if (pid !== undefined && !ended()) {
          const at = Date.now();
          process.kill(pid, 'SIGKILL');
          return at;
        }
        if (pid !== undefined) return undefined; // ended: the VM now runs past the phase
        await sleep(5);
      }
    }

    /**
     * Time from the kill at `at` to the state leaving the VMM states: 0 when it never was in
     * one after the kill (a restore killed before its Standby → Paused hop stays Standby).
     */
    async function leaveTime(id: string, at: number): Promise<{ ms: number; killedIn: string }> {
      const killedIn = stateAt(id, at) ?? 'Initializing';
      const enteredLater = events.seen.some(
        (s) => s.at >= at && s.event.instance_id === id && VMM_STATES.has(s.event.new_state ?? ''),
      );
      if (!VMM_STATES.has(killedIn) && !enteredLater) return { ms: 0, killedIn };
      const left = await events
        .waitFor(
          (ev) =>
            ev.instance_id === id && ev.type === 'state' && !VMM_STATES.has(ev.new_state ?? ''),
          10_000,
          at,
        )
        .catch(() => Infinity);
      return { ms: left - at, killedIn };
    }

    /** Start `phase` on a fresh instance and hand back its operation and when it is over. */
    async function startPhase(e: VmEnv, phase: Phase, name: string) {
      const c = e.client;
      const inst = await c.createInstance(e.request({ name }));
      checker.track(inst);
      if (phase !== 'boot') await running(c, inst.id);
      if (phase === 'restore') await c.instanceAction(inst.id, 'standby');
      const t0 = Date.now();
      let settledAt: number | undefined;
      // Boot is over once the state leaves Initializing; standby and restore once they answer.
      const op = (
        phase === 'boot'
          ? events.waitFor(
              (ev) =>
                ev.instance_id === inst.id &&
                ev.type === 'state' &&
                !['Created', 'Initializing'].includes(ev.new_state ?? ''),
              180_000,
            )
          : c.instanceAction(inst.id, phase)
      )
        .then(
          () => 'ok',
          (err: unknown) => `failed: ${String(err)}`,
        )
        .finally(() => (settledAt = Date.now()));
      const ended = (): boolean => settledAt !== undefined;
      return { inst, op, ended, length: () => (settledAt ?? Date.now()) - t0 };
    }

    /** One attempt: a random kill point inside `phase`; undefined when it fell after the phase. */
    async function attempt(
      t: TestContext,
      e: VmEnv,
      phase: Phase,
      name: string,
      spanMs: number,
    ): Promise<Outcome | undefined> {
      const run = await startPhase(e, phase, name);
      const delay = Math.round(Math.random() * spanMs);
      await sleep(delay);
      const at = await killVmm(e, run.inst.id, run.ended);
      // The operation's own answer first: the events of its way out are then all in.
      const answer = await run.op;
      const left = at === undefined ? undefined : await leaveTime(run.inst.id, at);
      const final = await e.client.getInstance(run.inst.id);
      t.diagnostic(
        `${name}: delay ${delay} ms, ${left ? `killed in ${left.killedIn}, out in ${left.ms} ms` : 'missed (phase over)'}; ` +
          `${phase} ${answer} after ${run.length()} ms; now ${final.state} (${final.state_error ?? 'no error'})`,
      );
      await e.client.deleteInstance(run.inst.id);
      return left && { leaveMs: left.ms, killedIn: left.killedIn, final };
    }

    for (const phase of ['boot', 'standby', 'restore'] as const) {
      test(`during ${phase}: out of the VMM states within ${LEAVE_MS} ms, nothing leaks`, async (t) => {
        const e = env!;
        const outcomes: Outcome[] = [];
        const span = spans[phase];
        figure(`vmm_kill.${phase}.undisturbed_length`, span, 'ms');
        for (let n = 0; outcomes.length < TRIALS && n < MAX_ATTEMPTS; n++) {
          const outcome = await attempt(t, e, phase, `${phase}-${n}`, span);
          if (outcome) outcomes.push(outcome);
        }
        const report = await checker.leaks(base);
        const maxMs = Math.max(...outcomes.map((o) => o.leaveMs));
        figure(`vmm_kill.${phase}.kills`, outcomes.length, 'kills');
        figure(`vmm_kill.${phase}.max_leave_time`, outcomes.length ? maxMs : 'n/a', 'ms');
        await assertNoLeaks(`vmm_kill.${phase}`, report);
        assert.ok(outcomes.length > 0, `no kill of ${MAX_ATTEMPTS} landed inside the ${phase}`);
        for (const o of outcomes) {
          assert.ok(
            o.leaveMs < LEAVE_MS,
            `${o.final.name}: left ${o.killedIn} after ${o.leaveMs} ms`,
          );
          assert.ok(
            o.final.state === 'Stopped' || o.final.state === 'Standby',
            `${o.final.name} ended ${o.final.state}`,
          );
          assert.equal(o.final.pid, null, `${o.final.name} still names a hypervisor`);
        }
      });
    }
  },
);

/** Boot, standby and restore one VM with nobody killing anything: each phase's length (ms). */
async function calibrate(e: VmEnv): Promise<Record<Phase, number>> {
  const c = e.client;
  const inst = await c.createInstance(e.request({ name: 'calibrate' }));
  const timed = async (op: () => Promise<unknown>): Promise<number> => {
    const t0 = Date.now();
    await op();
    return Date.now() - t0;
  };
  const boot = await timed(() => running(c, inst.id));
  assert.equal(await sh(c, inst.id, 'echo ok'), 'ok\n');
  const standby = await timed(() => c.instanceAction(inst.id, 'standby'));
  const restore = await timed(() => c.instanceAction(inst.id, 'restore'));
  await c.deleteInstance(inst.id);
  return { boot, standby, restore };
}
