// The QMP client against a tiny fake QMP server on a unix socket (protocol level).
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { isVesselError } from '../../../src/core/errors.js';
import { QmpClient, type QmpEvent } from '../../../src/vmm/qemu/qmp.js';

type Handler = (
  cmd: { execute: string; arguments?: Record<string, unknown>; id?: unknown },
  send: (msg: unknown) => void,
) => void;

interface FakeQmp {
  readonly path: string;
  readonly received: { execute: string; arguments?: Record<string, unknown> }[];
  readonly server: net.Server;
  readonly clients: Set<net.Socket>;
  broadcast(msg: unknown): void;
}

async function fakeQmp(dir: string, handler: Handler, greet = true): Promise<FakeQmp> {
  const file = path.join(dir, 'qmp.sock');
  const received: FakeQmp['received'] = [];
  const clients = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    clients.add(sock);
    sock.on('close', () => clients.delete(sock));
    const send = (m: unknown): void => {
      sock.write(JSON.stringify(m) + '\r\n');
    };
    if (greet) {
      send({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: ['oob'] } });
    }
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const cmd = JSON.parse(line) as {
          execute: string;
          arguments?: Record<string, unknown>;
          id?: unknown;
        };
        received.push(
          cmd.arguments
            ? { execute: cmd.execute, arguments: cmd.arguments }
            : { execute: cmd.execute },
        );
        if (cmd.execute === 'qmp_capabilities') send({ return: {}, id: cmd.id });
        else handler(cmd, send);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(file, resolve));
  return {
    path: file,
    received,
    server,
    clients,
    broadcast: (m) => {
      for (const c of clients) c.write(JSON.stringify(m) + '\r\n');
    },
  };
}

void describe('QmpClient', () => {
  let dir: string;
  let fake: FakeQmp | undefined;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-qmp-'));
  });
  afterEach(async () => {
    if (fake) {
      for (const c of fake.clients) c.destroy();
      await new Promise<void>((r) => fake!.server.close(() => r()));
      fake = undefined;
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  void it('negotiates capabilities and correlates replies by id, out of order', async () => {
    const held: { id: unknown; send: (m: unknown) => void }[] = [];
    fake = await fakeQmp(dir, (cmd, send) => {
      if (cmd.execute === 'slow') held.push({ id: cmd.id, send });
      else send({ return: { status: 'running', running: true }, id: cmd.id });
      if (cmd.execute === 'query-status' && held.length > 0) {
        held[0]!.send({ return: { slow: true }, id: held[0]!.id });
      }
    });
    const qmp = await QmpClient.connect(fake.path);
    assert.deepEqual(qmp.greeting.capabilities, ['oob']);
    assert.equal(fake.received[0]!.execute, 'qmp_capabilities');
    const slow = qmp.execute('slow');
    const status = await qmp.execute<{ status: string }>('query-status');
    assert.equal(status.status, 'running');
    assert.deepEqual(await slow, { slow: true });
    qmp.close();
    await qmp.closed;
  });

  void it('sends arguments and emits events', async () => {
    fake = await fakeQmp(dir, (cmd, send) => send({ return: {}, id: cmd.id }));
    const qmp = await QmpClient.connect(fake.path);
    const events: QmpEvent[] = [];
    const got = new Promise<void>((resolve) => {
      qmp.onEvent((e) => {
        events.push(e);
        if (events.length === 2) resolve();
      });
    });
    await qmp.execute('migrate', { uri: 'exec:cat > /x' });
    assert.deepEqual(fake.received.at(-1), {
      execute: 'migrate',
      arguments: { uri: 'exec:cat > /x' },
    });
    fake.broadcast({ event: 'STOP', timestamp: { seconds: 1700000000, microseconds: 5 } });
    fake.broadcast({
      event: 'SHUTDOWN',
      data: { guest: true, reason: 'guest-shutdown' },
      timestamp: { seconds: 1, microseconds: 0 },
    });
    await got;
    assert.deepEqual(
      events.map((e) => [e.event, e.data]),
      [
        ['STOP', {}],
        ['SHUTDOWN', { guest: true, reason: 'guest-shutdown' }],
      ],
    );
    assert.equal(events[0]!.timestamp?.seconds, 1700000000);
    qmp.close();
  });

  void it('maps errors by class, not by text', async () => {
    fake = await fakeQmp(dir, (cmd, send) => {
      const cls =
        { nodev: 'DeviceNotFound', inactive: 'DeviceNotActive', nocmd: 'CommandNotFound' }[
          cmd.execute
        ] ?? 'GenericError';
      // The same text for every class: only the class may decide.
      send({ error: { class: cls, desc: 'Device not found' }, id: cmd.id });
    });
    const qmp = await QmpClient.connect(fake.path);
    const expect: [string, string, string][] = [
      ['nodev', 'not_found', 'DeviceNotFound'],
      ['inactive', 'conflict', 'DeviceNotActive'],
      ['nocmd', 'internal', 'CommandNotFound'],
      ['other', 'internal', 'GenericError'],
    ];
    for (const [cmd, code, cls] of expect) {
      await assert.rejects(qmp.execute(cmd), (err) => {
        assert.ok(isVesselError(err));
        assert.equal(err.code, code, cmd);
        assert.equal(err.details?.qmpClass, cls);
        assert.equal(err.details?.qmpCommand, cmd);
        return true;
      });
    }
    qmp.close();
  });

  void it('rejects pending commands when the server goes away, and later ones at once', async () => {
    fake = await fakeQmp(dir, () => {
      for (const c of fake!.clients) c.destroy();
    });
    const qmp = await QmpClient.connect(fake.path);
    let closed = false;
    qmp.onClose(() => (closed = true));
    await assert.rejects(qmp.execute('quit'), (err) => isVesselError(err, 'internal'));
    await qmp.closed;
    assert.ok(closed && qmp.isClosed);
    await assert.rejects(qmp.execute('query-status'), /closed/);
  });

  void it('fails connect on a missing socket and on a silent server (timeout)', async () => {
    await assert.rejects(QmpClient.connect(path.join(dir, 'nope.sock')), (err) =>
      isVesselError(err, 'internal'),
    );
    fake = await fakeQmp(dir, () => undefined, false);
    await assert.rejects(QmpClient.connect(fake.path, { timeoutMs: 50 }), (err) =>
      isVesselError(err, 'timeout'),
    );
  });

  void it('handles replies split across chunks and several per chunk', async () => {
    fake = await fakeQmp(dir, (cmd) => {
      const a = JSON.stringify({ return: 1, id: cmd.id }) + '\r\n';
      for (const c of fake!.clients) {
        c.write(a.slice(0, 5));
        setImmediate(() => c.write(a.slice(5) + JSON.stringify({ event: 'RESUME' }) + '\r\n'));
      }
    });
    const qmp = await QmpClient.connect(fake.path);
    const ev = new Promise<string>((r) => qmp.onEvent((e) => r(e.event)));
    assert.equal(await qmp.execute('x'), 1);
    assert.equal(await ev, 'RESUME');
    qmp.close();
  });
});
