/**
 * A userspace TCP/UDP proxy for one published port: listens on host_ip:host_port in the
 * daemon's namespace and relays to guest_ip:guest_port over the bridge. TCP splices two
 * sockets (half-close passed on); UDP keeps one upstream socket per client address,
 * closed after an idle timeout.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from '../core/logger.js';

export interface ProxySpec {
  readonly protocol: 'tcp' | 'udp';
  readonly hostIp: string;
  readonly hostPort: number;
  readonly targetIp: string;
  readonly targetPort: number;
}

export interface PortProxy {
  readonly spec: ProxySpec;
  /** Live TCP connections or UDP client flows. */
  connections(): number;
  close(): Promise<void>;
}

/** Bind and start relaying; rejects with the bind error (`EADDRINUSE`, ...) untouched. */
export function openProxy(
  spec: ProxySpec,
  options: { log?: Logger; udpIdleMs?: number } = {},
): Promise<PortProxy> {
  return spec.protocol === 'tcp' ? openTcp(spec, options.log) : openUdp(spec, options);
}

function openTcp(spec: ProxySpec, log?: Logger): Promise<PortProxy> {
  const live = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    const upstream = net.connect({
      host: spec.targetIp,
      port: spec.targetPort,
      allowHalfOpen: true,
    });
    live.add(client);
    const done = (): void => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
    };
    client.on('error', done).on('close', done);
    upstream.on('error', (err) => {
      log?.debug({ err, port: spec.hostPort }, 'proxy upstream failed');
      done();
    });
    upstream.on('close', done);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: spec.hostIp, port: spec.hostPort, exclusive: true }, () => {
      server.off('error', reject);
      server.on('error', (err) => log?.warn({ err, port: spec.hostPort }, 'proxy listener'));
      resolve({
        spec,
        connections: () => live.size,
        close: () =>
          new Promise<void>((done) => {
            for (const s of live) s.destroy();
            server.close(() => done());
          }),
      });
    });
  });
}

function openUdp(spec: ProxySpec, o: { log?: Logger; udpIdleMs?: number }): Promise<PortProxy> {
  const idleMs = o.udpIdleMs ?? 60_000;
  const server = dgram.createSocket('udp4');
  const flows = new Map<string, { sock: dgram.Socket; timer: NodeJS.Timeout }>();
  const drop = (key: string): void => {
    const f = flows.get(key);
    if (!f) return;
    clearTimeout(f.timer);
    f.sock.close();
    flows.delete(key);
  };
  server.on('message', (msg, from) => {
    const key = `${from.address}:${from.port}`;
    let f = flows.get(key);
    if (!f) {
      const sock = dgram.createSocket('udp4');
      sock.on('message', (reply) => {
        server.send(reply, from.port, from.address);
        const cur = flows.get(key);
        if (cur) cur.timer.refresh();
      });
      sock.on('error', (err) => {
        o.log?.debug({ err, port: spec.hostPort }, 'udp proxy upstream failed');
        drop(key);
      });
      f = { sock, timer: setTimeout(() => drop(key), idleMs) };
      flows.set(key, f);
    }
    f.timer.refresh();
    f.sock.send(msg, spec.targetPort, spec.targetIp);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.bind({ address: spec.hostIp, port: spec.hostPort, exclusive: true }, () => {
      server.off('error', reject);
      server.on('error', (err) => o.log?.warn({ err, port: spec.hostPort }, 'udp proxy'));
      resolve({
        spec,
        connections: () => flows.size,
        close: () =>
          new Promise<void>((done) => {
            for (const k of [...flows.keys()]) drop(k);
            server.close(() => done());
          }),
      });
    });
  });
}
