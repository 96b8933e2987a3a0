/** A DNS stub client (UDP and TCP) and a stand-in upstream resolver, both on loopback. */
import dgram from 'node:dgram';
import net from 'node:net';
import type { DnsEndpoint } from '../../src/network/dns/index.js';
import { RCODE, TYPE_A, encodeResponse, parseQuery } from '../../src/network/dns/message.js';

/** Send one datagram and wait for one reply (undefined after `ms`). */
export function udpAsk(to: DnsEndpoint, packet: Buffer, ms = 3000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, ms);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m);
    });
    s.send(packet, to.port, to.host);
  });
}

export function tcpAsk(to: DnsEndpoint, packet: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(to.port, to.host);
    let buf = Buffer.alloc(0);
    s.on('connect', () => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(packet.length);
      s.write(Buffer.concat([len, packet]));
    });
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        s.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    s.on('error', reject);
  });
}

/** A stand-in upstream resolver: answers `*.example.test` with 192.0.2.7, ignores `slow.*`. */
export async function startUpstream(): Promise<{
  at: DnsEndpoint;
  seen: string[];
  close(): Promise<void>;
}> {
  const seen: string[] = [];
  const answer = (msg: Buffer): Buffer | undefined => {
    const q = parseQuery(msg);
    seen.push(q.question.name);
    if (q.question.name.startsWith('slow.')) return undefined;
    return encodeResponse({
      id: q.header.id,
      rd: q.header.rd,
      aa: true,
      rcode: RCODE.NOERROR,
      question: q.questionBytes,
      answers: [{ type: TYPE_A, name: undefined, ttl: 60, address: '192.0.2.7' }],
    });
  };
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => {
    const a = answer(m);
    if (a) udp.send(a, r.port, r.address);
  });
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  const port = udp.address().port;
  const tcp = net.createServer((sock) => {
    sock.on('data', (d: Buffer) => {
      const a = answer(d.subarray(2));
      if (!a) return;
      const len = Buffer.alloc(2);
      len.writeUInt16BE(a.length);
      sock.write(Buffer.concat([len, a]));
    });
  });
  await new Promise<void>((resolve) => tcp.listen(port, '127.0.0.1', resolve));
  return {
    at: { host: '127.0.0.1', port },
    seen,
    close: async () => {
      udp.close();
      await new Promise((r) => tcp.close(r));
    },
  };
}
