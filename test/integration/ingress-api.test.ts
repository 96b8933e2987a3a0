// Ingress and DNS through a real daemon: the typed client, the OpenAPI document, the CLI
// (`vessel ingress create|ls|inspect|rm --json`) and the daemon's DNS server (loopback,
// port 0, forwarding to a test upstream on loopback).
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { VesselClient } from '../../src/client/index.js';
import { defaultConfig } from '../../src/core/config.js';
import { isVesselError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { run } from '../../src/core/process.js';
import { Daemon } from '../../src/daemon/index.js';
import { RCODE, TYPE_A, encodeQuery, parseResponse } from '../../src/network/dns/message.js';
import { startUpstream, udpAsk } from '../helpers/dns.js';
import { MAIN_JS } from '../helpers/vm-daemon.js';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

describe('ingress and DNS through the daemon', () => {
  let dir: string;
  let daemon: Daemon;
  let client: VesselClient;
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let port: number;

  const cli = (args: string[]) =>
    run(process.execPath, [MAIN_JS, '--data-dir', dir, ...args], {
      allowFailure: true,
      timeoutMs: 60_000,
    });

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-ingress-api-'));
    upstream = await startUpstream();
    const config = defaultConfig(dir);
    daemon = new Daemon({
      config: {
        ...config,
        dns: {
          ...config.dns,
          listen: ['127.0.0.1:0'],
          upstream: `127.0.0.1:${upstream.at.port}`,
          timeout_ms: 500,
        },
      },
      logger: silentLogger(),
    });
    await daemon.start();
    client = new VesselClient({ socketPath: daemon.paths.socket });
    port = await freePort();
  });

  after(async () => {
    await client?.close();
    await daemon?.stop();
    await upstream?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('create, list, get and delete over the API; the listener follows the routes', async () => {
    const created = await client.createIngress({
      name: 'apps',
      hostname: '{Instance}.Apps.Test',
      guest_port: 8080,
      host_port: port,
    });
    assert.equal(created.hostname, '{instance}.apps.test');
    assert.equal(created.instance, '{instance}');
    assert.equal(created.listen_address, '127.0.0.1');
    assert.deepEqual(
      (await client.listIngresses()).map((i) => i.name),
      ['apps'],
    );
    assert.equal((await client.getIngress(created.id)).name, 'apps');
    // The daemon resolves the label against its real instances: there is none.
    const r = await get(port, 'ghost.apps.test');
    assert.equal(r.status, 502);
    assert.match(r.body, /ingress "apps": instance "ghost" not found/);
    assert.equal((await get(port, 'other.test')).status, 404);
    await client.deleteIngress('apps');
    await assert.rejects(
      get(port, 'ghost.apps.test'),
      (err: Error & { code?: string }) => err.code === 'ECONNREFUSED',
    );
    await assert.rejects(client.getIngress('apps'), (err) => isVesselError(err, 'not_found'));
  });

  test('bad requests are 4xx with clear messages', async () => {
    await assert.rejects(
      client.createIngress({
        name: 'x',
        instance: 'nope',
        hostname: 'x.test',
        guest_port: 80,
        host_port: port,
      }),
      (err) => isVesselError(err, 'not_found') && /instance "nope" not found/.test(err.message),
    );
    await assert.rejects(
      client.createIngress({ name: 'x', hostname: 'bad..host', guest_port: 80, host_port: port }),
      (err) => isVesselError(err, 'invalid_argument') && /invalid label/.test(err.message),
    );
    await assert.rejects(
      client.createIngress({
        name: 'x',
        hostname: 'x.test',
        guest_port: 0,
        host_port: port,
      }),
      (err) => isVesselError(err, 'invalid_argument') && err.details?.status === 400,
    );
    await assert.rejects(client.deleteIngress('missing'), (err) => isVesselError(err, 'not_found'));
    assert.deepEqual(await client.listIngresses(), []);
  });

  test('the OpenAPI document describes /ingresses', async () => {
    const doc = (await client.openapi()) as {
      paths: Record<string, Record<string, { operationId?: string }>>;
    };
    assert.equal(doc.paths['/ingresses']?.post?.operationId, 'createIngress');
    assert.equal(doc.paths['/ingresses/{id}']?.delete?.operationId, 'deleteIngress');
  });

  test('the CLI: ingress create, ls --json, inspect, rm', async () => {
    const c = await cli([
      'ingress',
      'create',
      'web',
      '--hostname',
      '{instance}.cli.test',
      '--guest-port',
      '80',
      '--host-port',
      String(port),
    ]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(
      c.stdout,
      new RegExp(`web  http://\\{instance\\}\\.cli\\.test:${port} -> \\{instance\\}:80`),
    );
    const ls = await cli(['ingress', 'ls', '--json']);
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(
      (JSON.parse(ls.stdout) as { name: string }[]).map((i) => i.name),
      ['web'],
    );
    const table = await cli(['ingress', 'ls']);
    assert.match(table.stdout, /NAME\s+HOSTNAME\s+LISTEN/);
    assert.match(
      table.stdout,
      new RegExp(`web\\s+\\{instance\\}\\.cli\\.test\\s+127\\.0\\.0\\.1:${port}`),
    );
    const bad = await cli([
      'ingress',
      'create',
      'x',
      '--hostname',
      'x.test',
      '--instance',
      'nope',
      '--guest-port',
      '80',
    ]);
    assert.equal(bad.code, 4, 'not found exit code');
    assert.match(bad.stderr, /instance "nope" not found/);
    const rm = await cli(['ingress', 'rm', 'web', '--json']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual(JSON.parse(rm.stdout), { removed: ['web'] });
    assert.deepEqual(await client.listIngresses(), []);
  });

  test('the daemon DNS server: NXDOMAIN under the suffix, other names forwarded', async () => {
    const [at] = daemon.dnsAddresses();
    assert.ok(at && at.port > 0);
    const nx = parseResponse((await udpAsk(at, encodeQuery(1, 'nobody.vm', TYPE_A)))!);
    assert.equal(nx.header.rcode, RCODE.NXDOMAIN);
    const fwd = parseResponse((await udpAsk(at, encodeQuery(2, 'www.example.test', TYPE_A)))!);
    assert.equal(fwd.header.rcode, RCODE.NOERROR);
    assert.deepEqual([...fwd.answers[0]!.data], [192, 0, 2, 7]);
  });
});
