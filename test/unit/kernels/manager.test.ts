// KernelManager over published kernel directories written in the on-disk format
// (kernel.json + files), with an injected list of users standing in for instance
// records: listing with sizes and users, removal refused while in use.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import {
  KernelManager,
  kernelVersionDir,
  type KernelInfo,
  type KernelUser,
} from '../../../src/kernels/index.js';

async function publish(
  dataDir: string,
  name: string,
  version: string,
  createdAt: string,
): Promise<number> {
  const dir = kernelVersionDir(dataDir, name, version);
  await fs.mkdir(path.join(dir, 'modules'), { recursive: true });
  const files: [string, number][] = [
    ['vmlinuz', 3000],
    ['modules/virtio.ko', 700],
    ['modules/virtio_blk.ko', 500],
    ['modules.order', 0],
  ];
  for (const [f, size] of files) await fs.writeFile(path.join(dir, f), Buffer.alloc(size, 1));
  const info: KernelInfo = {
    name,
    version,
    package: `linux-image-${version}`,
    source_type: 'apt',
    sha256: 'ab'.repeat(32),
    modules: ['virtio.ko', 'virtio_blk.ko'],
    builtin_modules: [],
    created_at: createdAt,
  };
  const json = JSON.stringify(info);
  await fs.writeFile(path.join(dir, 'kernel.json'), json);
  return 3000 + 700 + 500 + Buffer.byteLength(json);
}

describe('KernelManager', () => {
  let dataDir: string;
  let users: KernelUser[];
  let km: KernelManager;
  let size: number;

  beforeEach(async () => {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-km-'));
    size = await publish(
      dataDir,
      'debian-cloud-6.1',
      '6.1.0-1-cloud-amd64',
      '2024-01-01T00:00:00Z',
    );
    await publish(dataDir, 'debian-cloud-6.1', '6.1.0-2-cloud-amd64', '2024-02-01T00:00:00Z');
    users = [];
    km = new KernelManager({ dataDir, users: () => users });
  });
  afterEach(async () => {
    await fs.rm(dataDir, { recursive: true, force: true });
  });

  test('lists every version newest first, with its size on disk and its users', async () => {
    users.push(
      { name: 'web', kernel: 'debian-cloud-6.1/6.1.0-1-cloud-amd64' },
      { name: 'api', kernel: 'debian-cloud-6.1/6.1.0-1-cloud-amd64' },
    );
    const list = await km.list();
    assert.deepEqual(
      list.map((k) => [k.name, k.version, k.in_use_by]),
      [
        ['debian-cloud-6.1', '6.1.0-2-cloud-amd64', []],
        ['debian-cloud-6.1', '6.1.0-1-cloud-amd64', ['api', 'web']],
      ],
    );
    const [, old] = list;
    assert.equal(old?.size_bytes, size);
    assert.equal(old?.source_type, 'apt');
    assert.equal(old?.package, 'linux-image-6.1.0-1-cloud-amd64');
    assert.deepEqual(old?.modules, ['virtio.ko', 'virtio_blk.ko']);
  });

  test('removing a version an instance references is refused and removes nothing', async () => {
    // Users are read at removal time, not at construction.
    users.push({ name: 'web', kernel: 'debian-cloud-6.1/6.1.0-1-cloud-amd64' });
    await assert.rejects(km.remove('debian-cloud-6.1', '6.1.0-1-cloud-amd64'), (err) => {
      assert.ok(isVesselError(err, 'kernel_in_use'));
      assert.equal(err.kind, 'Conflict');
      assert.equal(
        err.message,
        'kernel "debian-cloud-6.1/6.1.0-1-cloud-amd64" is used by instance "web"; remove it first',
      );
      assert.deepEqual(err.details, {
        kernels: ['debian-cloud-6.1/6.1.0-1-cloud-amd64'],
        instances: ['web'],
      });
      return true;
    });
    // Removing every version would take the used one too.
    await assert.rejects(km.remove('debian-cloud-6.1'), (err) =>
      isVesselError(err, 'kernel_in_use'),
    );
    assert.equal((await km.list()).length, 2);
    // The unused version can go; the used one stays.
    await km.remove('debian-cloud-6.1', '6.1.0-2-cloud-amd64');
    assert.deepEqual(
      (await km.list()).map((k) => k.version),
      ['6.1.0-1-cloud-amd64'],
    );
    // Once the instance is gone, so can the kernel.
    users.length = 0;
    await km.remove('debian-cloud-6.1');
    assert.deepEqual(await km.list(), []);
    await assert.rejects(fs.access(path.join(dataDir, 'kernels', 'debian-cloud-6.1')));
  });

  test('several users of several versions are all named', async () => {
    users.push(
      { name: 'a', kernel: 'debian-cloud-6.1/6.1.0-1-cloud-amd64' },
      { name: 'b', kernel: 'debian-cloud-6.1/6.1.0-2-cloud-amd64' },
      { name: 'c', kernel: 'other/1.0' },
    );
    await assert.rejects(km.remove('debian-cloud-6.1'), (err) => {
      assert.ok(isVesselError(err, 'kernel_in_use'));
      assert.equal(
        err.message,
        'kernels "debian-cloud-6.1/6.1.0-1-cloud-amd64", "debian-cloud-6.1/6.1.0-2-cloud-amd64" are used by instances "a", "b"; remove them first',
      );
      return true;
    });
  });

  test('unknown kernels and bad names are clear errors', async () => {
    await assert.rejects(km.remove('nope'), (err) => {
      assert.ok(isVesselError(err, 'not_found'));
      assert.equal(err.message, 'kernel "nope" is not installed');
      return true;
    });
    await assert.rejects(km.remove('debian-cloud-6.1', '9.9'), (err) => {
      assert.ok(isVesselError(err, 'not_found'));
      assert.equal(err.message, 'kernel "debian-cloud-6.1/9.9" is not installed');
      return true;
    });
    for (const bad of ['../etc', 'UPPER', '.hidden', '']) {
      await assert.rejects(km.remove(bad), (err) => isVesselError(err, 'invalid_argument'));
    }
    for (const bad of ['../x', '..', 'a/b']) {
      await assert.rejects(km.remove('debian-cloud-6.1', bad), (err) =>
        isVesselError(err, 'invalid_argument'),
      );
    }
    await assert.rejects(km.pull('not-in-catalog'), (err) => {
      assert.ok(isVesselError(err, 'not_found'));
      assert.match(
        err.message,
        /kernel "not-in-catalog" is not in the catalog \(known: debian-cloud-6\.1\)/,
      );
      return true;
    });
    assert.equal((await km.list()).length, 2, 'nothing was touched');
  });
});
