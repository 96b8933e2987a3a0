// Where layers are unpacked: the fit decision, the layer size hint, and the
// private staging directory (creation, stale cleanup, refusal of unsafe
// places, reservations, shutdown).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { silentLogger } from '../../../src/core/logger.js';
import { Paths } from '../../../src/core/paths.js';
import {
  STAGING_SIZE_SLACK,
  TMPFS_MAGIC,
  UnpackStaging,
  decideStaging,
  stagingNeed,
  type SpaceInfo,
} from '../../../src/images/unpack-staging.js';
import {
  UNKNOWN_RATIO,
  unpackedSizeHint,
  zstdContentSize,
} from '../../../src/images/unpack/index.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const isRoot = process.getuid?.() === 0;
const EXT4_MAGIC = 0xef53;
const shmSkip = await fs.statfs('/dev/shm').then(
  (st) => st.type !== TMPFS_MAGIC && '/dev/shm is not a tmpfs on this host',
  () => '/dev/shm does not exist on this host',
);

const space = (over: Partial<SpaceInfo> = {}): SpaceInfo => ({
  type: EXT4_MAGIC,
  bsize: 4096,
  bavail: (10 * GiB) / 4096,
  files: 100_000_000,
  ffree: 100_000_000,
  ...over,
});

describe('decideStaging', () => {
  test('fits when free space minus reservations covers the need', () => {
    const base = { space: space(), memAvailableBytes: 0, reservedBytes: 0 };
    assert.deepEqual(decideStaging({ ...base, needBytes: 9 * GiB }), { fits: true });
    const full = decideStaging({ ...base, needBytes: 6 * GiB, reservedBytes: 5 * GiB });
    assert.equal(full.fits, false);
    assert.match(!full.fits ? full.reason : '', /needs 6144 MiB, 5120 MiB free/);
  });

  test('too few free inodes refuse; a filesystem without inode counts does not', () => {
    const few = decideStaging({
      space: space({ ffree: 10 }),
      needBytes: 100 * MiB,
      reservedBytes: 0,
      memAvailableBytes: 0,
    });
    assert.equal(few.fits, false);
    assert.match(!few.fits ? few.reason : '', /inodes/);
    const uncounted = decideStaging({
      space: space({ files: 0, ffree: 0 }),
      needBytes: 100 * MiB,
      reservedBytes: 0,
      memAvailableBytes: 0,
    });
    assert.deepEqual(uncounted, { fits: true });
  });

  test('on tmpfs the need must also stay within half of the available memory', () => {
    const tmpfs = space({ type: TMPFS_MAGIC });
    const input = { space: tmpfs, needBytes: 3 * GiB, reservedBytes: 0 };
    assert.deepEqual(decideStaging({ ...input, memAvailableBytes: 8 * GiB }), { fits: true });
    const low = decideStaging({ ...input, memAvailableBytes: 4 * GiB });
    assert.equal(low.fits, false);
    assert.match(!low.fits ? low.reason : '', /RAM/);
    // The same need on a disk filesystem ignores memory.
    assert.deepEqual(decideStaging({ ...input, space: space(), memAvailableBytes: 0 }), {
      fits: true,
    });
  });

  test('the need adds headroom to the estimate', () => {
    assert.equal(stagingNeed(0), STAGING_SIZE_SLACK);
    assert.ok(stagingNeed(100 * MiB) > 100 * MiB + STAGING_SIZE_SLACK);
  });
});

