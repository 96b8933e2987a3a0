// The newc writer, checked by parsing its output back and, when installed,
// by the system cpio tool.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { writeCpio, type CpioEntry } from '../../../src/kernels/cpio.js';
import { isVesselError } from '../../../src/core/errors.js';

interface Parsed {
  name: string;
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  uid: number;
  data: Buffer;
}

/** A small independent newc reader: checks magic, alignment and the trailer. */
function readCpio(buf: Buffer): Parsed[] {
  const out: Parsed[] = [];
  let off = 0;
  for (;;) {
    assert.equal(off % 4, 0, 'every header starts 4-byte aligned');
    assert.equal(buf.toString('ascii', off, off + 6), '070701');
    const field = (i: number): number =>
      parseInt(buf.toString('ascii', off + 6 + i * 8, off + 14 + i * 8), 16);
    const nameSize = field(11);
    const size = field(6);
    const name = buf.toString('utf8', off + 110, off + 110 + nameSize - 1);
    assert.equal(buf[off + 110 + nameSize - 1], 0, 'name is NUL terminated');
    let p = off + 110 + nameSize;
    p += (4 - (p % 4)) % 4;
    const data = buf.subarray(p, p + size);
    p += size;
    p += (4 - (p % 4)) % 4;
    if (name === 'TRAILER!!!') {
      assert.equal(p, buf.length, 'nothing after the trailer');
      return out;
    }
    out.push({
      name,
      ino: field(0),
      mode: field(1),
      uid: field(2),
      nlink: field(4),
      mtime: field(5),
      data,
    });
    off = p;
  }
}

const ENTRIES: CpioEntry[] = [
  { path: '/init', type: 'file', mode: 0o755, data: Buffer.from('#!/bin/sh\necho hi\n') },
  { path: '/dev', type: 'dir', mode: 0o755 },
  { path: '/etc/vessel/modules', type: 'file', mode: 0o644, data: Buffer.from('a.ko\nb.ko\n') },
  { path: '/bin/sh', type: 'symlink', mode: 0o777, target: 'busybox' },
  { path: 'empty', type: 'file', mode: 0o600, uid: 1000, mtime: 1700000000 },
  { path: '/x/abc', type: 'file', mode: 0o644, data: Buffer.alloc(5, 7) },
];

describe('writeCpio', () => {
  test('round-trips names, types, modes, data and unique inodes', () => {
    const buf = writeCpio(ENTRIES);
    assert.equal(buf.length % 4, 0);
    const parsed = readCpio(buf);
    assert.deepEqual(
      parsed.map((e) => e.name),
      [
        'init',
        'dev',
        'etc',
        'etc/vessel',
        'etc/vessel/modules',
        'bin',
        'bin/sh',
        'empty',
        'x',
        'x/abc',
      ],
    );
    const by = new Map(parsed.map((e) => [e.name, e]));
    assert.equal(by.get('init')!.mode, 0o100755);
    assert.equal(by.get('init')!.data.toString(), '#!/bin/sh\necho hi\n');
    assert.equal(by.get('dev')!.mode, 0o040755);
    assert.equal(by.get('dev')!.nlink, 2);
    assert.equal(by.get('etc')!.mode, 0o040755, 'missing parents are added as 0755 dirs');
    assert.equal(by.get('bin/sh')!.mode, 0o120777);
    assert.equal(by.get('bin/sh')!.data.toString(), 'busybox');
    assert.equal(by.get('empty')!.data.length, 0);
    assert.equal(by.get('empty')!.uid, 1000);
    assert.equal(by.get('empty')!.mtime, 1700000000);
    assert.deepEqual(by.get('x/abc')!.data, Buffer.alloc(5, 7));
    const inodes = parsed.map((e) => e.ino);
    assert.equal(new Set(inodes).size, inodes.length);
    assert.ok(inodes.every((i) => i > 0));
  });

  test('is deterministic', () => {
    assert.deepEqual(writeCpio(ENTRIES), writeCpio(ENTRIES));
  });

  test('an empty archive is just the trailer', () => {
    const buf = writeCpio([]);
    assert.deepEqual(readCpio(buf), []);
    assert.equal(buf.length, 124); // 110 + "TRAILER!!!\0" (11) padded to 4
  });

  test('refuses unsafe paths, duplicates and symlinks without a target', () => {
    const bad: CpioEntry[][] = [
      [{ path: '../etc', type: 'dir', mode: 0o755 }],
      [{ path: '/', type: 'dir', mode: 0o755 }],
      [
        { path: 'a', type: 'dir', mode: 0o755 },
        { path: '/a/', type: 'dir', mode: 0o755 },
      ],
      [{ path: 'l', type: 'symlink', mode: 0o777 }],
      [{ path: 'f', type: 'file', mode: 0o644, uid: -1 }],
    ];
    for (const entries of bad) {
      assert.throws(
        () => writeCpio(entries),
        (e) => isVesselError(e, 'invalid_argument'),
      );
    }
  });

  test('the system cpio tool lists the archive', (t) => {
    const probe = spawnSync('cpio', ['--version']);
    if (probe.error) {
      t.skip('cpio is not installed (apt package cpio); only the in-test reader checked');
      return;
    }
    const res = spawnSync('cpio', ['-itv', '--quiet'], { input: writeCpio(ENTRIES) });
    assert.equal(res.status, 0, res.stderr.toString());
    const lines = res.stdout.toString().trim().split('\n');
    assert.equal(lines.length, 10);
    assert.match(lines[0]!, /^-rwxr-xr-x\s+1 root\s+root\s+18 .* init$/);
    assert.match(
      lines.find((l) => l.endsWith('bin/sh -> busybox'))!,
      /^lrwxrwxrwx/,
    );
    assert.match(
      lines.find((l) => l.endsWith(' dev'))!,
      /^drwxr-xr-x\s+2/,
    );
  });
});
