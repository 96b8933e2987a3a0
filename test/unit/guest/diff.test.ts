/**
 * GuestClient.diff against a real vessel-init agent over a socket (no VM): the agent
 * describes a directory given with `--upper` as an OCI layer, exactly as PID 1 describes
 * the overlay's upper directory. Layer contents (excludes, hard links, whiteouts), flow
 * control, and guest errors on the stream.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import * as tar from 'tar-stream';
import { guestBinaryPath } from '../../../src/core/assets.js';
import { COPY_WINDOW, GuestClient } from '../../../src/guest/index.js';

const skip = fs.existsSync(guestBinaryPath()) ? false : 'the guest program is not built';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface LayerEntry {
  name: string;
  type: string | null;
  mode: number;
  linkname: string | null;
  data: Buffer;
}

async function entries(layer: Readable): Promise<LayerEntry[]> {
  const extract = tar.extract();
  const out: LayerEntry[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry as AsyncIterable<Buffer>) chunks.push(c);
      const h = entry.header;
      out.push({
        name: h.name,
        type: h.type ?? null,
        mode: h.mode ?? 0,
        linkname: h.linkname ?? null,
        data: Buffer.concat(chunks),
      });
    }
  })();
  await Promise.all([pipeline(layer, extract), done]);
  return out;
}

/** A guest agent serving DIFF of `upper` (none: no upper directory). */
async function startAgent(
  dir: string,
  upper?: string,
): Promise<{ guest: GuestClient; agent: ChildProcess; server: net.Server }> {
  const sock = path.join(dir, `control-${Math.random().toString(36).slice(2)}.sock`);
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  const args = ['agent', '--connect', sock, ...(upper ? ['--upper', upper] : [])];
  const agent = spawn(guestBinaryPath(), args, { stdio: 'ignore' });
  const [conn] = (await once(server, 'connection')) as [net.Socket];
  return { guest: await GuestClient.connect(conn), agent, server };
}

describe('guest diff: the upper directory as an OCI layer', { skip }, () => {
  let dir: string;
  let upper: string;
  let served: Awaited<ReturnType<typeof startAgent>>;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vessel-diff-'));
    upper = path.join(dir, 'upper');
    fs.mkdirSync(path.join(upper, 'etc'), { recursive: true });
    fs.mkdirSync(path.join(upper, 'usr/bin'), { recursive: true });
    fs.writeFileSync(path.join(upper, 'etc/hosts'), '127.0.0.1 builder\n');
    fs.writeFileSync(path.join(upper, 'etc/hostname'), 'builder\n');
    fs.writeFileSync(path.join(upper, 'etc/app.conf'), 'x=1\n');
    fs.writeFileSync(path.join(upper, 'usr/bin/tool'), '#!/bin/sh\n', { mode: 0o755 });
    fs.linkSync(path.join(upper, 'usr/bin/tool'), path.join(upper, 'usr/bin/tool2'));
    fs.symlinkSync('tool', path.join(upper, 'usr/bin/t'));
    served = await startAgent(dir, upper);
  });

  after(() => {
    served?.guest.close();
    served?.agent.kill('SIGKILL');
    served?.server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('files, directories, symlinks and hard links; excluded paths left out', async () => {
    const got = await entries(served.guest.diff(['etc/hosts', '/etc/hostname']));
    assert.deepEqual(
      got.map((e) => [e.name, e.type]),
      [
        ['etc/', 'directory'],
        ['etc/app.conf', 'file'],
        ['usr/', 'directory'],
        ['usr/bin/', 'directory'],
        ['usr/bin/t', 'symlink'],
        ['usr/bin/tool', 'file'],
        ['usr/bin/tool2', 'link'],
      ],
    );
    const byName = (n: string): LayerEntry => got.find((e) => e.name === n)!;
    assert.equal(byName('etc/app.conf').data.toString(), 'x=1\n');
    assert.equal(byName('usr/bin/tool').mode & 0o777, 0o755);
    assert.equal(byName('usr/bin/t').linkname, 'tool');
    assert.equal(byName('usr/bin/tool2').linkname, 'usr/bin/tool');
  });

  test(
    'an overlay whiteout becomes .wh.<name>',
    { skip: process.getuid?.() === 0 ? false : 'creating a 0/0 character device needs root' },
    async () => {
      const gone = path.join(upper, 'etc/removed.conf');
      await promisify(execFile)('mknod', [gone, 'c', '0', '0']);
      try {
        const got = await entries(served.guest.diff(['etc/hosts', 'etc/hostname']));
        const wh = got.find((e) => e.name === 'etc/.wh.removed.conf');
        assert.ok(wh, `no whiteout in ${got.map((e) => e.name).join(', ')}`);
        assert.equal(wh.type, 'file');
        assert.equal(wh.data.length, 0);
        assert.ok(!got.some((e) => e.name === 'etc/removed.conf'));
      } finally {
        fs.rmSync(gone);
      }
    },
  );

  test('a layer whose consumer stops reading holds about one window', async () => {
    const big = Buffer.alloc(8 * 1024 * 1024, 7);
    fs.writeFileSync(path.join(upper, 'big.bin'), big);
    try {
      const layer = served.guest.diff([]);
      layer.pause();
      await sleep(1000);
      assert.ok(layer.readableLength >= COPY_WINDOW / 2, `only ${layer.readableLength} B arrived`);
      assert.ok(
        layer.readableLength <= COPY_WINDOW + 128 * 1024,
        `${layer.readableLength} B buffered for a ${COPY_WINDOW} B window`,
      );
      const got = await entries(layer);
      assert.ok(got.find((e) => e.name === 'big.bin')?.data.equals(big));
    } finally {
      fs.rmSync(path.join(upper, 'big.bin'));
    }
  });

  test('guest errors surface on the stream with the guest code', async () => {
    await assert.rejects(
      entries(served.guest.diff(['../etc'])),
      (e: Error & { code?: string; details?: { guest_code?: string } }) => {
        assert.equal(e.code, 'invalid_argument');
        assert.equal(e.details?.guest_code, 'invalid_argument');
        assert.match(e.message, /\.\./);
        return true;
      },
    );
    const bare = await startAgent(dir);
    try {
      await assert.rejects(
        entries(bare.guest.diff([])),
        (e: Error & { details?: { guest_code?: string } }) => {
          assert.equal(e.details?.guest_code, 'unsupported');
          assert.match(e.message, /no overlay upper directory/);
          return true;
        },
      );
    } finally {
      bare.guest.close();
      bare.agent.kill('SIGKILL');
      bare.server.close();
    }
    // The channel keeps working.
    assert.equal((await served.guest.stat('/')).is_dir, true);
  });
});
