// The full instance lifecycle on real microVMs through a real daemon process:
// pause/resume, standby → restore (disk, tmpfs and a live process survive),
// fork, a killed hypervisor, a killed daemon re-adopting its VMs, and the
// concurrency the narrow locks promise.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Instance, LifecycleEvent, VesselClient } from '../../src/client/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const why = await vmSkipReason();

const LOOP = ['/bin/sh', '-c', 'while :; do sleep 1; done'];

async function sh(client: VesselClient, id: string, script: string): Promise<string> {
  const r = await client.execInstance(id, { argv: ['/bin/sh', '-c', script] });
  assert.equal(r.exit_code, 0, `exec failed: ${r.stderr}`);
  return r.stdout;
}

async function running(client: VesselClient, id: string): Promise<Instance> {
  const r = await client.waitInstance(id, 'Running', 180);
  assert.equal(r.timed_out, false, `${id} did not reach Running (is ${r.state})`);
  return client.getInstance(id);
}

async function appLog(client: VesselClient, id: string): Promise<string> {
  const log: string[] = [];
  for await (const e of client.instanceLogs(id)) if (e.type === 'log') log.push(e.text);
  return log.join('');
}

async function logContains(client: VesselClient, id: string, text: string): Promise<void> {
  const t0 = Date.now();
  while (!(await appLog(client, id)).includes(text)) {
    if (Date.now() - t0 > 30_000) throw new Error(`${id}: "${text}" not in the app log`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Collect lifecycle events from the SSE stream until `stop()` is called. */
function record(client: VesselClient, filter: { instance?: string } = {}) {
  const seen: LifecycleEvent[] = [];
  const ac = new AbortController();
  const done = (async () => {
    try {
      for await (const e of client.events(filter, ac.signal)) seen.push(e);
    } catch {
      // aborted, or the daemon went away
    }
  })();
  return {
    seen,
    async waitFor(pred: (e: LifecycleEvent) => boolean, ms = 30_000): Promise<LifecycleEvent> {
      const t0 = Date.now();
      for (;;) {
        const hit = seen.find(pred);
        if (hit) return hit;
        if (Date.now() - t0 > ms) throw new Error(`no matching event in ${ms} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop() {
      ac.abort();
      await done;
    },
  };
}

describe('instance lifecycle on real microVMs', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let d: SpawnedDaemon;
  let image: string;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-life-'));
    await seedKernel(dir);
    d = await startDaemon(dir);
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'life/busybox:1');
    // create waits for the conversion to finish
    image = (await d.client.importImage(createReadStream(archive))).name;
  });

  after(async () => {
    if (d) {
      for (const i of await d.client.listInstances().catch(() => [])) {
        await d.client.deleteInstance(i.id).catch(() => undefined);
      }
      await d.stop();
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  test(
    'pause/resume, then standby → restore keeps a disk file, a tmpfs file and a live process',
    { timeout: 240_000 },
    async () => {
      const c = d.client;
      const inst = await c.createInstance({ image, name: 'mem', cmd: LOOP, memory_mib: 256 });
      const events = record(c, { instance: inst.id });
      await running(c, inst.id);
      const pid = (
        await sh(
          c,
          inst.id,
          'echo on-disk > /root/disk.txt; mkdir -p /mnt/ram; mount -t tmpfs ram /mnt/ram; ' +
            'echo in-ram > /mnt/ram/m.txt; sleep 100000 >/dev/null 2>&1 & echo $!',
        )
      ).trim();
      assert.match(pid, /^\d+$/);

      assert.equal((await c.instanceAction(inst.id, 'pause')).state, 'Paused');
      await assert.rejects(c.execInstance(inst.id, { argv: ['true'] }), /exec needs it Running/);
      await assert.rejects(c.instanceAction(inst.id, 'pause'), /cannot go from Paused to Paused/);
      assert.equal((await c.instanceAction(inst.id, 'resume')).state, 'Running');

      const sb = await c.instanceAction(inst.id, 'standby');
      assert.equal(sb.state, 'Standby');
      assert.equal(sb.pid, null);
      const snap = path.join(dir, 'instances', inst.id, 'snapshot');
      assert.ok((await fs.stat(path.join(snap, 'state.bin'))).size > 1024 * 1024);
      await assert.rejects(c.execInstance(inst.id, { argv: ['true'] }), /Standby/);

      // A snapshot from another QEMU is refused, and refusing loses nothing.
      const metaFile = path.join(snap, 'meta.json');
      const meta = await fs.readFile(metaFile, 'utf8');
      await fs.writeFile(
        metaFile,
        meta.replace(/"vmm_version": "[^"]*"/, '"vmm_version": "0.0.1"'),
      );
      await assert.rejects(c.instanceAction(inst.id, 'restore'), /VMM version 0\.0\.1 → /);
      assert.equal((await c.getInstance(inst.id)).state, 'Standby');
      await fs.writeFile(metaFile, meta);

      const restored = await c.instanceAction(inst.id, 'restore');
      assert.equal(restored.state, 'Running');
      const out = await sh(
        c,
        inst.id,
        `cat /root/disk.txt /mnt/ram/m.txt; kill -0 ${pid} && echo alive`,
      );
      assert.equal(out, 'on-disk\nin-ram\nalive\n');

      const states = (await events.waitFor((e) => e.type === 'restore')) && events.seen;
      await events.stop();
      const ops = states.filter((e) => e.type !== 'state').map((e) => e.type);
      assert.deepEqual(
        ops.filter((t) => t !== 'create' && t !== 'update'),
        ['pause', 'resume', 'pause', 'standby', 'restore'],
      );
      const hops = states
        .filter((e) => e.type === 'state')
        .map((e) => `${e.old_state ?? '-'}>${e.new_state ?? '-'}`);
      assert.deepEqual(hops.slice(hops.indexOf('Running>Paused')), [
        'Running>Paused',
        'Paused>Running',
        'Running>Paused',
        'Paused>Standby',
        'Standby>Paused',
        'Paused>Running',
      ]);
      for (let i = 1; i < states.length; i++) {
        assert.equal(states[i]!.seq, states[i - 1]!.seq + 1, 'no event was lost or reordered');
      }
      const daemonLog: string[] = [];
      for await (const e of c.instanceLogs(inst.id, { source: 'daemon' }))
        if (e.type === 'log') daemonLog.push(e.text);
      assert.match(daemonLog.join(''), /standby Running → Standby/);
      await c.deleteInstance(inst.id);
    },
  );

  test(
    'fork of a stopped and of a standby instance gives independent instances',
    { timeout: 240_000 },
    async () => {
      const c = d.client;
      const orig = await c.createInstance({ image, name: 'orig', cmd: LOOP, memory_mib: 256 });
      await running(c, orig.id);
      await sh(c, orig.id, 'echo orig > /root/who');
      await assert.rejects(c.forkInstance(orig.id, 'nope'), /fork needs it Stopped or Standby/);
      await c.stopInstance(orig.id, 5);
      const copy = await c.forkInstance(orig.id, 'copy');
      assert.equal(copy.state, 'Stopped');
      assert.equal(copy.source_id, orig.id);
      assert.notEqual(copy.cid, orig.cid);
      await assert.rejects(c.forkInstance(orig.id, 'copy'), /already exists/);

      await c.startInstance(orig.id);
      await c.startInstance(copy.id);
      await running(c, orig.id);
      await running(c, copy.id);
      assert.equal(await sh(c, copy.id, 'cat /root/who; hostname'), 'orig\ncopy\n');
      await sh(c, copy.id, 'echo copy > /root/who');
      assert.equal(await sh(c, orig.id, 'cat /root/who'), 'orig\n');

      // Standby fork: memory comes along.
      await sh(c, orig.id, 'mkdir -p /mnt/r; mount -t tmpfs r /mnt/r; echo mem > /mnt/r/x');
      await c.instanceAction(orig.id, 'standby');
      const twin = await c.forkInstance(orig.id, 'twin');
      assert.equal(twin.state, 'Standby');
      await c.instanceAction(twin.id, 'restore');
      assert.equal(await sh(c, twin.id, 'cat /mnt/r/x /root/who'), 'mem\norig\n');
      // The source's own snapshot is untouched by the fork's restore.
      assert.equal((await c.instanceAction(orig.id, 'restore')).state, 'Running');
      for (const i of [orig, copy, twin]) await c.deleteInstance(i.id);
    },
  );

  test(
    'kill -9 of the hypervisor: out of Running within a second, with an event, nothing left behind',
    { timeout: 240_000 },
    async () => {
      const c = d.client;
      const inst = await c.createInstance({ image, name: 'victim', cmd: LOOP, memory_mib: 256 });
      const live = await running(c, inst.id);
      const events = record(c, { instance: inst.id });
      await new Promise((r) => setTimeout(r, 200)); // the SSE stream is subscribed
      const t0 = Date.now();
      process.kill(live.pid!, 'SIGKILL');
      const ev = await events.waitFor((e) => e.type === 'state' && e.new_state === 'Stopped', 5000);
      const elapsed = Date.now() - t0;
      await events.stop();
      assert.ok(elapsed < 1000, `left Running after ${elapsed} ms`);
      assert.match(ev.state_error ?? '', /hypervisor exited unexpectedly/);
      const after = await c.getInstance(inst.id);
      assert.equal(after.state, 'Stopped');
      assert.equal(after.pid, null);
      const files = await fs.readdir(path.join(dir, 'instances', inst.id));
      assert.deepEqual(
        files.filter((f) => f.endsWith('.sock')),
        [],
        'no socket files left',
      );
      await c.deleteInstance(inst.id);
      await assert.rejects(fs.access(path.join(dir, 'instances', inst.id)));
    },
  );

  test(
    'a slow pull does not hold up creating an instance of a local image',
    { timeout: 240_000 },
    async () => {
      // A registry that accepts connections and never answers: the pull hangs in phase 1.
      const stalled = new Set<http.ServerResponse>();
      const server = http.createServer((_req, res) => void stalled.add(res));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      const port = (server.address() as AddressInfo).port;
      const c = d.client;
      const slow = c
        .createInstance({ image: `127.0.0.1:${port}/slow/app:1`, name: 'slow' })
        .catch((err: unknown) => err);
      await new Promise((r) => setTimeout(r, 300)); // the pull is under way
      const t0 = Date.now();
      const fast = await c.createInstance({ image, name: 'fast', cmd: LOOP, memory_mib: 256 });
      const took = Date.now() - t0;
      assert.equal(fast.state, 'Initializing');
      assert.ok(took < 60_000, `create of a local image took ${took} ms`);
      for (const res of stalled) res.destroy();
      server.close();
      assert.ok((await slow) instanceof Error, 'the stalled pull fails once the registry goes');
      await c.deleteInstance(fast.id);
    },
  );

  test(
    'two creates with one name: exactly one wins; parallel creates get distinct resources',
    { timeout: 240_000 },
    async () => {
      const c = d.client;
      const results = await Promise.allSettled([
        c.createInstance({ image, name: 'dup', cmd: LOOP, memory_mib: 256 }),
        c.createInstance({ image, name: 'dup', cmd: LOOP, memory_mib: 256 }),
      ]);
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r) => r.status === 'rejected');
      assert.equal(won.length, 1);
      assert.match(String((lost[0] as PromiseRejectedResult).reason), /named "dup" already exists/);
      await c.deleteInstance('dup');
    },
  );

  test(
    'kill -9 of the daemon with 3 running VMs: the next daemon adopts all 3 and exec works',
    { timeout: 240_000 },
    async () => {
      let c = d.client;
      const made = await Promise.all(
        ['a1', 'a2', 'a3'].map((name) =>
          c.createInstance({
            image,
            name,
            cmd: ['/bin/sh', '-c', `echo booted-${name}; while :; do sleep 1; done`],
            memory_mib: 256,
          }),
        ),
      );
      assert.equal(new Set(made.map((m) => m.cid)).size, 3, 'distinct guest context ids');
      const before = await Promise.all(made.map((m) => running(c, m.id)));
      // Running means the guest program is up; the command's first line can still be in
      // flight. Kill the daemon once every line is on disk, so the check below is exact.
      for (const b of before) await logContains(c, b.id, `booted-${b.name}`);
      await d.kill9();
      for (const b of before) process.kill(b.pid!, 0); // the VMs outlive the daemon
      d = await startDaemon(dir);
      c = d.client;
      for (const b of before) {
        const now = await c.getInstance(b.id);
        assert.equal(now.state, 'Running', `${b.name}: ${now.state_error ?? ''}`);
        assert.equal(now.pid, b.pid, 'the same hypervisor process');
        assert.equal(await sh(c, b.id, 'echo ok'), 'ok\n');
        const log = await appLog(c, b.id);
        assert.equal(log.split(`booted-${b.name}`).length, 2, 'the app log once, intact');
      }
      for (const b of before) await c.deleteInstance(b.id);
    },
  );
});
