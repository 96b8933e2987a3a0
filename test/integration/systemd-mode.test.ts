// Systemd mode with a real microVM: an image whose command is an init (/sbin/init,
// here busybox init with an /etc/inittab) gets PID 1, while vessel-init keeps the
// agent running in a forked process; a graceful stop (the ACPI power button) reaches
// that init — and, in exec mode, the main command as SIGTERM.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InstanceManager } from '../../src/instances/index.js';
import { busyboxImage, writeDockerArchive, type EntrySpec } from '../helpers/oci-builder.js';
import {
  makeImageEnv,
  makeInstanceManager,
  type ImageEnv,
  waitForStates,
} from '../helpers/image-env.js';
import { appLog } from '../helpers/app-log.js';
import { vmSkipReason } from '../helpers/prereqs.js';

const why = await vmSkipReason();

const BOOT_TIMEOUT_MS = 180_000;
/** Far above a graceful power-off (a few seconds); a forced stop only comes after it. */
const STOP_TIMEOUT_MS = 90_000;

function hostKhz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return Math.round(Number(m?.[1] ?? '2000') * 1000);
}

async function sh(im: InstanceManager, id: string, script: string): Promise<string> {
  const s = await im.exec(id, { argv: ['/bin/sh', '-c', script] });
  const parts: Buffer[] = [];
  const errs: Buffer[] = [];
  s.stderr.on('data', (d: Buffer) => errs.push(d));
  for await (const c of s.stdout as AsyncIterable<Buffer>) parts.push(c);
  const status = await s.result;
  assert.equal(status.code, 0, `${script}: ${Buffer.concat(errs).toString()}`);
  return Buffer.concat(parts).toString();
}

/** busybox init: a sysinit step, a supervised (respawned) service, a shutdown step. */
const INITTAB = [
  '::sysinit:/bin/sh -c \'echo "sysinit ran as pid $$" > /etc/sysinit.marker\'',
  "::respawn:/bin/sh -c 'echo $$ >> /tmp/service.pids; exec sleep 100000'",
  "::shutdown:/bin/sh -c 'echo VESSEL-TEST-INIT-SHUTDOWN-RAN > /dev/console'",
  '',
].join('\n');

const INIT_LAYER: EntrySpec[] = [
  { path: 'sbin', type: 'dir' },
  { path: 'sbin/init', type: 'symlink', linkname: '/bin/busybox' },
  { path: 'bin/readlink', type: 'symlink', linkname: '/bin/busybox' },
  { path: 'etc/inittab', content: INITTAB },
];