describe('unpackedSizeHint', () => {
  let dir = '';
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-hint-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });
  const write = async (name: string, data: Buffer): Promise<string> => {
    const file = path.join(dir, name);
    await fs.writeFile(file, data);
    return file;
  };

  test('plain tar is its own size; gzip reads ISIZE (a multi-member gzip: its last member)', async () => {
    const data = Buffer.alloc(300_000, 'a');
    assert.equal(await unpackedSizeHint(await write('plain', data)), data.length);
    assert.equal(await unpackedSizeHint(await write('gz', gzipSync(data))), data.length);
    const multi = Buffer.concat([gzipSync(data), gzipSync(Buffer.alloc(1000, 'b'))]);
    assert.equal(await unpackedSizeHint(await write('multi', multi)), 1000);
    // An ISIZE below the compressed size cannot be the size (4 GiB wrap or a tiny last member).
    const lying = Buffer.concat([gzipSync(randomBytes(100_000)), gzipSync(Buffer.from('x'))]);
    assert.equal(await unpackedSizeHint(await write('lying', lying)), lying.length * UNKNOWN_RATIO);
    // Incompressible data: ISIZE is a little below the compressed size, not a 4 GiB wrap.
    const noise = Buffer.from(Array.from({ length: 50_000 }, (_, i) => (i * 7919) % 251));
    const gz = gzipSync(noise, { level: 0 });
    assert.ok(gz.length > noise.length);
    assert.equal(await unpackedSizeHint(await write('stored', gz)), noise.length);
  });

  test('zstd: the declared content size, else the compressed size times the assumed ratio', async () => {
    // Frame header: magic, descriptor with Single_Segment and a 4-byte content size.
    const declared = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0xa0, 0x40, 0x42, 0x0f, 0x00]);
    assert.equal(await unpackedSizeHint(await write('zst', declared)), 1_000_000);
    const undeclared = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38, 0, 0, 0, 0]);
    assert.equal(
      await unpackedSizeHint(await write('zst2', undeclared)),
      undeclared.length * UNKNOWN_RATIO,
    );
  });

  test('zstdContentSize reads every field width', () => {
    const magic = [0x28, 0xb5, 0x2f, 0xfd];
    const h = (bytes: number[]): Buffer => Buffer.from([...magic, ...bytes]);
    assert.equal(zstdContentSize(h([0x20, 200])), 200, '1 byte (single segment)');
    assert.equal(zstdContentSize(h([0x40, 0x38, 0x10, 0x00])), 16 + 256, '2 bytes + 256');
    assert.equal(zstdContentSize(h([0x41, 0x38, 0x07, 0x00, 0x01])), 256 + 256, 'after a dict id');
    const eight = h([0xe0, 0, 0, 0, 0, 1, 0, 0, 0]);
    assert.equal(zstdContentSize(eight), 2 ** 32, '8 bytes');
    assert.equal(zstdContentSize(h([0x00, 0x38])), null, 'no content size');
    assert.equal(zstdContentSize(h([0x80])), null, 'truncated header');
  });
});

