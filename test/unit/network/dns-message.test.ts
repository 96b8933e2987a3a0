// The DNS wire format and the answer logic: pure functions, no sockets.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { decide, dnsAddressOf } from '../../../src/network/dns/answer.js';
import {
  DnsFormatError,
  RCODE,
  TYPE_A,
  TYPE_AAAA,
  encodeName,
  encodeQuery,
  parseQuery,
  parseResponse,
  readName,
} from '../../../src/network/dns/message.js';
import { firstNameserver, parseEndpoint } from '../../../src/network/dns/upstream.js';
import { normalizeSuffix } from '../../../src/network/dns/server.js';

const HOSTS: Record<string, string> = { web: '10.88.0.2', 'db.primary': '10.88.0.3' };
const opts = { suffix: 'vm', ttl: 5, lookup: (n: string) => HOSTS[n] };

function reply(packet: Buffer) {
  const d = decide(packet, opts);
  assert.equal(d.kind, 'reply', `expected a reply, got ${d.kind}`);
  return parseResponse(d.kind === 'reply' ? d.bytes : Buffer.alloc(0));
}

describe('DNS message', () => {
  test('a query round-trips through encode and parse, case kept', () => {
    const q = parseQuery(encodeQuery(0xbeef, 'Web.VM', TYPE_A));
    assert.equal(q.header.id, 0xbeef);
    assert.equal(q.header.rd, true);
    assert.deepEqual(q.question, { name: 'Web.VM', type: TYPE_A, class: 1 });
  });

  test('compressed names are followed; forward and self pointers are rejected', () => {
    // "example.com" at 12, then "www" + pointer to 12 at 25.
    const buf = Buffer.concat([
      Buffer.alloc(12),
      encodeName('example.com'),
      Buffer.from([3, 0x77, 0x77, 0x77, 0xc0, 12]),
    ]);
    assert.deepEqual(readName(buf, 25), { name: 'www.example.com', end: 31, compressed: true });
    const self = Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0, 12])]);
    assert.throws(() => readName(self, 12), DnsFormatError);
    const fwd = Buffer.concat([Buffer.alloc(12), Buffer.from([0xc0, 20]), Buffer.alloc(10)]);
    assert.throws(() => readName(fwd, 12), DnsFormatError);
  });

  test('labels over 63 bytes and names over 255 bytes are refused', () => {
    assert.throws(() => encodeName('a'.repeat(64)), RangeError);
    const long = Buffer.concat([
      Buffer.alloc(12),
      ...Array.from({ length: 5 }, () => Buffer.from([60, ...Buffer.alloc(60, 97)])),
      Buffer.from([0, 0, 1, 0, 1]),
    ]);
    long.writeUInt16BE(1, 4);
    assert.throws(() => parseQuery(long), /longer than 255/);
  });

  test('fuzz: random bytes and mutated queries never crash the parser or the decision', () => {
    const base = encodeQuery(7, 'web.vm', TYPE_A);
    for (let i = 0; i < 20_000; i++) {
      let packet: Buffer;
      if (i % 2 === 0) {
        packet = randomBytes(i % 600);
      } else {
        packet = Buffer.from(base);
        const flips = 1 + (i % 5);
        for (let f = 0; f < flips; f++)
          packet[(i * 7 + f * 13) % packet.length] = randomBytes(1)[0]!;
        if (i % 3 === 0) packet = packet.subarray(0, i % packet.length);
      }
      try {
        parseQuery(packet);
      } catch (err) {
        assert.ok(err instanceof DnsFormatError, `unexpected ${String(err)}`);
      }
      const d = decide(packet, opts);
      assert.ok(['reply', 'forward', 'drop'].includes(d.kind));
      if (d.kind === 'reply') parseResponse(d.bytes);
    }
  });
});

