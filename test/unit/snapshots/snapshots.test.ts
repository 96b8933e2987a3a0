// Named snapshots, the pure parts and the store: compression choice and levels, the
// restore/fork default target, the identity comparison behind RECONFIGURE, the wire view,
// compress/decompress round trips with the real zstd and lz4, the CLI's argument parsers,
// and the snapshots table (migration 8) with its repository.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { collectTag, parseKind, parseTarget } from '../../../src/cli/commands/snapshot.js';
import { run } from '../../../src/core/process.js';
import { identityChanged } from '../../../src/instances/identity.js';
import { attachedVolumes } from '../../../src/instances/snapshot-create.js';
import {
  compressFile,
  compressedState,
  decompressFile,
  materializeState,
  namedSnapshotPaths,
} from '../../../src/instances/snapshot-files.js';
import {
  compressionChoice,
  defaultTarget,
  snapshotView,
} from '../../../src/instances/snapshots.js';
import {
  SnapshotsRepo,
  openDatabase,
  type Db,
  type SnapshotRow,
} from '../../../src/store/index.js';

function snapRow(patch: Partial<SnapshotRow> = {}): SnapshotRow {
  return {
    id: 'abc',
    name: 'base',
    kind: 'Standby',
    instance_id: 'i1',
    source_instance_id: 'i1',
    source_instance_name: 'box',
    source: { id: 'i1', name: 'box', image_digest: 'sha256:aa', guest: { hostname: 'box' } },
    hypervisor: 'qemu',
    vmm_version: '7.2.0',
    kernel: 'debian/6.1',
    size_bytes: 100,
    compression: null,
    compression_level: null,
    compression_state: 'none',
    compression_error: null,
    compressed_size_bytes: null,
    uncompressed_size_bytes: 80,
    created_at: '2026-01-01T00:00:00.000Z',
    ...patch,
  };
}

describe('named snapshots: pure logic', () => {
  test('compression: off unless enabled; zstd by default; levels checked per algorithm', () => {
    assert.equal(compressionChoice(undefined), null);
    assert.equal(compressionChoice({ enabled: false, algorithm: 'lz4' }), null);
    assert.deepEqual(compressionChoice({ enabled: true }), { algorithm: 'zstd', level: 1 });
    assert.deepEqual(compressionChoice({ enabled: true, algorithm: 'lz4' }), {
      algorithm: 'lz4',
      level: 0,
    });
    assert.deepEqual(compressionChoice({ enabled: true, algorithm: 'zstd', level: 19 }), {
      algorithm: 'zstd',
      level: 19,
    });
    assert.throws(
      () => compressionChoice({ enabled: true, algorithm: 'lz4', level: 12 }),
      /level 12 is out of range for lz4 \(0-9\)/,
    );
    assert.throws(
      () => compressionChoice({ enabled: true, level: 0 }),
      /level 0 is out of range for zstd \(1-19\)/,
    );
  });

  test("target state: the request's, else Running for Standby and Stopped for Stopped", () => {
    assert.equal(defaultTarget('Standby'), 'Running');
    assert.equal(defaultTarget('Stopped'), 'Stopped');
    assert.equal(defaultTarget('Standby', 'Stopped'), 'Stopped');
    assert.equal(defaultTarget('Stopped', 'Running'), 'Running');
  });

  test('identity: RECONFIGURE only when hostname, MAC or address changed (not for old snapshots)', () => {
    const id = { hostname: 'a', mac: '52:54:00:00:00:01', ip: '10.0.0.2' };
    assert.equal(identityChanged(id, { ...id }), false);
    assert.equal(identityChanged(id, { ...id, hostname: 'b' }), true);
    assert.equal(identityChanged(id, { ...id, mac: '52:54:00:00:00:02' }), true);
    assert.equal(identityChanged(id, { ...id, ip: null }), true);
    assert.equal(identityChanged(undefined, id), false);
  });

  test('the wire view: hypeman field names, compression only when configured', () => {
    const plain = snapshotView(snapRow());
    assert.equal(plain.source_hypervisor, 'qemu');
    assert.equal(plain.source_instance_exists, true);
    assert.equal('compression' in plain, false);
    assert.equal('tags' in plain, false);
    const packed = snapshotView(
      snapRow({
        instance_id: null,
        compression: 'lz4',
        compression_state: 'compressed',
        compressed_size_bytes: 10,
        tags: { a: 'b' },
      }),
    );
    assert.deepEqual(packed.compression, { enabled: true, algorithm: 'lz4', level: 0 });
    assert.equal(packed.source_instance_exists, false);
    assert.deepEqual(packed.tags, { a: 'b' });
  });

  test('volumes attached to the source when the snapshot was taken are counted', () => {
    assert.equal(attachedVolumes({ guest: {} }), 0);
    assert.equal(attachedVolumes({ volumes: [{ volume_id: 'v' }, { volume_id: 'w' }] }), 2);
  });

  test('CLI parsers: kinds, target states, repeated tags', () => {
    assert.equal(parseKind('disk'), 'Stopped');
    assert.equal(parseKind('Memory'), 'Standby');
    assert.equal(parseKind('Standby'), 'Standby');
    assert.throws(() => parseKind('ram'), /not a snapshot kind/);
    assert.equal(parseTarget('running'), 'Running');
    assert.throws(() => parseTarget('Paused'), /not a target state/);
    assert.deepEqual(collectTag('b=2=3', collectTag('a=1')), { a: '1', b: '2=3' });
    assert.throws(() => collectTag('=x'), /KEY=VALUE/);
  });
});

