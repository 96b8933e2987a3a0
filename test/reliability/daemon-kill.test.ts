// Issue 11, item 3 — kill -9 of the daemon with VMs running (user-mode networking): the
// next daemon re-adopts every one, with the same hypervisor, a working exec, the app log
// intact across the kill, and nothing left behind once they are deleted.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Instance } from '../../src/client/index.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { assertNoLeaks, LeakChecker } from './leaks.js';
import { figure, size } from './suite.js';
import { appLog, running, sh, sleep, startVmEnv, type VmEnv } from './vm-env.js';

const why = await vmSkipReason();

/** 4 at CI size: ten TCG boots on two cores take over a minute; the full run has the ten. */
const VMS = size(4, 10);
/** A numbered line a second: a lost or doubled line of the app log shows as a gap or a repeat. */
const TICKER = ['/bin/sh', '-c', 'i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 1; done'];

/** The tick numbers in an app log, in order. */
function ticks(log: string): number[] {
  return [...log.matchAll(/^tick (\d+)$/gm)].map((m) => Number(m[1]));
}

/** Wait until the app log of `id` has a tick numbered at least `n`; returns its ticks. */
async function ticksUpTo(e: VmEnv, id: string, n: number, ms = 60_000): Promise<number[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const seen = ticks(await appLog(e.client, id));
    if ((seen.at(-1) ?? -1) >= n) return seen;
    if (Date.now() > deadline)
      throw new Error(`${id}: no "tick ${n}" in ${ms} ms (${seen.at(-1)})`);
    await sleep(250);
  }
}

describe('daemon kill -9 with VMs running', { skip: why, timeout: 3600_000 }, () => {
  let env: VmEnv | undefined;

  before(async () => {
    env = await startVmEnv('dkill');
  });

  after(async () => {
    await env?.close();
  });

  test(`${VMS} running VMs are all re-adopted by the next daemon`, async () => {
    const e = env!;
    const checker = new LeakChecker(() => e);
    const base = await checker.snapshot();
    const made = await Promise.all(
      Array.from({ length: VMS }, (_, i) =>
        e.client.createInstance(e.request({ name: `tick-${i}`, cmd: TICKER })),
      ),
    );
    const before = await Promise.all(made.map((m) => running(e.client, m.id, 300)));
    // Every VM has printed a line the old daemon logged before it dies.
    const atKill = await Promise.all(before.map((b) => ticksUpTo(e, b.id, 1)));
    const killedAt = Date.now();
    await e.restartDaemon();
    const readyMs = Date.now() - killedAt;
    const adopted = await Promise.all(before.map((b) => readopted(e, b)));
    const adoptMs = Date.now() - killedAt;
    const ok = adopted.filter((a) => a === true).length;

    figure('daemon_kill.vms', VMS, 'VMs');
    figure('daemon_kill.readopted', `${ok}/${VMS}`);
    figure('daemon_kill.time_to_ready', readyMs, 'ms');
    figure('daemon_kill.time_to_readopt', adoptMs, 'ms');
    assert.deepEqual(
      adopted.filter((a) => a !== true),
      [],
      `${VMS - ok} of ${VMS} VMs were not re-adopted`,
    );

    // The log carries on: lines from after the kill, none lost or doubled across it.
    const after = (Date.now() - killedAt) / 1000;
    for (const [i, b] of before.entries()) {
      const last = atKill[i]!.at(-1)!;
      const seen = await ticksUpTo(e, b.id, last + Math.ceil(after) + 2);
      assert.deepEqual(
        seen,
        seen.map((_, k) => k),
        `${b.name}: the app log is not tick 0..n once each`,
      );
    }
    await Promise.all(before.map((b) => e.client.deleteInstance(b.id)));
    await assertNoLeaks('daemon_kill', await checker.leaks(base));
  });
});

/** True when `b` is Running under the new daemon with the same VMM and answers exec; else why not. */
async function readopted(e: VmEnv, b: Instance): Promise<true | string> {
  try {
    const now = await e.client.getInstance(b.id);
    if (now.state !== 'Running') return `${b.name} is ${now.state} (${now.state_error ?? ''})`;
    if (now.pid !== b.pid) return `${b.name} has pid ${now.pid}, was ${b.pid}`;
    const out = await sh(e.client, b.id, 'hostname');
    return out === `${b.name}\n` ? true : `${b.name}: exec said ${JSON.stringify(out)}`;
  } catch (err) {
    return `${b.name}: ${String(err)}`;
  }
}