describe('UnpackStaging', () => {
  let work = '';
  let parent = '';
  const paths = new Paths('/var/lib/vessel-staging-test');
  const base = (): string => paths.unpackStagingDir(parent);
  const staging = (over: { parent?: string | null; memAvailable?: () => number } = {}) =>
    new UnpackStaging({
      parent: over.parent === undefined ? parent : over.parent,
      paths,
      logger: silentLogger(),
      memAvailable: over.memAvailable ?? (() => 64 * GiB),
    });
  const gone = (p: string): Promise<void> => assert.rejects(fs.lstat(p), { code: 'ENOENT' });

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-staging-'));
  });
  after(async () => {
    await fs.rm(work, { recursive: true, force: true });
  });
  const freshParent = async (mode = 0o700): Promise<string> => {
    parent = await fs.mkdtemp(path.join(work, 'p-'));
    await fs.chmod(parent, mode);
    return parent;
  };

  test('the private 0700 directory exists only while leases are held', async () => {
    await freshParent();
    const s = staging();
    await s.init();
    assert.equal(s.dir, base());
    assert.notEqual(new Paths('/other/data').unpackStagingDir(parent), base());
    await gone(base());
    const a = await s.acquire('aaaa', 1);
    const b = await s.acquire('bbbb', 1);
    assert.ok(a.lease && b.lease);
    const st = await fs.lstat(base());
    assert.ok(st.isDirectory());
    assert.equal(st.mode & 0o777, 0o700);
    assert.equal(path.dirname(a.lease.dir), base());
    assert.equal((await fs.lstat(a.lease.dir)).mode & 0o777, 0o700);
    await fs.writeFile(path.join(a.lease.dir, 'f'), 'x');
    await a.lease.release();
    await a.lease.release();
    await gone(a.lease.dir);
    await fs.access(base());
    await b.lease.release();
    await gone(base());
  });

  test('init removes what a crashed run left', async () => {
    await freshParent();
    await fs.mkdir(path.join(base(), 'left-over.abc', 'rootfs'), { recursive: true, mode: 0o700 });
    await fs.chmod(base(), 0o700);
    await fs.writeFile(path.join(base(), 'left-over.abc', 'rootfs', 'f'), 'x');
    const s = staging();
    await s.init();
    assert.equal(s.dir, base());
    await gone(base());
  });

  test('null or a missing parent disables staging', async () => {
    const off = staging({ parent: null });
    await off.init();
    assert.equal(off.dir, null);
    assert.deepEqual(await off.acquire('x', 1), {
      lease: null,
      why: 'disabled',
      detail: 'no staging directory',
    });
    const missing = staging({ parent: path.join(work, 'does-not-exist') });
    await missing.init();
    assert.equal(missing.dir, null);
  });

  test('a symlink, a file or a non-private directory at the name is refused and left alone', async () => {
    const target = await fs.mkdtemp(path.join(work, 'target-'));
    await fs.writeFile(path.join(target, 'keep'), 'keep');
    for (const plant of [
      () => fs.symlink(target, base()),
      () => fs.writeFile(base(), 'not a dir'),
      () => fs.mkdir(base(), { mode: 0o755 }).then(() => fs.chmod(base(), 0o755)),
    ]) {
      await freshParent();
      await plant();
      const before = await fs.lstat(base());
      const s = staging();
      await s.init();
      assert.equal(s.dir, null, 'staging is disabled');
      const after = await fs.lstat(base());
      assert.deepEqual([after.ino, after.mode], [before.ino, before.mode], 'left as it was');
    }
    assert.equal(await fs.readFile(path.join(target, 'keep'), 'utf8'), 'keep');
  });

  test('something planted at the name after init makes leases fail, and is left alone', async () => {
    await freshParent();
    const s = staging();
    await s.init();
    const target = await fs.mkdtemp(path.join(work, 'target-'));
    await fs.symlink(target, base());
    const grant = await s.acquire('x', 1);
    assert.equal(grant.lease, null);
    assert.equal(!grant.lease ? grant.why : '', 'unavailable');
    assert.ok((await fs.lstat(base())).isSymbolicLink(), 'the symlink is still there');
    assert.deepEqual(await fs.readdir(target), [], 'nothing was written through it');
  });

  test(
    'a directory owned by another user at the name is refused',
    { skip: !isRoot && 'needs root to chown' },
    async () => {
      await freshParent();
      await fs.mkdir(base(), { mode: 0o700 });
      await fs.chown(base(), 65534, 65534);
      const s = staging();
      await s.init();
      assert.equal(s.dir, null);
      assert.equal((await fs.lstat(base())).uid, 65534);
    },
  );

  test('a parent others may write to must be sticky', async () => {
    await freshParent(0o777);
    const loose = staging();
    await loose.init();
    assert.equal(loose.dir, null, 'world-writable without the sticky bit is refused');
    await fs.chmod(parent, 0o1777);
    const sticky = staging();
    await sticky.init();
    assert.equal(sticky.dir, base(), 'like /dev/shm and /tmp: sticky is fine');
  });

  test('leases reserve space until released', async (t) => {
    await freshParent();
    const s = staging();
    await s.init();
    const st = await fs.statfs(parent);
    const free = st.bavail * st.bsize;
    if (st.files > 0 && (free * 0.4) / 4096 > st.ffree) {
      t.skip('on this temp filesystem free inodes, not bytes, limit what fits');
      return;
    }
    // Each estimate needs about 40 % of the free space: two fit, three do not.
    const estimate = Math.floor((free * 0.4 - STAGING_SIZE_SLACK) / 1.25);
    assert.ok(estimate > 0, 'the temp filesystem has some free space');
    const a = await s.acquire('aaaa', estimate);
    const b = await s.acquire('bbbb', estimate);
    const c = await s.acquire('cccc', estimate);
    assert.ok(a.lease && b.lease, 'two fit');
    assert.equal(c.lease, null, 'the third does not: the first two reserved the space');
    assert.equal(!c.lease ? c.why : '', 'no_room');
    await a.lease.release();
    const d = await s.acquire('dddd', estimate);
    assert.ok(d.lease, 'a release frees its reservation');
    await b.lease.release();
    await d.lease.release();
    await gone(base());
  });

  test('on tmpfs the available memory caps what fits', { skip: shmSkip }, async () => {
    const shm = '/dev/shm';
    const s = new UnpackStaging({
      parent: shm,
      paths: new Paths(work),
      logger: silentLogger(),
      memAvailable: () => 100 * MiB,
    });
    await s.init();
    const small = await s.acquire('small', 10 * MiB);
    assert.ok(small.lease, '10 MiB (+ headroom) fits in half of 100 MiB');
    await small.lease.release();
    const big = await s.acquire('big', 40 * MiB);
    assert.equal(big.lease, null);
    assert.match(!big.lease ? big.detail : '', /RAM/);
    await gone(new Paths(work).unpackStagingDir(shm));
  });

  test('close stops new leases; one still held keeps its directory until released', async () => {
    await freshParent();
    const s = staging();
    await s.init();
    const held = await s.acquire('busy', 1);
    assert.ok(held.lease);
    s.close();
    assert.equal(s.dir, null);
    assert.equal((await s.acquire('late', 1)).lease, null);
    await fs.access(held.lease.dir);
    await held.lease.release();
    await gone(base());
  });
});
