// Pure volume rules: mount paths, one-writer-or-many-readers, archive detection, -v specs.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { isVesselError } from '../../../src/core/errors.js';
import {
  checkAttachments,
  checkMountPath,
  detectArchive,
  type AttachmentRule,
} from '../../../src/volumes/rules.js';
import { mountOf, parseVolumeSpec, sizeGbFor } from '../../../src/cli/volume-spec.js';

const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    assert.ok(isVesselError(err), String(err));
    return err.code;
  }
};

describe('mount paths', () => {
  test('absolute, normalized paths outside /proc, /dev, /sys are accepted', () => {
    for (const p of ['/data', '/mnt/a/b', '/procfs', '/devices', '/system', '/srv/proc'])
      assert.equal(checkMountPath(p), p);
  });

  test('relative, unnormalized, root and reserved paths are invalid_argument', () => {
    for (const p of [
      '',
      'data',
      './data',
      '/',
      '/proc',
      '/proc/x',
      '/dev',
      '/dev/shm',
      '/sys',
      '/sys/fs/cgroup',
      '/a/../b',
      '/a/./b',
      '/a//b',
      '/data/',
      '/../proc',
      '/a\0b',
    ])
      assert.equal(
        code(() => checkMountPath(p)),
        'invalid_argument',
        JSON.stringify(p),
      );
  });
});

describe('attachment rules', () => {
  const a = (
    volume_id: string,
    instance_id: string,
    mode: 'rw' | 'ro' | 'overlay',
    mount_path = '/data',
  ): AttachmentRule => ({
    volume_id,
    instance_id,
    mount_path,
    readonly: mode !== 'rw',
    overlay: mode === 'overlay',
  });

  test('any number of read-only and overlay attachments share a volume', () => {
    checkAttachments([a('v', 'i1', 'ro'), a('v', 'i2', 'overlay')], [a('v', 'i3', 'ro')]);
    checkAttachments([a('v', 'i1', 'ro')], [a('v', 'i2', 'overlay')]);
  });

  test('a read-write attachment needs the volume unattached, and excludes every other', () => {
    checkAttachments([a('w', 'i1', 'ro')], [a('v', 'i2', 'rw')]);
    assert.equal(
      code(() => checkAttachments([a('v', 'i1', 'ro')], [a('v', 'i2', 'rw')])),
      'volume_in_use',
    );
    assert.equal(
      code(() => checkAttachments([a('v', 'i1', 'overlay')], [a('v', 'i2', 'rw')])),
      'volume_in_use',
    );
    assert.equal(
      code(() => checkAttachments([a('v', 'i1', 'rw')], [a('v', 'i2', 'rw')])),
      'volume_in_use',
    );
    assert.equal(
      code(() => checkAttachments([a('v', 'i1', 'rw')], [a('v', 'i2', 'ro')])),
      'volume_in_use',
    );
    assert.equal(
      code(() => checkAttachments([a('v', 'i1', 'rw')], [a('v', 'i2', 'overlay')])),
      'volume_in_use',
    );
  });

  test('the new attachments are checked against each other too', () => {
    assert.equal(
      code(() => checkAttachments([], [a('v', 'i1', 'rw'), a('v', 'i2', 'rw', '/x')])),
      'volume_in_use',
    );
    // One instance: a volume once, a path once.
    assert.equal(
      code(() => checkAttachments([], [a('v', 'i1', 'ro'), a('v', 'i1', 'ro', '/other')])),
      'invalid_argument',
    );
    assert.equal(
      code(() => checkAttachments([], [a('v', 'i1', 'ro'), a('w', 'i1', 'ro')])),
      'invalid_argument',
    );
  });

  test('the message names the volume and the holder', () => {
    try {
      checkAttachments([a('v1', 'inst-a', 'rw')], [a('v1', 'inst-b', 'ro')], () => 'dataset');
      assert.fail('accepted');
    } catch (err) {
      assert.match(
        (err as Error).message,
        /volume "dataset" is attached read-write to instance inst-a/,
      );
    }
  });
});

describe('archive detection', () => {
  const tarHeader = (ustar: boolean): Buffer => {
    const h = Buffer.alloc(512);
    h.write('file.txt', 0);
    h.write('0000644\0', 100);
    h.write('00000000000\0', 124);
    if (ustar) h.write('ustar\0', 257);
    h.fill(' ', 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
    return h;
  };

  test('gzip, zstd, ustar and v7 tars are recognised by their bytes', () => {
    assert.equal(detectArchive(gzipSync(Buffer.from('x'))), 'tar.gz');
    assert.equal(detectArchive(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0])), 'tar.zst');
    assert.equal(detectArchive(tarHeader(true)), 'tar');
    assert.equal(detectArchive(tarHeader(false)), 'tar');
  });

  test('anything else is invalid_archive', () => {
    const broken = tarHeader(false);
    broken[0] = 0x41; // checksum no longer adds up
    for (const b of [Buffer.alloc(0), Buffer.from('PK\x03\x04zip'), Buffer.alloc(1024), broken])
      assert.equal(
        code(() => detectArchive(b)),
        'invalid_archive',
      );
  });
});

describe('vessel run -v', () => {
  test('names and host directories, with modes', () => {
    assert.deepEqual(parseVolumeSpec('data:/data'), {
      source: 'data',
      hostDir: false,
      mount_path: '/data',
      mode: 'rw',
    });
    assert.equal(parseVolumeSpec('data:/data:ro').mode, 'ro');
    assert.equal(parseVolumeSpec('data:/d:overlay').mode, 'overlay');
    assert.equal(parseVolumeSpec('./dir:/data').hostDir, true);
    assert.equal(parseVolumeSpec('/abs/dir:/data:ro').hostDir, true);
    assert.equal(parseVolumeSpec('~/dir:/data').hostDir, true);
    assert.deepEqual(mountOf('vol-1', parseVolumeSpec('x:/d:ro')), {
      volume_id: 'vol-1',
      mount_path: '/d',
      readonly: true,
    });
    assert.deepEqual(mountOf('vol-1', parseVolumeSpec('x:/d:overlay')), {
      volume_id: 'vol-1',
      mount_path: '/d',
      overlay: true,
    });
  });

  test('malformed specs are invalid_argument', () => {
    for (const s of ['data', 'data:rel', ':/d', 'a:/d:rx', 'a:/d:ro:x'])
      assert.equal(
        code(() => parseVolumeSpec(s)),
        'invalid_argument',
        s,
      );
  });

  test('a host directory gets a size with room to spare', () => {
    assert.equal(sizeGbFor(0), 1);
    assert.equal(sizeGbFor(600 * 1024 ** 2), 1);
    assert.equal(sizeGbFor(800 * 1024 ** 2), 2);
  });
});