describe('DNS answers', () => {
  test('A for a known instance, case-insensitive, question echoed as sent', () => {
    const r = reply(encodeQuery(1, 'WEB.Vm.', TYPE_A));
    assert.equal(r.header.rcode, RCODE.NOERROR);
    assert.equal(r.header.id, 1);
    assert.equal(r.questions[0]?.name, 'WEB.Vm');
    assert.equal(r.answers.length, 1);
    assert.deepEqual([...r.answers[0]!.data], [10, 88, 0, 2]);
    assert.equal(r.answers[0]!.ttl, 5);
  });

  test('instance names with dots resolve; unknown names are NXDOMAIN with an SOA', () => {
    assert.deepEqual(
      [...reply(encodeQuery(2, 'db.primary.vm', TYPE_A)).answers[0]!.data],
      [10, 88, 0, 3],
    );
    const r = reply(encodeQuery(3, 'nope.vm', TYPE_A));
    assert.equal(r.header.rcode, RCODE.NXDOMAIN);
    assert.equal(r.answers.length, 0);
    assert.equal(r.authority[0]?.type, 6);
  });

  test('AAAA for a known name is NOERROR with no data', () => {
    const r = reply(encodeQuery(4, 'web.vm', TYPE_AAAA));
    assert.equal(r.header.rcode, RCODE.NOERROR);
    assert.equal(r.answers.length, 0);
  });

  test('other names are forwarded; a custom suffix is honoured', () => {
    assert.deepEqual(decide(encodeQuery(5, 'example.com', TYPE_A), opts), {
      kind: 'forward',
      id: 5,
    });
    assert.deepEqual(decide(encodeQuery(6, 'webvm', TYPE_A), opts), { kind: 'forward', id: 6 });
    const custom = { ...opts, suffix: 'vessel.internal' };
    assert.equal(decide(encodeQuery(7, 'web.vm', TYPE_A), custom).kind, 'forward');
    const d = decide(encodeQuery(8, 'web.vessel.internal', TYPE_A), custom);
    assert.ok(d.kind === 'reply');
    assert.deepEqual([...parseResponse(d.bytes).answers[0]!.data], [10, 88, 0, 2]);
  });

  test('short packets and responses are dropped; bad questions FORMERR; other opcodes NOTIMP', () => {
    assert.equal(decide(Buffer.alloc(5), opts).kind, 'drop');
    const resp = encodeQuery(9, 'web.vm', TYPE_A);
    resp.writeUInt8(resp[2]! | 0x80, 2);
    assert.equal(decide(resp, opts).kind, 'drop');
    const two = encodeQuery(10, 'web.vm', TYPE_A);
    two.writeUInt16BE(2, 4);
    assert.equal(reply(two).header.rcode, RCODE.FORMERR);
    assert.equal(
      reply(encodeQuery(11, 'web.vm', TYPE_A).subarray(0, 16)).header.rcode,
      RCODE.FORMERR,
    );
    const status = encodeQuery(12, 'web.vm', TYPE_A);
    status[2] = (status[2]! & 0x87) | (2 << 3);
    assert.equal(reply(status).header.rcode, RCODE.NOTIMP);
  });

  test('only routed addresses are published: user-mode and no-network instances have none', () => {
    assert.equal(dnsAddressOf({ mode: 'bridge', ip: '10.88.0.9' }), '10.88.0.9');
    assert.equal(dnsAddressOf({ mode: 'user', ip: '10.0.2.15' }), undefined);
    assert.equal(dnsAddressOf({ mode: 'none', ip: null }), undefined);
  });
});

describe('DNS configuration helpers', () => {
  test('the first usable nameserver of resolv.conf', () => {
    assert.equal(
      firstNameserver(
        '# c\nsearch x\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver 1.1.1.1\n',
      ),
      '10.0.0.2',
    );
    assert.equal(firstNameserver('search x\n'), undefined);
  });

  test('endpoints with and without ports; bad ones are invalid_config', () => {
    assert.deepEqual(parseEndpoint('127.0.0.1'), { host: '127.0.0.1', port: 53 });
    assert.deepEqual(parseEndpoint('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353 });
    assert.deepEqual(parseEndpoint('[::1]:54'), { host: '::1', port: 54 });
    assert.deepEqual(parseEndpoint('::1'), { host: '::1', port: 53 });
    assert.throws(() => parseEndpoint('dns.example:53'), /not an IP address/);
    assert.throws(() => parseEndpoint('1.2.3.4:99999'), /not an IP address/);
  });

  test('suffixes are normalised and validated', () => {
    assert.equal(normalizeSuffix('.VM.'), 'vm');
    assert.throws(() => normalizeSuffix('bad suffix'), /not a domain name/);
  });
});