describe('init modes in a real microVM: systemd mode, graceful stop', { skip: why }, () => {
  let env: ImageEnv;
  let im: InstanceManager;
  let image: string;
  const archive = path.join('/tmp', `vessel-systemd-${process.pid}.tar`);

  before(async () => {
    env = await makeImageEnv();
    const spec = await busyboxImage();
    await writeDockerArchive(
      archive,
      {
        ...spec,
        layers: [...spec.layers, INIT_LAYER],
        config: { ...spec.config, Cmd: ['/sbin/init'] },
      },
      'systemd/busybox-init:1',
    );
    image = (
      await env.manager.waitForReady((await env.manager.import(createReadStream(archive))).name)
    ).name;
    im = makeInstanceManager(env, { tscKhz: hostKhz(), bootTimeoutMs: BOOT_TIMEOUT_MS });
    await im.init();
  });

  after(async () => {
    for (const i of im?.list() ?? []) await im.delete(i.id);
    await env?.close();
    await fs.rm(archive, { force: true });
  });

  test('boots to Running, init is PID 1, the agent serves from a forked process, init supervises its services, and stop reaches init', async () => {
    const t0 = performance.now();
    // No network: nothing here needs one (and no guest gets an address).
    const created = await im.create({ image, name: 'sysd', network: { enabled: false } });
    await waitForStates(im, created.id, ['Running', 'Stopped'], BOOT_TIMEOUT_MS);
    const bootMs = Math.round(performance.now() - t0);
    const running = im.get(created.id);
    assert.equal(running.state, 'Running', `state error: ${running.state_error ?? ''}`);

    // The image's init is PID 1 (busybox exec'd as /sbin/init: comm "init").
    assert.equal(await sh(im, 'sysd', 'cat /proc/1/comm'), 'init\n');
    assert.equal(await sh(im, 'sysd', 'readlink /proc/1/exe'), '/bin/busybox\n');
    // exec works because the agent lives on in a forked child of the first PID 1, not as PID 1.
    const agentPid = Number((await sh(im, 'sysd', 'echo $PPID')).trim());
    assert.ok(agentPid > 1, `the agent runs as pid ${agentPid}, not as PID 1`);

    // ::sysinit: ran (in a shell that is not PID 1).
    assert.match(await sh(im, 'sysd', 'cat /etc/sysinit.marker'), /^sysinit ran as pid \d+\n$/);

    // ::respawn: the service runs as a child of init; killed, init reaps and restarts it.
    const firstPid = Number((await sh(im, 'sysd', 'tail -n 1 /tmp/service.pids')).trim());
    assert.match(await sh(im, 'sysd', `grep PPid /proc/${firstPid}/status`), /PPid:\s+1\n/);
    await sh(im, 'sysd', `kill ${firstPid}`);
    let pids: number[] = [];
    for (let i = 0; i < 100 && pids.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 200));
      pids = (await sh(im, 'sysd', 'cat /tmp/service.pids')).trim().split('\n').map(Number);
    }
    assert.equal(pids.length, 2, 'init respawned the killed service');
    assert.notEqual(pids[1], firstPid);
    assert.match(await sh(im, 'sysd', `grep PPid /proc/${pids[1]}/status`), /PPid:\s+1\n/);

    // Graceful stop: the power button reaches busybox init (SIGUSR2 = poweroff), which
    // runs its ::shutdown: entry and powers the VM off well before the forced stop.
    const s0 = performance.now();
    const stopped = await im.stop('sysd', { timeoutMs: STOP_TIMEOUT_MS });
    const stopMs = Math.round(performance.now() - s0);
    assert.equal(stopped.state, 'Stopped');
    // The image's own init owns the console: its output and vessel-init's are both there.
    const con = readFileSync(im.logPath('sysd', 'console'), 'utf8');
    assert.match(con, /power button: signal 12 to init \(\/bin\/busybox\)/);
    assert.match(con, /VESSEL-TEST-INIT-SHUTDOWN-RAN/, `console log:\n${con.slice(-2000)}`);
    assert.ok(stopMs < STOP_TIMEOUT_MS / 2, `graceful stop took ${stopMs} ms`);
    console.log(
      `# systemd mode: first create (incl. kernel pull) → Running ${bootMs} ms; graceful stop ${stopMs} ms`,
    );
  });

  test('exec mode: a graceful stop sends SIGTERM to the main command, whose exit code is kept', async () => {
    await im.create({
      image,
      name: 'term',
      network: { enabled: false },
      cmd: [
        '/bin/sh',
        '-c',
        'trap "echo got SIGTERM; exit 7" TERM; touch /tmp/trapped; while true; do sleep 1; done',
      ],
    });
    await waitForStates(im, 'term', ['Running'], BOOT_TIMEOUT_MS);
    // Running means the agent is up; the main command starts right after. Stop only once
    // its trap is installed (a SIGTERM before that kills it: exit 143).
    for (let i = 0; i < 150; i++) {
      const probe = await im.exec('term', { argv: ['test', '-e', '/tmp/trapped'] });
      if ((await probe.result).code === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const s0 = performance.now();
    const stopped = await im.stop('term', { timeoutMs: STOP_TIMEOUT_MS });
    const stopMs = Math.round(performance.now() - s0);
    assert.equal(stopped.state, 'Stopped');
    assert.equal(stopped.exit_code, 7, 'the trap ran and its exit code came back');
    const con = readFileSync(im.logPath('term', 'console'), 'utf8');
    assert.match(con, /power button: stopping the main command \(SIGTERM\)/);
    assert.match(appLog(im.logPath('term', 'app')).stdout, /got SIGTERM/);
    assert.ok(stopMs < STOP_TIMEOUT_MS / 2, `graceful stop took ${stopMs} ms`);
    console.log(`# exec mode: graceful stop ${stopMs} ms`);
  });
});
