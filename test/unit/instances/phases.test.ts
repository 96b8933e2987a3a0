// Phase accounting (time per state, boot phases), exit messages and /proc parsers: pure parts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { describeExit } from '../../../src/instances/exit.js';
import {
  accruePhase,
  markBootBegin,
  markProgramStart,
  phaseView,
} from '../../../src/instances/phases.js';
import { parseProcStat, parseProcStatus } from '../../../src/instances/stats.js';
import type { InstanceRow } from '../../../src/store/index.js';

const T0 = Date.parse('2030-01-01T00:00:00Z');

function row(over: Partial<InstanceRow> = {}): InstanceRow {
  return {
    id: 'i1',
    name: 'one',
    image: 'img',
    image_digest: 'sha256:x',
    state: 'Created',
    state_error: null,
    kernel: 'k/1',
    hypervisor: 'qemu',
    accel: null,
    vcpus: 1,
    memory_mib: 256,
    disk_bytes: 1,
    guest: {},
    pid: null,
    sockets: null,
    exit_code: null,
    created_at: new Date(T0).toISOString(),
    started_at: null,
    stopped_at: null,
    cid: 3,
    source_id: null,
    ...over,
  };
}

describe('phase accounting', () => {
  test('time per state accrues across changes and includes the open phase', () => {
    const owner = {};
    let r = row();
    r = accruePhase(owner, { ...r, state: 'Initializing' }, 'Created', T0 + 100);
    r = accruePhase(owner, { ...r, state: 'Running' }, 'Initializing', T0 + 2100);
    r = accruePhase(owner, { ...r, state: 'Stopped' }, 'Running', T0 + 12_100);
    r = accruePhase(owner, { ...r, state: 'Initializing' }, 'Stopped', T0 + 13_100);
    r = accruePhase(owner, { ...r, state: 'Running' }, 'Initializing', T0 + 14_100);
    const v = phaseView(r, T0 + 15_100);
    assert.deepEqual(v.phase_durations_ms, {
      created: 100,
      initializing: 3000,
      running: 11_000,
      stopped: 1000,
    });
    assert.equal(v.current_phase, 'running');
    assert.equal(v.current_phase_since, new Date(T0 + 14_100).toISOString());
  });

  test('a row without a record (older rows) starts its phase at its own times', () => {
    const v = phaseView(
      row({ state: 'Running', started_at: new Date(T0 + 500).toISOString() }),
      T0 + 1500,
    );
    assert.deepEqual(v.phase_durations_ms, { running: 1000 });
    assert.equal(v.boot_durations_ms, null);
  });

  test('a cold boot records VMM start, guest boot and agent ready', () => {
    const owner = {};
    let r = row();
    markBootBegin(owner, 'i1', T0);
    r = accruePhase(owner, { ...r, state: 'Initializing' }, 'Created', T0 + 300);
    markProgramStart(owner, 'i1', T0 + 1800);
    r = accruePhase(owner, { ...r, state: 'Running' }, 'Initializing', T0 + 2000);
    assert.deepEqual(phaseView(r, T0 + 2000).boot_durations_ms, {
      vmm_start: 300,
      guest_boot: 1500,
      agent_ready: 200,
      total: 2000,
    });
    // A restore (Paused → Running) keeps the last boot's numbers.
    r = accruePhase(owner, { ...r, state: 'Paused' }, 'Running', T0 + 3000);
    r = accruePhase(owner, { ...r, state: 'Running' }, 'Paused', T0 + 4000);
    assert.equal(phaseView(r).boot_durations_ms?.total, 2000);
  });
});

describe('exit messages (hypeman phrases)', () => {
  test('codes, signals and start failures', () => {
    assert.equal(describeExit({ code: 0, signal: null }), 'success');
    assert.equal(describeExit({ code: 3, signal: null }), 'exit code 3');
    assert.equal(describeExit({ code: 127, signal: null }), 'command not found');
    assert.equal(
      describeExit({ code: 127, signal: null, message: 'no such file: /nope' }),
      'command not found: no such file: /nope',
    );
    assert.equal(
      describeExit({ code: 126, signal: null }),
      'permission denied (command not executable)',
    );
    assert.equal(describeExit({ code: 137, signal: null }), 'killed by signal 9 (SIGKILL)');
    assert.equal(describeExit({ code: null, signal: 15 }), 'killed by signal 15 (SIGTERM)');
    assert.equal(describeExit({ code: null, signal: null }), null);
  });
});

describe('/proc parsers', () => {
  test('CPU time of /proc/<pid>/stat, with a command name holding spaces and parentheses', () => {
    const line =
      '4242 (qemu (x) y) S 1 4242 4242 0 -1 4194624 1000 0 0 0 250 125 0 0 20 0 3 0 100 1000000 5000 18446744073709551615\n';
    assert.equal(parseProcStat(line), 3.75);
    assert.throws(() => parseProcStat('garbage'), /unexpected/);
  });

  test('RSS and virtual size of /proc/<pid>/status', () => {
    const text = 'Name:\tqemu\nVmPeak:\t  900000 kB\nVmSize:\t  812000 kB\nVmRSS:\t   64000 kB\n';
    assert.deepEqual(parseProcStatus(text), { rss: 64000 * 1024, vms: 812000 * 1024 });
    assert.throws(() => parseProcStatus('Name:\tx\n'), /VmRSS/);
  });
});
