// The userspace port proxy against real sockets on loopback (port 0 everywhere).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';
import { openProxy } from '../../../src/network/port-proxy.js';
import { errnoCode } from '../../../src/core/errors.js';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

test('TCP: relays both ways, passes half-close on, and close() drops live connections', async () => {
  const upstream = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('end', () => s.end(`echo:${got}`));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const target = (upstream.address() as net.AddressInfo).port;
  const hostPort = await freePort();
  const proxy = await openProxy({
    protocol: 'tcp',
    hostIp: '127.0.0.1',
    hostPort,
    targetIp: '127.0.0.1',
    targetPort: target,
  });
  try {
    const c = net.connect({ host: '127.0.0.1', port: hostPort, allowHalfOpen: true });
    await once(c, 'connect');
    c.end('hello');
    let reply = '';
    c.on('data', (d: Buffer) => (reply += d.toString()));
    await once(c, 'end');
    assert.equal(reply, 'echo:hello');
    // A second listener on the same port is refused with the raw errno.
    await assert.rejects(
      openProxy({
        protocol: 'tcp',
        hostIp: '127.0.0.1',
        hostPort,
        targetIp: '127.0.0.1',
        targetPort: target,
      }),
      (e) => errnoCode(e) === 'EADDRINUSE',
    );
  } finally {
    await proxy.close();
    await new Promise<void>((r) => upstream.close(() => r()));
  }
  assert.equal(proxy.connections(), 0);
});

test('TCP: an unreachable target closes the client connection instead of hanging', async () => {
  const hostPort = await freePort();
  const proxy = await openProxy({
    protocol: 'tcp',
    hostIp: '127.0.0.1',
    hostPort,
    targetIp: '127.0.0.1',
    targetPort: await freePort(),
  });
  try {
    const c = net.connect({ host: '127.0.0.1', port: hostPort });
    c.on('error', () => undefined);
    await once(c, 'close');
  } finally {
    await proxy.close();
  }
});

test('UDP: datagrams reach the target and replies come back to each client', async () => {
  const server = dgram.createSocket('udp4');
  server.on('message', (m, from) =>
    server.send(Buffer.concat([Buffer.from('echo:'), m]), from.port, from.address),
  );
  await new Promise<void>((r) => server.bind(0, '127.0.0.1', r));
  const hostPort = await freePort();
  const proxy = await openProxy(
    {
      protocol: 'udp',
      hostIp: '127.0.0.1',
      hostPort,
      targetIp: '127.0.0.1',
      targetPort: server.address().port,
    },
    { udpIdleMs: 200 },
  );
  const clients = [dgram.createSocket('udp4'), dgram.createSocket('udp4')];
  try {
    for (const [i, c] of clients.entries()) {
      c.send(`ping${i}`, hostPort, '127.0.0.1');
      const [msg] = (await once(c, 'message')) as [Buffer];
      assert.equal(msg.toString(), `echo:ping${i}`);
    }
    assert.equal(proxy.connections(), 2);
    // Idle flows are closed after the timeout.
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(proxy.connections(), 0);
  } finally {
    for (const c of clients) c.close();
    await proxy.close();
    server.close();
  }
});
