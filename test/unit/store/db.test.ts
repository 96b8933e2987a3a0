// The SQLite store on a real file: migrations, WAL, and the images repository.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import {
  ImagesRepo,
  MIGRATIONS,
  openDatabase,
  schemaVersion,
  type Db,
  type ImageRow,
} from '../../../src/store/index.js';

const d = (c: string): string => `sha256:${c.repeat(64)}`;

function row(name: string, patch: Partial<ImageRow> = {}): ImageRow {
  return {
    name,
    digest: d('a'),
    status: 'ready',
    error: null,
    error_code: null,
    source: 'registry',
    platform: 'linux/amd64',
    format: 'erofs',
    size_bytes: 1234,
    config: {
      entrypoint: ['/bin/sh', '-c'],
      cmd: ['echo "hi there"'],
      env: { PATH: '/usr/bin', EMPTY: '', 'WITH=EQ': 'a=b' },
      working_dir: '/srv',
      user: '1000:1000',
      exposed_ports: ['80/tcp'],
    },
    layers: [d('1'), d('2')],
    config_digest: d('c'),
    created_at: '2024-01-01T00:00:00.000Z',
    updated_at: '2024-01-01T00:00:00.000Z',
    ...patch,
  };
}

const LATEST = MIGRATIONS.at(-1)!.version;

