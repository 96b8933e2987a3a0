/**
 * Copies between the daemon and a real vessel-init agent over a socket (no VM): COPY_OUT
 * held to about one COPY_WINDOW while its consumer does not read, an aborted download that
 * does not wedge the stream, tar and raw copies in both directions, LIST and REMOVE through
 * GuestClient.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { guestBinaryPath } from '../../../src/core/assets.js';
import { COPY_WINDOW, GuestClient } from '../../../src/guest/index.js';

const skip = fs.existsSync(guestBinaryPath()) ? false : 'the guest program is not built';
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function readAll(s: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

describe('guest copies: flow control and file operations', { skip }, () => {
  let dir: string;
  let server: net.Server;
  let agent: ChildProcess;
  let guest: GuestClient;
  let blob: Buffer;
  let blobPath: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vessel-copy-'));
    const sock = path.join(dir, 'control.sock');
    server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    agent = spawn(guestBinaryPath(), ['agent', '--connect', sock], { stdio: 'ignore' });
    const [conn] = (await once(server, 'connection')) as [net.Socket];
    guest = await GuestClient.connect(conn);
    blob = randomBytes(24 * 1024 * 1024);
    blobPath = path.join(dir, 'blob.bin');
    fs.writeFileSync(blobPath, blob);
  });

  after(() => {
    guest?.close();
    agent?.kill('SIGKILL');
    server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a copy out whose consumer stops reading holds about one window', async () => {
    const out = guest.copyOut(blobPath, { raw: true });
    out.pause();
    await sleep(1500);
    // Nothing read: what sits here is the window plus at most one piece in flight.
    assert.ok(out.readableLength >= COPY_WINDOW / 2, `only ${out.readableLength} B arrived`);
    assert.ok(
      out.readableLength <= COPY_WINDOW + 128 * 1024,
      `${out.readableLength} B buffered for a ${COPY_WINDOW} B window`,
    );
    assert.equal(sha(await readAll(out)), sha(blob));
  });

  test('an aborted copy out does not wedge the channel', async () => {
    const out = guest.copyOut(blobPath, { raw: true });
    await once(out, 'readable');
    out.destroy();
    // The guest is granted the rest and runs to its end; the channel keeps working.
    const again = await readAll(guest.copyOut(blobPath, { raw: true }));
    assert.equal(sha(again), sha(blob));
    assert.equal((await guest.stat(blobPath)).size, blob.length);
  });

  test('tar out, tar in, raw in; list and remove', async () => {
    const tree = path.join(dir, 'tree');
    fs.mkdirSync(path.join(tree, 'sub'), { recursive: true });
    fs.copyFileSync(blobPath, path.join(tree, 'sub', 'blob.bin'));
    fs.symlinkSync('sub/blob.bin', path.join(tree, 'link'));
    const dst = path.join(dir, 'dst');
    await guest.copyIn(dst, guest.copyOut(tree));
    assert.equal(sha(fs.readFileSync(path.join(dst, 'tree/sub/blob.bin'))), sha(blob));
    assert.equal(fs.readlinkSync(path.join(dst, 'tree/link')), 'sub/blob.bin');

    // A lazy source: the client reads it only as the guest grants credit.
    let produced = 0;
    const source = new Readable({
      read() {
        if (produced >= blob.length) return void this.push(null);
        const piece = blob.subarray(produced, produced + 256 * 1024);
        produced += piece.length;
        this.push(piece);
      },
    });
    const file = path.join(dir, 'raw/deep/file.bin');
    await guest.copyIn(file, source, { raw: { mode: 0o640 } });
    assert.equal(sha(fs.readFileSync(file)), sha(blob));
    assert.equal(fs.statSync(file).mode & 0o777, 0o640);

    const entries = await guest.list(path.join(dir, 'dst/tree'));
    assert.deepEqual(
      entries.map((e) => [e.name, e.type, e.link_target]),
      [
        ['link', 'symlink', 'sub/blob.bin'],
        ['sub', 'dir', null],
      ],
    );
    await assert.rejects(guest.list(file), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'invalid_argument');
      return true;
    });
    await assert.rejects(guest.remove(path.join(dir, 'raw'), false), /not empty/);
    await guest.remove(path.join(dir, 'raw'), true);
    assert.equal(fs.existsSync(path.join(dir, 'raw')), false);
    await assert.rejects(
      guest.remove(path.join(dir, 'raw'), true),
      (e: Error & { code?: string }) => {
        assert.equal(e.code, 'not_found');
        return true;
      },
    );
  });

  test('a copy in that the guest refuses reports the guest error; the channel keeps working', async () => {
    const bad = Readable.from([Buffer.alloc(512, 1), Buffer.alloc(4 * COPY_WINDOW, 2)]);
    await assert.rejects(guest.copyIn(path.join(dir, 'bad'), bad), /checksum|tar/);
    assert.equal((await guest.stat('/')).is_dir, true);
  });
});
