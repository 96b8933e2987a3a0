// Named snapshots on real microVMs through a real daemon (no networking here; the bridge
// case is snapshots-bridge.test.ts): a memory snapshot of a Running instance that keeps
// running, roll back (memory and disk kinds) losing later writes and keeping earlier
// ones, two forks of one memory snapshot with their own names and hostnames, the VMM
// version / kernel check, compression, and an instance delete that keeps its snapshots.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Instance, VesselClient } from '../../src/client/index.js';
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

describe('named snapshots on real microVMs', { skip: why, timeout: 600_000 }, () => {
  let dir: string;
  let d: SpawnedDaemon;
  let image: string;
  let src: Instance;
  let pid: string;
  let base: string; // the memory snapshot's id

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-snap-'));
    await seedKernel(dir);
    d = await startDaemon(dir);
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'snap/busybox:1');
    image = (await d.client.importImage(createReadStream(archive))).name;
    src = await d.client.createInstance({ image, name: 'src', cmd: LOOP, memory_mib: 192 });
    await running(d.client, src.id);
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
    'a memory snapshot leaves the instance running; restoring it loses later writes, keeps earlier ones and the memory',
    { timeout: 150_000 },
    async () => {
      const c = d.client;
      pid = (
        await sh(
          c,
          src.id,
          'echo early > /root/early; mkdir -p /mnt/ram; mount -t tmpfs ram /mnt/ram; ' +
            'echo ram-early > /mnt/ram/m; sleep 100000 >/dev/null 2>&1 & echo $!',
        )
      ).trim();
      assert.match(pid, /^\d+$/);

      // Through the CLI: the kind defaults to memory for a Running instance.
      const made = await d.cli(['snapshot', 'create', 'src', '--name', 'base', '--tag', 'team=a']);
      assert.equal(made.code, 0, made.stderr);
      base = made.stdout.trim();
      const snap = await c.getSnapshot(base);
      assert.equal(snap.kind, 'Standby');
      assert.equal(snap.name, 'base');
      assert.deepEqual(snap.tags, { team: 'a' });
      assert.equal(snap.source_instance_id, src.id);
      assert.equal(snap.compression_state, 'none');
      const files = path.join(dir, 'snapshots', base);
      assert.ok((await fs.stat(path.join(files, 'state.bin'))).size > 1024 * 1024);
      assert.ok(snap.size_bytes > 1024 * 1024, `size_bytes ${snap.size_bytes}`);

      // The instance kept running and keeps working.
      assert.equal((await c.getInstance(src.id)).state, 'Running');
      await sh(c, src.id, 'echo late > /root/late; echo ram-late > /mnt/ram/m; rm /root/early');

      // Name unique per instance; a disk-only snapshot needs the instance Stopped.
      await assert.rejects(
        c.createSnapshot(src.id, { kind: 'Standby', name: 'base' }),
        /already has a snapshot named "base"/,
      );
      await assert.rejects(c.createSnapshot(src.id, { kind: 'Stopped' }), /needs it Stopped/);

      const restored = await c.restoreSnapshot(src.id, base);
      assert.equal(restored.state, 'Running');
      const out = await sh(
        c,
        src.id,
        `cat /root/early /mnt/ram/m; test -e /root/late && echo late-survived; kill -0 ${pid} && echo alive`,
      );
      assert.equal(out, 'early\nram-early\nalive\n');

      const list = await c.listSnapshots({ instance: 'src', tags: { team: 'a' } });
      assert.deepEqual(
        list.map((s) => s.id),
        [base],
      );
      assert.deepEqual(await c.listSnapshots({ kind: 'Stopped' }), []);
    },
  );

  test(
    'two forks of one memory snapshot run independently with their own names and hostnames',
    { timeout: 150_000 },
    async () => {
      const c = d.client;
      const f1 = await c.forkSnapshot(base, { name: 'f1' });
      const cli = await d.cli(['snapshot', 'fork', base, '--name', 'f2']);
      assert.equal(cli.code, 0, cli.stderr);
      const f2 = await c.getInstance('f2');
      assert.equal(f1.state, 'Running');
      assert.equal(f2.state, 'Running');
      assert.notEqual(f1.id, f2.id);
      assert.notEqual(f1.cid, f2.cid);
      assert.equal(f1.source_id, src.id);
      for (const [f, name] of [
        [f1, 'f1'],
        [f2, 'f2'],
      ] as const) {
        // The memory came along (tmpfs, the process); the guest was told its new hostname.
        const out = await sh(
          c,
          f.id,
          `hostname; cat /etc/hosts; cat /mnt/ram/m; kill -0 ${pid} && echo alive`,
        );
        assert.match(out, new RegExp(`^${name}\\n`));
        assert.match(out, new RegExp(`ram-early\\nalive\\n$`));
      }
      await sh(c, f1.id, 'echo only-f1 > /root/mine');
      assert.equal(
        await sh(c, f2.id, 'test -e /root/mine && echo shared || echo apart'),
        'apart\n',
      );
      assert.equal((await c.getInstance(src.id)).state, 'Running');
      await c.deleteInstance(f1.id);
      await c.deleteInstance(f2.id);
    },
  );

  test(
    'a snapshot whose VMM version or kernel differs is refused, naming the difference',
    {
      timeout: 60_000,
    },
    async () => {
      const c = d.client;
      // Simulated: the stored record says another QEMU / kernel wrote it (edited in SQLite).
      const db = new Database(path.join(dir, 'vessel.db'));
      try {
        const row = db
          .prepare('SELECT vmm_version, kernel FROM snapshots WHERE id = ?')
          .get(base) as {
          vmm_version: string;
          kernel: string;
        };
        db.prepare('UPDATE snapshots SET vmm_version = ? WHERE id = ?').run('0.0.1', base);
        await assert.rejects(c.restoreSnapshot(src.id, base), /VMM version 0\.0\.1 → /);
        await assert.rejects(c.forkSnapshot(base, { name: 'nope' }), /VMM version 0\.0\.1 → /);
        db.prepare('UPDATE snapshots SET vmm_version = ?, kernel = ? WHERE id = ?').run(
          row.vmm_version,
          'other-kernel/9.9',
          base,
        );
        await assert.rejects(c.restoreSnapshot(src.id, base), /kernel other-kernel\/9\.9 → /);
        db.prepare('UPDATE snapshots SET kernel = ? WHERE id = ?').run(row.kernel, base);
      } finally {
        db.close();
      }
      // Refusing lost nothing: the instance still runs with its memory.
      assert.equal((await c.getInstance(src.id)).state, 'Running');
      assert.equal(await sh(c, src.id, 'cat /mnt/ram/m'), 'ram-early\n');
      await assert.rejects(c.getInstance('nope'), /not found/);
    },
  );

  test('a compressed memory snapshot restores identically', { timeout: 120_000 }, async () => {
    const c = d.client;
    await sh(c, src.id, 'echo zz > /mnt/ram/z; echo disk-z > /root/z');
    const snap = await c.createSnapshot(src.id, {
      kind: 'Standby',
      name: 'packed',
      compression: { enabled: true, algorithm: 'zstd' },
    });
    assert.ok(snap.compression_state === 'compressing' || snap.compression_state === 'compressed');
    let now = snap;
    const t0 = Date.now();
    while (now.compression_state !== 'compressed') {
      assert.notEqual(now.compression_state, 'error', now.compression_error ?? '');
      assert.ok(Date.now() - t0 < 60_000, `still ${now.compression_state}`);
      await new Promise((r) => setTimeout(r, 200));
      now = await c.getSnapshot(snap.id);
    }
    const files = path.join(dir, 'snapshots', snap.id);
    assert.deepEqual((await fs.readdir(files)).sort(), [
      'meta.json',
      'overlay.ext4',
      'state.bin.zst',
    ]);
    assert.ok(
      now.compressed_size_bytes! > 0 && now.compressed_size_bytes! < now.uncompressed_size_bytes!,
    );
    assert.equal(now.compression?.algorithm, 'zstd');

    await sh(c, src.id, 'echo changed > /mnt/ram/z; rm /root/z');
    const back = await c.restoreSnapshot(src.id, snap.id, { target_state: 'Running' });
    assert.equal(back.state, 'Running');
    assert.equal(
      await sh(c, src.id, `cat /mnt/ram/z /root/z /mnt/ram/m; kill -0 ${pid} && echo alive`),
      'zz\ndisk-z\nram-early\nalive\n',
    );
    // Restoring decompressed to a temporary file: the snapshot stays compressed.
    assert.deepEqual((await fs.readdir(files)).sort(), [
      'meta.json',
      'overlay.ext4',
      'state.bin.zst',
    ]);
  });

  test(
    'a disk snapshot of a Stopped instance: restore loses later writes; deleting the instance keeps its snapshots unless asked',
    { timeout: 180_000 },
    async () => {
      const c = d.client;
      await sh(c, src.id, 'echo disk-early > /root/d; sync');
      await c.stopInstance(src.id, 10);
      const made = await d.cli(['snapshot', 'create', 'src', '--name', 'cold']);
      assert.equal(made.code, 0, made.stderr);
      const cold = await c.getSnapshot(made.stdout.trim());
      assert.equal(cold.kind, 'Stopped');
      assert.equal(cold.uncompressed_size_bytes, null);
      assert.deepEqual(await fs.readdir(path.join(dir, 'snapshots', cold.id)), ['overlay.ext4']);

      await c.startInstance(src.id);
      await running(c, src.id);
      await sh(c, src.id, 'echo disk-late > /root/d2; rm /root/d; sync');
      const r = await d.cli(['snapshot', 'restore', 'src', 'cold', '--state', 'Running']);
      assert.equal(r.code, 0, r.stderr);
      await running(c, src.id);
      assert.equal(
        await sh(c, src.id, 'cat /root/d; test -e /root/d2 && echo kept || echo gone'),
        'disk-early\ngone\n',
      );

      // Delete the instance: its three snapshots stay, unlinked, and can still be forked.
      await c.deleteInstance(src.id);
      const left = await c.listSnapshots();
      assert.equal(left.length, 3);
      assert.ok(left.every((s) => !s.source_instance_exists && s.source_instance_name === 'src'));
      assert.equal((await c.listSnapshots({ instance: src.id })).length, 3, 'by the id it had');
      const orphan = await c.forkSnapshot('cold', { name: 'from-cold' });
      assert.equal(orphan.state, 'Stopped');

      // Asked: the snapshots go with the instance, files included.
      const s2 = await c.createSnapshot(orphan.id, { kind: 'Stopped', name: 'gone' });
      await c.deleteInstance(orphan.id, { deleteSnapshots: true });
      await assert.rejects(c.getSnapshot(s2.id), /not found/);
      await assert.rejects(fs.stat(path.join(dir, 'snapshots', s2.id)), /ENOENT/);
      const rm = await d.cli(['snapshot', 'rm', 'cold']);
      assert.equal(rm.code, 0, rm.stderr);
      assert.equal((await c.listSnapshots()).length, 2);
    },
  );
});