describe('store', () => {
  let dir: string;
  const open: Db[] = [];
  const openAt = (file: string): Db => {
    const db = openDatabase(file);
    open.push(db);
    return db;
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-db-'));
  });
  after(async () => {
    for (const db of open) if (db.open) db.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('migrations are applied to a new file: latest schema version, WAL, foreign keys', () => {
    const file = path.join(dir, 'fresh.db');
    const db = openAt(file);
    assert.equal(schemaVersion(db), MIGRATIONS.at(-1)?.version);
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
    const tables = (
      db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as {
        name: string;
      }[]
    ).map((t) => t.name);
    assert.deepEqual(tables, [
      'build_cache',
      'builds',
      'images',
      'ingresses',
      'instances',
      'schema_migrations',
      'snapshots',
      'volume_attachments',
      'volumes',
    ]);
    const applied = db.prepare('SELECT version, name, applied_at FROM schema_migrations').all() as {
      version: number;
      name: string;
      applied_at: string;
    }[];
    assert.deepEqual(
      applied.map((a) => a.name),
      MIGRATIONS.map((m) => m.name),
    );
    assert.ok(!Number.isNaN(Date.parse(applied[0]?.applied_at ?? '')));
  });

  test('re-opening is idempotent and keeps the data', () => {
    const file = path.join(dir, 'reopen.db');
    const first = openAt(file);
    new ImagesRepo(first).upsert(row('kept'));
    first.close();
    const second = openAt(file);
    assert.equal(schemaVersion(second), LATEST);
    assert.equal(
      (second.prepare('SELECT COUNT(*) AS n FROM schema_migrations').get() as { n: number }).n,
      MIGRATIONS.length,
    );
    assert.equal(new ImagesRepo(second).get('kept')?.name, 'kept');
    second.close();
  });

  test('a pending migration is applied on open, in its own transaction', () => {
    const file = path.join(dir, 'upgrade.db');
    openAt(file).close();
    const next = [
      ...MIGRATIONS,
      { version: LATEST + 1, name: 'extra', sql: 'CREATE TABLE extra (id INTEGER PRIMARY KEY);' },
    ];
    const db = openDatabase(file, next);
    open.push(db);
    assert.equal(schemaVersion(db), LATEST + 1);
    db.prepare('INSERT INTO extra (id) VALUES (1)').run();
    db.close();

    const broken = [
      ...MIGRATIONS,
      { version: LATEST + 1, name: 'bad', sql: 'CREATE TABLE t (x); NOT SQL;' },
    ];
    const file2 = path.join(dir, 'broken.db');
    openAt(file2).close();
    assert.throws(() => openDatabase(file2, broken));
    const after = openAt(file2);
    assert.equal(schemaVersion(after), LATEST, 'the failed migration left no trace');
    const leftover = after
      .prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE name = 't'")
      .get() as { n: number };
    assert.equal(leftover.n, 0, 'nor a half-created table');
    after.close();
  });

  test('a database from a newer Vessel is refused with a clear error', () => {
    const file = path.join(dir, 'newer.db');
    const db = openAt(file);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(
      99,
      'future',
      new Date().toISOString(),
    );
    db.close();
    assert.throws(
      () => openAt(file),
      (err) =>
        isVesselError(err) &&
        err.message.includes(
          `database schema version 99 is newer than this Vessel build knows (${LATEST}); upgrade Vessel`,
        ),
    );
  });

  describe('ImagesRepo', () => {
    let repo: ImagesRepo;
    before(() => {
      repo = new ImagesRepo(openAt(path.join(dir, 'repo.db')));
    });

    test('upsert and get round-trip every field, JSON fields included', () => {
      const r = row('docker.io/library/alpine:latest');
      repo.upsert(r);
      assert.deepEqual(repo.get(r.name), r);
      assert.equal(repo.get('docker.io/library/absent:latest'), undefined);
    });

    test('null config and empty layers survive', () => {
      const r = row('pending:1', {
        digest: null,
        status: 'pending',
        config: null,
        layers: [],
        format: null,
        size_bytes: null,
        platform: null,
        config_digest: null,
        created_at: '2024-01-02T00:00:00.000Z',
      });
      repo.upsert(r);
      assert.deepEqual(repo.get(r.name), r);
    });

    test('upsert replaces the record but keeps created_at', () => {
      const name = 'replace:1';
      repo.upsert(row(name, { created_at: '2024-01-03T00:00:00.000Z' }));
      repo.upsert(
        row(name, {
          status: 'failed',
          error: 'boom',
          error_code: 'registry_unavailable',
          created_at: '2030-01-01T00:00:00.000Z',
          updated_at: '2024-01-04T00:00:00.000Z',
        }),
      );
      const got = repo.get(name);
      assert.equal(got?.status, 'failed');
      assert.equal(got?.error, 'boom');
      assert.equal(got?.error_code, 'registry_unavailable');
      assert.equal(got?.created_at, '2024-01-03T00:00:00.000Z');
      assert.equal(got?.updated_at, '2024-01-04T00:00:00.000Z');
    });

    test('list is ordered by creation, byDigest finds every record of a digest', () => {
      repo.upsert(row('same-digest:2', { digest: d('b'), created_at: '2024-01-06T00:00:00.000Z' }));
      repo.upsert(row('same-digest:1', { digest: d('b'), created_at: '2024-01-05T00:00:00.000Z' }));
      assert.deepEqual(
        repo.list().map((r) => r.name),
        [
          'docker.io/library/alpine:latest',
          'pending:1',
          'replace:1',
          'same-digest:1',
          'same-digest:2',
        ],
      );
      assert.deepEqual(
        repo
          .byDigest(d('b'))
          .map((r) => r.name)
          .sort(),
        ['same-digest:1', 'same-digest:2'],
      );
      assert.deepEqual(repo.byDigest(d('f')), []);
    });

    test('referencedDigests lists distinct non-null digests', () => {
      assert.deepEqual([...repo.referencedDigests()].sort(), [d('a'), d('b')]);
    });

    test('delete reports whether a record went', () => {
      assert.equal(repo.delete('same-digest:1'), true);
      assert.equal(repo.delete('same-digest:1'), false);
      assert.equal(repo.get('same-digest:1'), undefined);
      assert.deepEqual(
        repo.byDigest(d('b')).map((r) => r.name),
        ['same-digest:2'],
      );
      repo.delete('same-digest:2');
      assert.deepEqual([...repo.referencedDigests()].sort(), [d('a')]);
    });

    test('the schema refuses an unknown status', () => {
      assert.throws(
        () => repo.upsert(row('bad-status', { status: 'weird' as ImageRow['status'] })),
        /CHECK constraint/,
      );
      assert.equal(repo.get('bad-status'), undefined);
    });
  });
});
