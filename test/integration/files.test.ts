// Files in and out of a real microVM (issue 10, "Files"): `vessel cp` of trees and single
// files both ways (sha256, modes, symlinks, mtimes), stat, the files API (read, write, list,
// remove, binary bodies), 404 and 409, a guest that tries to make the host write outside the
// target directory, and the daemon's memory while a large copy streams through it. One
// instance serves everything; a second, stopped one serves the 409 cases.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { VesselError } from '../../src/core/errors.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { sampleMemory, statusKiB } from '../helpers/proc-mem.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const why = await vmSkipReason();

const MiB = 1024 * 1024;
/**
 * The big copy, 1 GiB each way as the issue asks: 1024x the copy window (COPY_WINDOW,
 * 1 MiB). A daemon that buffered the copy would grow by about its size; one that streams it
 * by a window plus V8 slack. Measured here (TCG, 2 vCPUs, four runs): +0 to +36 KiB in,
 * none out, at 25-47 MiB/s in and 71-108 MiB/s out.
 */
const BIG = 1024 * MiB;
/** Bound on the daemon's RSS growth during the big copy: a sixteenth of its size. */
const GROWTH_BOUND_KIB = 64 * 1024;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file) as AsyncIterable<Buffer>) h.update(c);
  return h.digest('hex');
}

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** Every path under `dir` with its type, mode, size, sha256 or link target, and mtime. */
async function describeTree(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const n of (await fs.readdir(d)).sort()) {
      const p = path.join(d, n);
      const st = await fs.lstat(p);
      const key = `${rel}${n}`;
      const mtime = Math.floor(st.mtimeMs / 1000);
      if (st.isSymbolicLink()) out[key] = `link ${await fs.readlink(p)}`;
      else if (st.isDirectory()) {
        out[key] = `dir ${(st.mode & 0o7777).toString(8)} ${mtime}`;
        await walk(p, `${key}/`);
      } else
        out[key] =
          `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${await sha256File(p)} ${mtime}`;
    }
  };
  await walk(dir, '');
  return out;
}

