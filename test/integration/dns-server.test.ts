// The DNS server over real UDP and TCP sockets on 127.0.0.1 (port 0): answers for the
// suffix, forwarding to a second (test) DNS server on loopback, timeouts, garbage.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { silentLogger } from '../../src/core/logger.js';
import { DnsServer, type DnsEndpoint } from '../../src/network/dns/index.js';
import {
  RCODE,
  TYPE_A,
  TYPE_AAAA,
  encodeQuery,
  parseResponse,
} from '../../src/network/dns/message.js';
import { startUpstream, tcpAsk, udpAsk } from '../helpers/dns.js';

describe('DNS server', () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let server: DnsServer;
  let at: DnsEndpoint;
  const hosts = new Map([['web', '10.88.0.2']]);

  before(async () => {
    upstream = await startUpstream();
    server = new DnsServer({
      suffix: 'vm',
      lookup: (n) => hosts.get(n),
      upstream: upstream.at,
      timeoutMs: 300,
      logger: silentLogger(),
    });
    at = await server.listen({ host: '127.0.0.1', port: 0 });
  });

  after(async () => {
    await server?.close();
    await upstream?.close();
  });

  test('A record for a known instance, over UDP and TCP, names case-insensitive', async () => {
    for (const ask of [udpAsk, tcpAsk]) {
      const r = parseResponse((await ask(at, encodeQuery(11, 'Web.VM', TYPE_A)))!);
      assert.equal(r.header.id, 11);
      assert.equal(r.header.rcode, RCODE.NOERROR);
      assert.deepEqual([...r.answers[0]!.data], [10, 88, 0, 2]);
    }
  });

  test('the lookup is live: a new instance resolves at once', async () => {
    hosts.set('late', '10.88.0.44');
    const r = parseResponse((await udpAsk(at, encodeQuery(12, 'late.vm', TYPE_A)))!);
    assert.deepEqual([...r.answers[0]!.data], [10, 88, 0, 44]);
  });

  test('NXDOMAIN for an unknown name under the suffix; AAAA for a known one is NOERROR and empty', async () => {
    const nx = parseResponse((await udpAsk(at, encodeQuery(13, 'ghost.vm', TYPE_A)))!);
    assert.equal(nx.header.rcode, RCODE.NXDOMAIN);
    const aaaa = parseResponse((await udpAsk(at, encodeQuery(14, 'web.vm', TYPE_AAAA)))!);
    assert.equal(aaaa.header.rcode, RCODE.NOERROR);
    assert.equal(aaaa.answers.length, 0);
    assert.ok(!upstream.seen.includes('ghost.vm'), 'names under the suffix are never forwarded');
  });

  test('other names are forwarded to the upstream and the answer relayed (UDP and TCP)', async () => {
    for (const [i, ask] of [udpAsk, tcpAsk].entries()) {
      const r = parseResponse((await ask(at, encodeQuery(20 + i, 'www.example.test', TYPE_A)))!);
      assert.equal(r.header.id, 20 + i);
      assert.equal(r.header.rcode, RCODE.NOERROR);
      assert.deepEqual([...r.answers[0]!.data], [192, 0, 2, 7]);
    }
    assert.equal(upstream.seen.filter((n) => n === 'www.example.test').length, 2);
  });

  test('an upstream that does not answer in time gives SERVFAIL', async () => {
    const t0 = Date.now();
    const r = parseResponse((await udpAsk(at, encodeQuery(30, 'slow.example.test', TYPE_A)))!);
    assert.equal(r.header.rcode, RCODE.SERVFAIL);
    assert.equal(r.header.id, 30);
    assert.ok(Date.now() - t0 >= 250, 'after the timeout, not before');
  });

  test('garbage is ignored or FORMERR, and the server keeps answering', async () => {
    assert.equal(await udpAsk(at, Buffer.from([1, 2, 3]), 300), undefined);
    const broken = encodeQuery(40, 'web.vm', TYPE_A).subarray(0, 15);
    const r = parseResponse((await udpAsk(at, broken))!);
    assert.equal(r.header.rcode, RCODE.FORMERR);
    assert.equal(r.header.id, 40);
    const ok = parseResponse((await udpAsk(at, encodeQuery(41, 'web.vm', TYPE_A)))!);
    assert.equal(ok.header.rcode, RCODE.NOERROR);
  });

  test('without an upstream, other names are SERVFAIL; a taken port is port_in_use', async () => {
    const lone = new DnsServer({
      suffix: 'vm',
      lookup: () => undefined,
      upstream: undefined,
      timeoutMs: 300,
      logger: silentLogger(),
    });
    try {
      const a = await lone.listen({ host: '127.0.0.1', port: 0 });
      const r = parseResponse((await udpAsk(a, encodeQuery(50, 'example.test', TYPE_A)))!);
      assert.equal(r.header.rcode, RCODE.SERVFAIL);
      await assert.rejects(
        lone.listen(at),
        (err: Error & { code?: string }) => err.code === 'port_in_use',
      );
    } finally {
      await lone.close();
    }
  });
});
