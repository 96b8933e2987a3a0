/**
 * Output flow control between the guest and the daemon (PROTOCOL.md §4,
 * WINDOW), driven through a real vessel-init agent over a socket pair: a
 * consumer that reads slowly or in bursts must never stall the command, and
 * a consumer that stops reading must hold the daemon's buffer to a window.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { guestBinaryPath } from '../../../src/core/assets.js';
import { EXEC_WINDOW, GuestClient } from '../../../src/guest/index.js';

const skip = fs.existsSync(guestBinaryPath()) ? false : 'the guest program is not built';

describe('guest output flow control', { skip }, () => {
  let dir: string;
  let server: net.Server;
  let agent: ChildProcess;
  let guest: GuestClient;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vessel-window-'));
    const sock = path.join(dir, 'control.sock');
    server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    agent = spawn(guestBinaryPath(), ['agent', '--connect', sock], { stdio: 'ignore' });
    const [conn] = (await once(server, 'connection')) as [net.Socket];
    guest = await GuestClient.connect(conn);
  });

  after(() => {
    guest?.close();
    agent?.kill('SIGKILL');
    server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('async iteration in small reads gets every byte (no stall on the last grant)', async () => {
    const blob = path.join(dir, 'blob');
    fs.writeFileSync(blob, Buffer.from(Array.from({ length: 3_000_000 }, (_, i) => (i * 7) % 256)));
    const want = createHash('sha256').update(fs.readFileSync(blob)).digest('hex');
    const s = guest.exec({ argv: ['cat', blob], env: ['PATH=/usr/bin:/bin'] });
    s.stderr.resume();
    const h = createHash('sha256');
    for await (const chunk of s.stdout as AsyncIterable<Buffer>) {
      h.update(chunk);
      await new Promise((r) => setImmediate(r)); // a consumer slower than the socket
    }
    assert.equal(h.digest('hex'), want);
    assert.equal((await s.result).code, 0);
  });

  test('a consumer that stops reading holds the buffer to about one window', async () => {
    const s = guest.exec({
      argv: ['sh', '-c', 'head -c 8000000 /dev/zero'],
      env: ['PATH=/usr/bin:/bin'],
    });
    s.stderr.resume();
    await new Promise((r) => setTimeout(r, 700)); // nobody reads stdout meanwhile
    const held = s.stdout.readableLength;
    assert.ok(held > 0, 'some output arrived');
    assert.ok(held <= EXEC_WINDOW + 64 * 1024, `buffered ${held} bytes, beyond one window`);
    let total = 0;
    for await (const chunk of s.stdout as AsyncIterable<Buffer>) total += chunk.length;
    assert.equal(total, 8_000_000);
    assert.equal((await s.result).code, 0);
  });
});
