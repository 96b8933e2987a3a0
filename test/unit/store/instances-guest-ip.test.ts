// Migration 4 on a real SQLite file: the guest address column, its unique index, and the
// set the allocator reads.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { InstancesRepo, openDatabase, type InstanceRow } from '../../../src/store/index.js';

const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-guest-ip-'));
const db = openDatabase(path.join(dir, 'vessel.db'));
after(async () => {
  db.close();
  await fs.rm(dir, { recursive: true, force: true });
});

function row(id: string, guest_ip: string | null): InstanceRow {
  return {
    id,
    name: `n-${id}`,
    image: 'img',
    image_digest: `sha256:${'a'.repeat(64)}`,
    state: 'Created',
    state_error: null,
    kernel: 'k/1',
    hypervisor: 'qemu',
    accel: null,
    vcpus: 1,
    memory_mib: 512,
    disk_bytes: 1,
    guest: {},
    pid: null,
    sockets: null,
    exit_code: null,
    created_at: new Date().toISOString(),
    started_at: null,
    stopped_at: null,
    cid: null,
    source_id: null,
    guest_ip,
  };
}

test('guest_ip is stored, unique while the row lives, and free again after delete', () => {
  const repo = new InstancesRepo(db);
  repo.insert(row('a', '10.88.0.2'));
  repo.insert(row('b', null));
  repo.insert(row('c', null)); // many rows without an address
  assert.equal(repo.get('a')?.guest_ip, '10.88.0.2');
  assert.equal(repo.get('b')?.guest_ip, null);
  assert.deepEqual(repo.guestIps(), new Set(['10.88.0.2']));
  assert.throws(
    () => repo.insert(row('d', '10.88.0.2')),
    (e) => (e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE',
  );
  repo.delete('a');
  assert.deepEqual(repo.guestIps(), new Set());
  repo.insert(row('d', '10.88.0.2'));
  assert.equal(repo.get('d')?.guest_ip, '10.88.0.2');
});

test('update writes the address and the guest config (release and re-allocation)', () => {
  const repo = new InstancesRepo(db);
  repo.insert({ ...row('u', '10.88.0.9'), guest: { network: { address: '10.88.0.9' } } });
  const stored = repo.get('u')!;
  repo.update({ ...stored, guest_ip: null, guest: { network: { address: '' } } });
  assert.equal(repo.get('u')?.guest_ip, null);
  assert.deepEqual(repo.get('u')?.guest, { network: { address: '' } });
  assert.ok(!repo.guestIps().has('10.88.0.9'), 'the address is free for others');
  repo.update({ ...repo.get('u')!, guest_ip: '10.88.0.10' });
  assert.equal(repo.get('u')?.guest_ip, '10.88.0.10');
});