describe('named snapshots: files and store', () => {
  let dir: string;
  let db: Db | undefined;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-snapunit-'));
  });
  after(async () => {
    db?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  for (const algo of ['zstd', 'lz4'] as const) {
    test(`${algo}: compress, then materialize decompresses to the same bytes`, async (t) => {
      if ((await run('sh', ['-c', `command -v ${algo}`], { allowFailure: true })).code !== 0) {
        t.skip(`${algo} is not installed`);
        return;
      }
      const p = namedSnapshotPaths(dir, `s-${algo}`);
      await fs.mkdir(p.dir, { recursive: true });
      // Half random, half zeros: like a memory image.
      const data = Buffer.concat([randomBytes(300_000), Buffer.alloc(700_000)]);
      await fs.writeFile(p.state, data);
      const packed = compressedState(p.state, algo);
      await compressFile(algo, algo === 'zstd' ? 1 : 0, p.state, packed);
      assert.ok((await fs.stat(packed)).size < data.length);
      await fs.rm(p.state);
      const out = path.join(dir, `out-${algo}`, 'state.bin');
      await materializeState(p, algo, out);
      assert.ok((await fs.readFile(out)).equals(data));
      assert.deepEqual(await fs.readdir(path.dirname(out)), ['state.bin']);
      // A corrupt stream fails and leaves no file behind.
      await fs.writeFile(packed, 'not compressed');
      const bad = path.join(dir, `bad-${algo}`, 'state.bin');
      await assert.rejects(materializeState(p, algo, bad));
      assert.deepEqual(await fs.readdir(path.dirname(bad)), []);
      await assert.rejects(decompressFile(algo, packed, path.join(dir, 'x')));
    });
  }

  test('migration 8 and the repository: insert, names per source, unlink, image digests', () => {
    db = openDatabase(path.join(dir, 'vessel.db'));
    const repo = new SnapshotsRepo(db);
    repo.insert(snapRow({ tags: { team: 'a' } }));
    repo.insert(snapRow({ id: 'def', name: 'other', source: { image_digest: 'sha256:bb' } }));
    assert.throws(() => repo.insert(snapRow({ id: 'dup' })), /UNIQUE/);
    repo.insert(snapRow({ id: 'x2', instance_id: 'i2', source_instance_id: 'i2' }));
    assert.deepEqual(repo.get('abc')?.tags, { team: 'a' });
    assert.deepEqual(repo.get('abc')?.source, snapRow().source);
    assert.equal(repo.bySourceName('i1', 'base')?.id, 'abc');
    assert.deepEqual(
      repo
        .byName('base')
        .map((r) => r.id)
        .sort(),
      ['abc', 'x2'],
    );
    assert.deepEqual([...repo.imageDigests()].sort(), ['sha256:aa', 'sha256:bb']);
    repo.unlinkInstance('i1');
    assert.equal(repo.get('abc')?.instance_id, null);
    assert.equal(repo.get('abc')?.source_instance_id, 'i1');
    assert.equal(repo.get('x2')?.instance_id, 'i2');
    repo.update({
      ...repo.get('abc')!,
      compression_state: 'error',
      compression_error: 'disk full',
    });
    assert.equal(repo.get('abc')?.compression_error, 'disk full');
    assert.throws(
      () => repo.update({ ...repo.get('abc')!, compression_state: 'bogus' as 'none' }),
      /CHECK constraint/,
    );
    assert.equal(repo.delete('abc'), true);
    assert.equal(repo.delete('abc'), false);
    assert.equal(repo.list().length, 2);
  });
});
