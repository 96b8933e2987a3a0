/**
 * The daemon's DNS server: UDP and TCP on each listen address, names under the suffix
 * answered from the instances, everything else forwarded to one upstream resolver and the
 * answer relayed byte for byte (a timeout or a failure is SERVFAIL).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from '../../core/logger.js';
import { VesselError, errnoCode, errorMessage } from '../../core/errors.js';
import { decide, servfail, type DnsLookup } from './answer.js';
import { parseHeader } from './message.js';

export interface DnsEndpoint {
  readonly host: string;
  readonly port: number;
}

export interface DnsServerOptions {
  /** Zone answered from the instances (`vm` serves `<name>.vm`). */
  readonly suffix: string;
  readonly lookup: DnsLookup;
  /** Where other names go; undefined: they get SERVFAIL. */
  readonly upstream: DnsEndpoint | undefined;
  /** How long to wait for the upstream before answering SERVFAIL. */
  readonly timeoutMs: number;
  /** TTL of answers under the suffix (seconds). Default 5. */
  readonly ttl?: number;
  /** Queries forwarded at once; more are answered SERVFAIL. Default 256. */
  readonly maxInFlight?: number;
  readonly logger: Logger;
}

interface Listener {
  readonly udp: dgram.Socket;
  readonly tcp: net.Server;
  readonly address: DnsEndpoint;
}

const TCP_IDLE_MS = 10_000;

/** Validate a suffix like `vm` or `vessel.internal`: DNS labels, no dots at the ends. */
export function normalizeSuffix(suffix: string): string {
  const s = suffix.toLowerCase().replace(/^\.+|\.+$/g, '');
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(s))
    throw new VesselError('invalid_config', `DNS suffix "${suffix}" is not a domain name`);
  return s;
}

export class DnsServer {
  private readonly options: DnsServerOptions;
  private readonly suffix: string;
  private readonly log: Logger;
  private readonly listeners: Listener[] = [];
  private readonly sockets = new Set<net.Socket>();
  /** Cancels of the forwards under way (close() answers them SERVFAIL at once). */
  private readonly pending = new Set<() => void>();
  private inFlight = 0;
  private closed = false;

  constructor(options: DnsServerOptions) {
    this.options = options;
    this.suffix = normalizeSuffix(options.suffix);
    this.log = options.logger;
  }

  /** The addresses served (after port 0 was resolved). */
  addresses(): DnsEndpoint[] {
    return this.listeners.map((l) => l.address);
  }