describe('files in and out of a real microVM', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let host: string;
  let d: SpawnedDaemon;
  let image: string;
  const box = 'filebox';
  const cli = async (args: string[], ok = true) => {
    const r = await d.cli(args, 300_000);
    if (ok) assert.equal(r.code, 0, `vessel ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const exec = async (script: string): Promise<string> => {
    const r = await cli(['exec', box, 'sh', '-c', script]);
    return r.stdout;
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-files-'));
    host = path.join(dir, 'host');
    await fs.mkdir(host);
    await seedKernel(dir);
    d = await startDaemon(dir);
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'files/busybox:1');
    image = (await d.client.importImage(createReadStream(archive))).name;
    for (const name of [box, 'stopped']) {
      await d.client.createInstance({
        image,
        name,
        cmd: ['sh', '-c', 'while :; do sleep 1; done'],
        network: { mode: 'none' },
        memory_mib: 256,
        overlay_size: '2GB',
      });
    }
    for (const name of [box, 'stopped']) {
      const w = await d.client.waitInstance(name, 'Running', 240);
      assert.equal(w.state, 'Running', `${name}: ${JSON.stringify(w)}`);
    }
    await d.client.stopInstance('stopped', 5);
  });

  after(async () => {
    if (d) {
      for (const i of await d.client.listInstances().catch(() => [])) {
        await d.client.deleteInstance(i.id).catch(() => undefined);
      }
      await d.stop();
    }
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('cp a tree in and back out: bytes, modes, symlinks, mtimes, empty dirs', async () => {
    const src = path.join(host, 'tree');
    await fs.mkdir(path.join(src, 'sub/deeper'), { recursive: true });
    await fs.mkdir(path.join(src, 'empty'));
    await fs.writeFile(path.join(src, 'sub/deeper/blob.bin'), randomBytes(3 * MiB + 17));
    await fs.writeFile(path.join(src, 'nul.bin'), Buffer.from([0, 0xff, 0x0d, 0x0a, 0]));
    await fs.writeFile(path.join(src, 'run.sh'), '#!/bin/sh\necho hi\n');
    await fs.writeFile(path.join(src, 'empty.txt'), '');
    await fs.chmod(path.join(src, 'run.sh'), 0o750);
    await fs.chmod(path.join(src, 'sub/deeper'), 0o711);
    await fs.symlink('../run.sh', path.join(src, 'sub/rel-link'));
    await fs.symlink('/etc/hostname', path.join(src, 'abs-link'));
    const old = new Date('2021-06-01T12:00:00Z');
    for (const p of ['run.sh', 'sub/deeper/blob.bin', 'sub/deeper', 'empty'])
      await fs.utimes(path.join(src, p), old, old);
    const want = await describeTree(src);

    await exec('mkdir -p /data');
    await cli(['cp', src, `${box}:/data`]);
    // In the guest: the same bytes and modes.
    const sums = await exec('cd /data/tree && busybox sha256sum sub/deeper/blob.bin nul.bin');
    assert.match(sums, new RegExp(want['sub/deeper/blob.bin']!.split(' ')[3]!));
    assert.equal(
      (await exec('stat -c "%a %Y" /data/tree/run.sh /data/tree/sub/deeper')).trim(),
      `750 ${old.getTime() / 1000}\n711 ${old.getTime() / 1000}`,
    );
    assert.equal((await exec('readlink /data/tree/sub/rel-link')).trim(), '../run.sh');

    // Out to a new name, and into an existing directory.
    await cli(['cp', `${box}:/data/tree`, path.join(host, 'back')]);
    assert.deepEqual(await describeTree(path.join(host, 'back')), want);
    await fs.mkdir(path.join(host, 'into'));
    await cli(['cp', `${box}:/data/tree`, path.join(host, 'into')]);
    assert.deepEqual(await describeTree(path.join(host, 'into/tree')), want);
    // SRC/. copies the contents.
    await fs.mkdir(path.join(host, 'contents'));
    await cli(['cp', `${box}:/data/tree/.`, path.join(host, 'contents')]);
    assert.deepEqual(await describeTree(path.join(host, 'contents')), want);
  });

  test('cp a single file: into a directory, to a new name, and back', async () => {
    const f = path.join(host, 'one.bin');
    const data = randomBytes(100_000);
    await fs.writeFile(f, data);
    await fs.chmod(f, 0o604);
    await exec('mkdir -p /single');
    await cli(['cp', f, `${box}:/single`]);
    await cli(['cp', f, `${box}:/single/renamed.bin`]);
    const listed = await exec("ls -l /single | busybox awk '{print $1, $5, $9}'");
    assert.match(listed, /-rw----r-- 100000 one\.bin/);
    assert.match(listed, /-rw----r-- 100000 renamed\.bin/);
    await cli(['cp', `${box}:/single/renamed.bin`, path.join(host, 'got.bin')]);
    assert.equal(sha256(await fs.readFile(path.join(host, 'got.bin'))), sha256(data));
    await fs.mkdir(path.join(host, 'fdir'));
    await cli(['cp', `${box}:/single/one.bin`, path.join(host, 'fdir')]);
    assert.equal(sha256(await fs.readFile(path.join(host, 'fdir/one.bin'))), sha256(data));
    // A missing source is an error naming the path, and writes nothing.
    const missing = await cli(['cp', `${box}:/no/such`, path.join(host, 'nothing')], false);
    assert.equal(missing.code, 4, missing.stderr);
    assert.match(missing.stderr, /no such path "\/no\/such"/);
    // `-`: a tar stream on stdout.
    const tar = await cli(['cp', `${box}:/single/renamed.bin`, '-']);
    assert.match(tar.stdout, /renamed\.bin/);
    assert.match(tar.stdout, /ustar/);
    await assert.rejects(fs.lstat(path.join(host, 'nothing')));
  });

  test('stat: PathInfo 200, a missing path exists:false, an unknown instance 404', async () => {
    const info = await d.client.statInstancePath(box, '/single/one.bin', true);
    assert.deepEqual(
      { exists: info.exists, is_file: info.is_file, mode: info.mode, size: info.size },
      { exists: true, is_file: true, mode: 0o604, size: 100_000 },
    );
    const link = await d.client.statInstancePath(box, '/data/tree/sub/rel-link', false);
    assert.equal(link.is_symlink, true);
    assert.equal(link.link_target, '../run.sh');
    const none = await d.client.statInstancePath(box, '/no/such', false);
    assert.equal(none.exists, false);
    await assert.rejects(d.client.statInstancePath('no-such-box', '/'), (e: VesselError) => {
      assert.equal(e.code, 'not_found');
      assert.equal(e.details?.status, 404);
      return true;
    });
  });

  test('files API: write (binary, mode, parents), read, list, remove; 404s', async () => {
    const bin = Buffer.concat([Buffer.from([0, 0xff, 0x0a, 0x0d]), randomBytes(2 * MiB)]);
    await d.client.writeInstanceFile(box, '/api/new/dir/b.bin', Readable.from([bin]), {
      mode: 0o640,
    });
    await d.client.writeInstanceFile(box, '/api/hello.txt', 'hello\n');
    await d.client.writeInstanceFile(box, '/api/empty', Buffer.alloc(0));
    const back = await readAll(await d.client.readInstanceFile(box, '/api/new/dir/b.bin'));
    assert.equal(sha256(back), sha256(bin));
    assert.equal((await exec('stat -c %a /api/new/dir/b.bin')).trim(), '640');
    assert.equal(
      (await readAll(await d.client.readInstanceFile(box, '/api/hello.txt'))).toString(),
      'hello\n',
    );
    assert.equal((await readAll(await d.client.readInstanceFile(box, '/api/empty'))).length, 0);
    await exec('ln -s hello.txt /api/lnk');
    const entries = await d.client.listInstanceFiles(box, '/api');
    assert.deepEqual(
      entries.map((e) => [e.name, e.type, e.type === 'file' ? e.size : null, e.link_target]),
      [
        ['empty', 'file', 0, null],
        ['hello.txt', 'file', 6, null],
        ['lnk', 'symlink', null, 'hello.txt'],
        ['new', 'dir', null, null],
      ],
    );
    assert.ok(entries.every((e) => e.mtime > 1_600_000_000 && e.mode > 0));
    // Reading a directory as a file, or listing a file, is a clear error.
    await assert.rejects(d.client.readInstanceFile(box, '/api'), /is a directory/);
    await assert.rejects(d.client.listInstanceFiles(box, '/api/hello.txt'), /not a directory/);
    // Remove: a non-empty directory needs recursive; a missing path is 404.
    await assert.rejects(d.client.removeInstanceFile(box, '/api/new'), (e: VesselError) => {
      assert.equal(e.details?.status, 400);
      return true;
    });
    await d.client.removeInstanceFile(box, '/api/new', { recursive: true });
    await d.client.removeInstanceFile(box, '/api/lnk');
    assert.equal((await exec('cat /api/hello.txt')).trim(), 'hello');
    for (const call of [
      () => d.client.removeInstanceFile(box, '/api/new'),
      () => d.client.readInstanceFile(box, '/api/new/dir/b.bin'),
      () => d.client.listInstanceFiles(box, '/no/such/dir'),
      () => d.client.getInstanceArchive(box, '/no/such'),
    ]) {
      await assert.rejects(call(), (e: VesselError) => {
        assert.equal(e.code, 'not_found');
        assert.equal(e.details?.status, 404);
        return true;
      });
    }
  });

  test('an instance that is not Running: 409 for every file operation', async () => {
    const calls: [string, () => Promise<unknown>][] = [
      ['stat', () => d.client.statInstancePath('stopped', '/')],
      ['read', () => d.client.readInstanceFile('stopped', '/etc/hostname')],
      ['list', () => d.client.listInstanceFiles('stopped', '/')],
      ['write', () => d.client.writeInstanceFile('stopped', '/x', 'x')],
      ['remove', () => d.client.removeInstanceFile('stopped', '/x')],
      ['archive out', () => d.client.getInstanceArchive('stopped', '/etc')],
      [
        'archive in',
        () => d.client.putInstanceArchive('stopped', '/', Readable.from([Buffer.alloc(1024)])),
      ],
    ];
    for (const [what, call] of calls) {
      await assert.rejects(call(), (e: VesselError) => {
        assert.equal(e.code, 'conflict', what);
        assert.equal(e.details?.status, 409, what);
        assert.match(e.message, /Stopped/, what);
        return true;
      });
    }
    const r = await cli(['cp', path.join(host, 'one.bin'), 'stopped:/'], false);
    assert.equal(r.code, 5, r.stderr);
    assert.match(r.stderr, /Stopped/);
  });

  test('a guest cannot make cp write outside the host target directory', async () => {
    // The guest prepares two trees: one with a symlink "escape" pointing at a host
    // directory outside the target, one with a real directory "escape" holding a file.
    // Copied one after the other into the same target, a naive extractor would follow the
    // first copy's symlink and write the second copy's file outside.
    const outside = path.join(dir, 'outside');
    await fs.mkdir(outside);
    await fs.writeFile(path.join(outside, 'victim'), 'untouched');
    await exec(
      `mkdir -p /evil1 /evil2/escape && ln -s ${outside} /evil1/escape && ` +
        `echo pwned > /evil2/escape/victim && echo pwned > /evil2/escape/new && ` +
        `ln -s ${outside}/victim /evil1/direct`,
    );
    const target = path.join(host, 'target');
    await fs.mkdir(target);
    await cli(['cp', `${box}:/evil1/.`, target]);
    assert.equal(await fs.readlink(path.join(target, 'escape')), outside);
    // The second copy replaces the symlink by a real directory, or refuses: never writes
    // through it.
    await cli(['cp', `${box}:/evil2/.`, target], false);
    // A file entry named like a symlink to an outside file replaces the link, not the file.
    await exec('rm /evil1/direct && echo pwned > /evil1/direct');
    await cli(['cp', `${box}:/evil1/direct`, target]);
    assert.equal(await fs.readFile(path.join(outside, 'victim'), 'utf8'), 'untouched');
    assert.deepEqual(await fs.readdir(outside), ['victim']);
    assert.equal((await fs.lstat(path.join(target, 'direct'))).isFile(), true);
    assert.equal(await fs.readFile(path.join(target, 'direct'), 'utf8'), 'pwned\n');

    // Bytes the guest chose (a hand-made tar with "../" and absolute entries, served from a
    // guest file) through the host extractor: refused, nothing written.
    const { pack } = await import('tar-stream');
    const p = pack();
    p.entry({ name: 'ok.txt' }, 'fine');
    p.entry({ name: '../escaped.txt' }, 'bad');
    p.finalize();
    await d.client.writeInstanceFile(box, '/evil.tar', Readable.from(p as AsyncIterable<Buffer>));
    const { extractArchive } = await import('../../src/cli/cp-tar.js');
    const dest = path.join(host, 'hostile');
    await fs.mkdir(dest);
    await assert.rejects(
      extractArchive(await d.client.readInstanceFile(box, '/evil.tar'), { dest }),
      /refusing archive entry "\.\.\/escaped\.txt"/,
    );
    await assert.rejects(fs.lstat(path.join(host, 'escaped.txt')));
  });

  test(`a ${BIG / MiB} MiB copy in and out: the daemon's memory stays bounded`, async () => {
    const pid = d.child.pid!;
    const big = path.join(host, 'big');
    await fs.mkdir(big);
    const fh = await fs.open(path.join(big, 'data.bin'), 'w');
    const hash = createHash('sha256');
    for (let off = 0; off < BIG; off += 8 * MiB) {
      const chunk = randomBytes(8 * MiB);
      hash.update(chunk);
      await fh.write(chunk);
    }
    await fh.close();
    const want = hash.digest('hex');
    await exec('mkdir -p /bigdst');

    const before = statusKiB(pid, 'VmRSS')!;
    const inSampler = sampleMemory(pid, 'VmRSS', 50);
    const t0 = performance.now();
    await cli(['cp', big, `${box}:/bigdst`]);
    const inMs = performance.now() - t0;
    const inPeak = inSampler.stop();
    assert.match(await exec('busybox sha256sum /bigdst/big/data.bin'), new RegExp(want));
    await fs.rm(big, { recursive: true });

    const outSampler = sampleMemory(pid, 'VmRSS', 50);
    const t1 = performance.now();
    await cli(['cp', `${box}:/bigdst/big`, path.join(host, 'bigback')]);
    const outMs = performance.now() - t1;
    const outPeak = outSampler.stop();
    assert.equal(await sha256File(path.join(host, 'bigback/data.bin')), want);
    await fs.rm(path.join(host, 'bigback'), { recursive: true });

    const mbps = (ms: number): string => ((BIG / MiB / ms) * 1000).toFixed(1);
    console.log(
      `# daemon RSS before ${before} KiB; peak in ${inPeak} KiB (+${inPeak - before}), ` +
        `out ${outPeak} KiB (+${outPeak - before}); in ${mbps(inMs)} MiB/s, out ${mbps(outMs)} MiB/s`,
    );
    assert.ok(inSampler.samples > 5 && outSampler.samples > 5, 'memory was sampled');
    assert.ok(
      inPeak - before < GROWTH_BOUND_KIB,
      `copy in grew the daemon by ${inPeak - before} KiB`,
    );
    assert.ok(
      outPeak - before < GROWTH_BOUND_KIB,
      `copy out grew the daemon by ${outPeak - before} KiB`,
    );
  });
});
