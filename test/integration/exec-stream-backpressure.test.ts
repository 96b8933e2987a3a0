// Backpressure of the exec WebSocket, against the real guest program run on the host
// (`vessel-init agent --connect`, no VM): a client that stops reading makes the daemon pause
// the command's output, and every byte still arrives, before the exit message.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import { execStreamRoutes } from '../../src/api/routes/exec-stream.js';
import { openExecStream } from '../../src/client/index.js';
import { guestBinaryPath } from '../../src/core/assets.js';
import { GuestClient, type ExecSession } from '../../src/guest/index.js';

const why = await fs.access(guestBinaryPath()).then(
  () => false,
  () => `the guest program is not built (${guestBinaryPath()}); run npm run build`,
);

describe(
  'exec stream: backpressure against the guest program on the host',
  { skip: why, timeout: 120_000 },
  () => {
    let dir: string;
    let server: net.Server;
    let agent: ReturnType<typeof spawn>;
    let guest: GuestClient;
    let app: FastifyInstance;
    let baseUrl: string;
    // The guest-side session of the last exec, as the route created it.
    let created: (s: ExecSession) => void = () => undefined;

    before(async () => {
      dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-exec-agent-'));
      const sock = path.join(dir, 'control.sock');
      server = net.createServer();
      await new Promise<void>((resolve) => server.listen(sock, resolve));
      agent = spawn(guestBinaryPath(), ['agent', '--connect', sock], { stdio: 'ignore' });
      const [conn] = (await once(server, 'connection')) as [net.Socket];
      guest = await GuestClient.connect(conn);
      app = Fastify();
      await app.register(websocket);
      execStreamRoutes(app, {
        instances: {
          exec: (_id, req) => {
            const s = guest.exec(req);
            created(s);
            return Promise.resolve(s);
          },
        },
      });
      baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    });

    after(async () => {
      guest?.close();
      agent?.kill('SIGKILL');
      await app?.close();
      server?.close();
      await fs.rm(dir, { recursive: true, force: true });
    });

    test('a client that stops reading pauses the command output; every byte arrives before exit', async () => {
      const size = 48 * 1024 * 1024;
      const sessionCreated = new Promise<ExecSession>((resolve) => (created = resolve));
      const stream = await openExecStream({ baseUrl }, 'host', {
        argv: ['head', '-c', String(size), '/dev/zero'],
      });
      const session = await sessionCreated;
      // Nobody reads stream.stdout yet: the socket fills and the daemon pauses the output.
      await once(session.stdout, 'pause');
      assert.equal(session.stdout.isPaused(), true);
      let total = 0;
      for await (const c of stream.stdout as AsyncIterable<Buffer>) total += c.length;
      assert.equal(total, size);
      assert.deepEqual(await stream.result, { code: 0, signal: null });
    });
  },
);