  /**
   * Serve UDP and TCP on `host:port`. Port 0 picks a port free for both protocols.
   * A taken port is a `port_in_use` error naming the address.
   */
  async listen(endpoint: DnsEndpoint): Promise<DnsEndpoint> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.listenOnce(endpoint);
      } catch (err) {
        // Port 0 gave UDP a port that TCP cannot have: try another.
        if (endpoint.port === 0 && errnoCode(err) === 'EADDRINUSE' && attempt < 5) continue;
        const code = errnoCode(err) === 'EADDRINUSE' ? 'port_in_use' : 'invalid_config';
        throw new VesselError(
          code,
          `DNS server cannot listen on ${endpoint.host}:${endpoint.port}: ${errorMessage(err)}`,
          { cause: err, details: { host: endpoint.host, port: endpoint.port } },
        );
      }
    }
  }

  private async listenOnce(endpoint: DnsEndpoint): Promise<DnsEndpoint> {
    const type = net.isIPv6(endpoint.host) ? 'udp6' : 'udp4';
    const udp = dgram.createSocket({ type });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind({ address: endpoint.host, port: endpoint.port, exclusive: true }, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    const port = udp.address().port;
    const tcp = net.createServer((socket) => this.onTcp(socket));
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen({ host: endpoint.host, port, exclusive: true }, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      udp.close();
      throw err;
    }
    udp.on('message', (msg, rinfo) => this.onUdp(udp, msg, rinfo));
    udp.on('error', (err) => this.log.warn({ err }, 'DNS UDP socket error'));
    tcp.on('error', (err) => this.log.warn({ err }, 'DNS TCP listener error'));
    const address = { host: endpoint.host, port };
    this.listeners.push({ udp, tcp, address });
    this.log.info({ address, suffix: this.suffix }, 'DNS server listening');
    return address;
  }

  private onUdp(udp: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    void this.handle(msg, 'udp').then((reply) => {
      if (reply && !this.closed) udp.send(reply, rinfo.port, rinfo.address);
    });
  }

  private onTcp(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        void this.handle(msg, 'tcp').then((reply) => {
          if (!reply || socket.destroyed) return;
          socket.write(withLength(reply));
        });
      }
    });
  }

  /** The reply to one query, or undefined to stay silent. Never rejects. */
  private async handle(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    try {
      const d = decide(msg, {
        suffix: this.suffix,
        lookup: this.options.lookup,
        ttl: this.options.ttl ?? 5,
      });
      switch (d.kind) {
        case 'drop':
          this.log.debug({ reason: d.reason }, 'DNS packet ignored');
          return undefined;
        case 'reply':
          return d.bytes;
        case 'forward':
          return await this.forward(msg, transport);
      }
    } catch (err) {
      this.log.warn({ err }, 'DNS query failed');
      return servfail(msg);
    }
  }

  private async forward(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    const up = this.options.upstream;
    if (!up || this.isSelf(up)) return servfail(msg);
    if (this.inFlight >= (this.options.maxInFlight ?? 256)) return servfail(msg);
    this.inFlight++;
    try {
      const reply =
        transport === 'udp' ? await this.forwardUdp(msg, up) : await this.forwardTcp(msg, up);
      return reply ?? servfail(msg);
    } catch (err) {
      this.log.debug({ err, upstream: up }, 'DNS forward failed');
      return servfail(msg);
    } finally {
      this.inFlight--;
    }
  }

  private isSelf(up: DnsEndpoint): boolean {
    return this.listeners.some(
      (l) =>
        l.address.port === up.port && (l.address.host === up.host || l.address.host === '0.0.0.0'),
    );
  }

  /** One fresh socket (random source port) per forwarded query; the reply must match id and source. */
  private forwardUdp(msg: Buffer, up: DnsEndpoint): Promise<Buffer | undefined> {
    const id = msg.readUInt16BE(0);
    const sock = dgram.createSocket(net.isIPv6(up.host) ? 'udp6' : 'udp4');
    return this.exchange(
      () => sock.close(),
      (done) => {
        sock.on('error', () => done(undefined));
        sock.on('message', (reply, rinfo) => {
          const h = parseHeader(reply);
          if (!h?.qr || h.id !== id || rinfo.port !== up.port) return;
          done(reply);
        });
        sock.send(msg, up.port, up.host);
      },
    );
  }

  private forwardTcp(msg: Buffer, up: DnsEndpoint): Promise<Buffer | undefined> {
    const sock = net.connect({ host: up.host, port: up.port });
    return this.exchange(
      () => sock.destroy(),
      (done) => {
        let buf = Buffer.alloc(0);
        sock.on('error', () => done(undefined));
        sock.on('close', () => done(undefined));
        sock.on('connect', () => sock.write(withLength(msg)));
        sock.on('data', (chunk: Buffer) => {
          buf = Buffer.concat([buf, chunk]);
          if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0))
            done(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        });
      },
    );
  }

  /** Run one upstream exchange: settles once, on a reply, an error, the timeout or close(). */
  private exchange(
    release: () => void,
    start: (done: (reply: Buffer | undefined) => void) => void,
  ): Promise<Buffer | undefined> {
    return new Promise<Buffer | undefined>((resolve) => {
      let settled = false;
      const done = (reply: Buffer | undefined): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.pending.delete(cancel);
        try {
          release();
        } catch {
          // already closed
        }
        resolve(reply);
      };
      const cancel = (): void => done(undefined);
      const timer = setTimeout(cancel, this.options.timeoutMs);
      this.pending.add(cancel);
      start(done);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const cancel of [...this.pending]) cancel();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await Promise.all(
      this.listeners.splice(0).map(
        (l) =>
          new Promise<void>((resolve) => {
            l.udp.close();
            l.tcp.close(() => resolve());
          }),
      ),
    );
  }
}

/** A DNS message framed for TCP (RFC 1035 §4.2.2): a two-byte length first. */
function withLength(msg: Buffer): Buffer {
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(msg.length);
  return Buffer.concat([prefix, msg]);
}
