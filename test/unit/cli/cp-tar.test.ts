// The host side of `vessel cp`: hostile archives (as a guest could send) never write outside
// the destination, and a packed tree round-trips with modes, mtimes, symlinks and bytes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pack, type Header } from 'tar-stream';
import { entryComponents, extractArchive, packPath } from '../../../src/cli/cp-tar.js';
import { parseEndpoint } from '../../../src/cli/commands/cp.js';

type Entry = Partial<Header> & { name: string; body?: Buffer | string };

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const p = pack();
  for (const e of entries) {
    const { body, ...h } = e;
    if (body === undefined) p.entry(h);
    else p.entry(h, body);
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const n of (await fs.readdir(d)).sort()) {
      const st = await fs.lstat(path.join(d, n));
      out.push(`${rel}${n}`);
      if (st.isDirectory()) await walk(path.join(d, n), `${rel}${n}/`);
    }
  };
  await walk(dir, '');
  return out;
}

describe('cp host extractor', () => {
  let tmp: string;
  let dest: string;
  let outside: string;

  before(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-cp-'));
    dest = path.join(tmp, 'dest');
    outside = path.join(tmp, 'outside');
    await fs.mkdir(outside);
    await fs.writeFile(path.join(outside, 'secret'), 'keep me');
  });
  after(() => fs.rm(tmp, { recursive: true, force: true }));

  const hostile: [string, Entry[], RegExp][] = [
    ['a ../ name', [{ name: '../escaped', body: 'x' }], /"\.\." would escape/],
    ['a nested ../ name', [{ name: 'a/../../escaped', body: 'x' }], /"\.\." would escape/],
    ['an absolute name', [{ name: '/tmp/escaped', body: 'x' }], /absolute/],
    [
      'a file beneath a symlink to outside',
      [
        { name: 'link', type: 'symlink', linkname: '' },
        { name: 'link/secret', body: 'overwritten' },
      ],
      /"link" on its path is a symlink/,
    ],
    [
      'a directory beneath a symlink',
      [
        { name: 'd', type: 'symlink', linkname: '' },
        { name: 'd/sub/', type: 'directory' },
      ],
      /is a symlink/,
    ],
    [
      'a hard link to a file outside',
      [{ name: 'hl', type: 'link', linkname: '../outside/secret' }],
      /"\.\." would escape/,
    ],
    [
      'a hard link through a symlink',
      [
        { name: 'l2', type: 'symlink', linkname: '' },
        { name: 'hl', type: 'link', linkname: 'l2/secret' },
      ],
      /is a symlink/,
    ],
    [
      'a hard link to a symlink pointing outside',
      [
        { name: 'l3', type: 'symlink', linkname: '' },
        { name: 'hl', type: 'link', linkname: 'l3' },
      ],
      /is not a file in the archive/,
    ],
  ];

  for (const [what, entries, re] of hostile) {
    test(`refuses ${what}`, async () => {
      await fs.rm(dest, { recursive: true, force: true });
      await fs.mkdir(dest);
      const fixed = entries.map((e) =>
        e.type === 'symlink' && e.linkname === '' ? { ...e, linkname: outside } : e,
      );
      const tar = await tarOf(fixed);
      await assert.rejects(extractArchive(Readable.from([tar]), { dest }), (err: Error) => {
        assert.match(err.message, re);
        return true;
      });
      assert.equal(await fs.readFile(path.join(outside, 'secret'), 'utf8'), 'keep me');
      assert.deepEqual(await fs.readdir(outside), ['secret']);
      assert.deepEqual(await fs.readdir(tmp).then((l) => l.sort()), ['dest', 'outside']);
    });
  }

  test('a symlink replaced by a file of the same name writes the file, not the target', async () => {
    await fs.rm(dest, { recursive: true, force: true });
    await fs.mkdir(dest);
    const tar = await tarOf([
      { name: 'secret', type: 'symlink', linkname: path.join(outside, 'secret') },
      { name: 'secret', body: 'mine' },
    ]);
    await extractArchive(Readable.from([tar]), { dest });
    assert.equal(await fs.readFile(path.join(outside, 'secret'), 'utf8'), 'keep me');
    assert.equal(await fs.readFile(path.join(dest, 'secret'), 'utf8'), 'mine');
    assert.ok((await fs.lstat(path.join(dest, 'secret'))).isFile());
  });

  test('a truncated archive is an error', async () => {
    await fs.rm(dest, { recursive: true, force: true });
    await fs.mkdir(dest);
    const tar = await tarOf([{ name: 'big', body: Buffer.alloc(10_000, 1) }]);
    await assert.rejects(extractArchive(Readable.from([tar.subarray(0, 3000)]), { dest }));
  });

  test('entry names: rename and strip the first component', () => {
    assert.deepEqual(entryComponents('src/a/b', 'new'), ['new', 'a', 'b']);
    assert.deepEqual(entryComponents('./src/a', ''), ['a']);
    assert.deepEqual(entryComponents('src', ''), []);
    assert.throws(() => entryComponents('a\0b', undefined), /NUL/);
  });

  test('cp endpoints: NAME:PATH, local paths, -', () => {
    assert.deepEqual(parseEndpoint('box:/etc'), { kind: 'guest', instance: 'box', path: '/etc' });
    assert.deepEqual(parseEndpoint('box:etc'), { kind: 'guest', instance: 'box', path: '/etc' });
    assert.deepEqual(parseEndpoint('./a:b'), { kind: 'local', path: './a:b' });
    assert.deepEqual(parseEndpoint('/abs'), { kind: 'local', path: '/abs' });
    assert.deepEqual(parseEndpoint('-'), { kind: 'stdio' });
  });

  test('pack → extract keeps bytes, modes, mtimes, symlinks, empty dirs and hard links', async () => {
    const src = path.join(tmp, 'src');
    await fs.mkdir(path.join(src, 'sub/empty'), { recursive: true });
    const bin = crypto.randomBytes(300_000);
    await fs.writeFile(path.join(src, 'sub/bin'), bin);
    await fs.writeFile(path.join(src, 'x.sh'), '#!/bin/sh\n');
    await fs.chmod(path.join(src, 'x.sh'), 0o751);
    await fs.chmod(path.join(src, 'sub'), 0o700);
    await fs.symlink('../x.sh', path.join(src, 'sub/link'));
    const when = new Date('2020-01-02T03:04:05Z');
    await fs.utimes(path.join(src, 'x.sh'), when, when);
    await fs.utimes(path.join(src, 'sub'), when, when);

    await fs.rm(dest, { recursive: true, force: true });
    await fs.mkdir(dest);
    const tar = await packPath(src, { name: 'copy' });
    const r = await extractArchive(tar, { dest });
    assert.equal(r.entries, 6);
    const out = path.join(dest, 'copy');
    assert.deepEqual(await listTree(out), ['sub', 'sub/bin', 'sub/empty', 'sub/link', 'x.sh']);
    assert.ok(bin.equals(await fs.readFile(path.join(out, 'sub/bin'))));
    assert.equal((await fs.stat(path.join(out, 'x.sh'))).mode & 0o7777, 0o751);
    assert.equal((await fs.stat(path.join(out, 'sub'))).mode & 0o7777, 0o700);
    assert.equal(await fs.readlink(path.join(out, 'sub/link')), '../x.sh');
    assert.equal((await fs.stat(path.join(out, 'x.sh'))).mtime.getTime(), when.getTime());
    assert.equal((await fs.stat(path.join(out, 'sub'))).mtime.getTime(), when.getTime());

    // A hard link to a file of the archive is made.
    const tar2 = await tarOf([
      { name: 'f', body: 'data' },
      { name: 'g', type: 'link', linkname: 'f' },
    ]);
    await extractArchive(Readable.from([tar2]), { dest });
    assert.equal(await fs.readFile(path.join(dest, 'g'), 'utf8'), 'data');
  });
});
