/**
 * The ingress reverse proxy: one Node HTTP listener per distinct host port, routing by the
 * Host header to a backend that an injected function resolves per request. Bodies stream
 * both ways (no buffering); WebSocket (any `Upgrade`) requests are passed through as a
 * raw byte tunnel once the backend connection is up.
 */
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { VesselError, errnoCode, errorMessage } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { matchHost, normalizeHost } from './hostname.js';

/** A route as the proxy needs it. */
export interface ProxyRoute {
  readonly name: string;
  readonly instance: string;
  readonly hostname: string;
  readonly guest_port: number;
}

export interface Backend {
  readonly host: string;
  readonly port: number;
}

/**
 * Where an instance's guest port is reachable from the daemon, or undefined when it is
 * not (no address, port not published). May throw a VesselError (unknown instance); its
 * message goes into the 502 body.
 */
export type ResolveBackend = (instance: string, guestPort: number) => Backend | undefined;

export interface IngressProxyOptions {
  /** The routes of the listener on `hostPort`, read per request (so changes apply at once). */
  readonly routes: (hostPort: number) => readonly ProxyRoute[];
  readonly resolveBackend: ResolveBackend;
  readonly logger: Logger;
  /** How long to wait for a backend connection. Default 10 s. */
  readonly connectTimeoutMs?: number;
}

/** Headers that describe one hop and are not forwarded (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function connectionTokens(value: string | string[] | undefined): Set<string> {
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  return new Set(
    text
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter(Boolean),
  );
}

/** Request or response headers minus hop-by-hop ones (raw pairs keep case and repeats). */
export function endToEndHeaders(raw: readonly string[]): [string, string][] {
  const tokens = new Set<string>();
  for (let i = 0; i < raw.length; i += 2)
    if (raw[i]!.toLowerCase() === 'connection')
      for (const t of connectionTokens(raw[i + 1])) tokens.add(t);
  const out: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(k) || tokens.has(k)) continue;
    out.push([raw[i]!, raw[i + 1] ?? '']);
  }
  return out;
}

function forwardedHeaders(req: http.IncomingMessage): [string, string][] {
  const prior = req.headers['x-forwarded-for'];
  const client = req.socket.remoteAddress ?? '';
  const chain = prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${client}` : client;
  return [
    ['X-Forwarded-For', chain],
    ['X-Forwarded-Host', req.headers.host ?? ''],
    ['X-Forwarded-Proto', 'http'],
  ];
}

/** The forwarding headers the proxy sets (a client's own values are extended, not trusted as-is). */
const FORWARDED = /^x-forwarded-(for|host|proto)$/i;

/** A routing failure: the status and the plain-text body the client gets. */
class RouteError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

interface Target {
  readonly route: ProxyRoute;
  readonly instance: string;
  readonly backend: Backend;
}

export class IngressProxy {
  private readonly options: IngressProxyOptions;
  private readonly log: Logger;
  private readonly servers = new Map<number, http.Server>();
  private readonly agent = new http.Agent({ keepAlive: true, maxFreeSockets: 16 });

  constructor(options: IngressProxyOptions) {
    this.options = options;
    this.log = options.logger;
  }

  /** Host ports with a listener. */
  ports(): number[] {
    return [...this.servers.keys()];
  }

  /** The bound address of the listener for `hostPort` (port 0 in tests resolves here). */
  address(hostPort: number): net.AddressInfo | undefined {
    const a = this.servers.get(hostPort)?.address();
    return a && typeof a !== 'string' ? a : undefined;
  }

  has(hostPort: number): boolean {
    return this.servers.has(hostPort);
  }

  /**
   * Start the listener for `hostPort` on `host`. `routeKey` is the port routes are looked
   * up by (tests bind port 0 for a route key). A taken port is `port_in_use`.
   */
  async listen(host: string, hostPort: number, bindPort = hostPort): Promise<void> {
    if (this.servers.has(hostPort)) return;
    const server = http.createServer({ requestTimeout: 0 }, (req, res) =>
      this.onRequest(hostPort, req, res),
    );
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(hostPort, req, socket, head),
    );
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
    this.servers.set(hostPort, server);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port: bindPort, exclusive: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      this.servers.delete(hostPort);
      const where = `${host}:${bindPort}`;
      const opts = { cause: err, details: { host, host_port: bindPort } };
      switch (errnoCode(err) ?? '') {
        case 'EADDRINUSE':
          throw new VesselError('port_in_use', `ingress port ${where} is already in use`, opts);
        case 'EADDRNOTAVAIL':
          throw new VesselError(
            'invalid_config',
            `ingress listen address ${host} is not an address of this host`,
            opts,
          );
        case 'EACCES':
          throw new VesselError(
            'invalid_argument',
            `ingress port ${where} needs privileges the daemon does not have`,
            opts,
          );
        default:
          throw new VesselError(
            'internal',
            `ingress cannot listen on ${where}: ${errorMessage(err)}`,
            opts,
          );
      }
    }
    server.on('error', (err) => this.log.warn({ err, hostPort }, 'ingress listener error'));
    this.log.info({ host, port: bindPort }, 'ingress listening');
  }

  /** Stop the listener for `hostPort` and drop its connections. */
  async unlisten(hostPort: number): Promise<void> {
    const server = this.servers.get(hostPort);
    if (!server) return;
    this.servers.delete(hostPort);
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  async close(): Promise<void> {
    await Promise.all(this.ports().map((p) => this.unlisten(p)));
    this.agent.destroy();
  }

  private target(hostPort: number, req: http.IncomingMessage): Target {
    const host = normalizeHost(req.headers.host);
    if (host === undefined) throw new RouteError(400, 'the request has no Host header');
    const m = matchHost(this.options.routes(hostPort), host);
    if (!m) throw new RouteError(404, `no ingress routes host "${host}" on port ${hostPort}`);
    const instance = m.label ?? m.route.instance;
    let backend: Backend | undefined;
    try {
      backend = this.options.resolveBackend(instance, m.route.guest_port);
    } catch (err) {
      throw new RouteError(502, `ingress "${m.route.name}": ${errorMessage(err)}`);
    }
    if (!backend) {
      throw new RouteError(
        502,
        `ingress "${m.route.name}": instance "${instance}" is not reachable on guest port ${m.route.guest_port} ` +
          '(no bridge address, and no published host port maps that guest port)',
      );
    }
    return { route: m.route, instance, backend };
  }

  private onRequest(hostPort: number, req: http.IncomingMessage, res: http.ServerResponse): void {
    let t: Target;
    try {
      t = this.target(hostPort, req);
    } catch (err) {
      req.resume();
      return this.fail(res, err);
    }
    const headers = endToEndHeaders(req.rawHeaders)
      .filter(([k]) => !FORWARDED.test(k))
      .concat(forwardedHeaders(req));
    const upstream = http.request({
      host: t.backend.host,
      port: t.backend.port,
      method: req.method,
      path: req.url,
      headers: headers.flat(),
      agent: this.agent,
    });
    // Only the connect is bounded: a response may idle as long as the backend likes (long
    // polling, event streams). A pooled keep-alive socket is connected already.
    upstream.on('socket', (sock) => {
      if (!sock.connecting) return;
      const timer = setTimeout(
        () => upstream.destroy(new Error('connection timed out')),
        this.options.connectTimeoutMs ?? 10_000,
      );
      sock.once('connect', () => clearTimeout(timer));
      sock.once('close', () => clearTimeout(timer));
    });
    upstream.on('response', (ures) => {
      res.writeHead(
        ures.statusCode ?? 502,
        ures.statusMessage,
        endToEndHeaders(ures.rawHeaders).flat(),
      );
      ures.pipe(res);
      ures.on('error', () => res.destroy());
    });
    upstream.on('error', (err) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      this.fail(
        res,
        new RouteError(
          502,
          `ingress "${t.route.name}": backend ${t.backend.host}:${t.backend.port} of instance "${t.instance}" ` +
            `failed: ${errnoCode(err) ?? errorMessage(err)}`,
        ),
      );
    });
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  private fail(res: http.ServerResponse, err: unknown): void {
    const status = err instanceof RouteError ? err.status : 500;
    const message = err instanceof RouteError ? err.message : 'ingress internal error';
    if (status >= 500) this.log.debug({ err }, 'ingress request failed');
    const body = `${message}\n`;
    res.writeHead(status, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }

  private onUpgrade(
    hostPort: number,
    req: http.IncomingMessage,
    socket: Duplex,
    head: Buffer,
  ): void {
    socket.on('error', () => socket.destroy());
    const refuse = (status: number, message: string): void => {
      const body = `${message}\n`;
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    let t: Target;
    try {
      t = this.target(hostPort, req);
    } catch (err) {
      return refuse(err instanceof RouteError ? err.status : 500, errorMessage(err));
    }
    const backend = net.connect({ host: t.backend.host, port: t.backend.port });
    backend.setTimeout(this.options.connectTimeoutMs ?? 10_000, () =>
      backend.destroy(new Error('connection timed out')),
    );
    let connected = false;
    backend.once('connect', () => {
      connected = true;
      backend.setTimeout(0);
      // The request head as received (Upgrade and Connection included: the tunnel is one hop).
      const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) {
        if (FORWARDED.test(req.rawHeaders[i]!)) continue;
        lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      }
      for (const [k, v] of forwardedHeaders(req)) lines.push(`${k}: ${v}`);
      backend.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length > 0) backend.write(head);
      backend.pipe(socket);
      socket.pipe(backend);
    });
    backend.on('error', (err) => {
      if (!connected && socket.writable) {
        refuse(
          502,
          `ingress "${t.route.name}": backend ${t.backend.host}:${t.backend.port} of instance "${t.instance}" failed: ${errnoCode(err) ?? errorMessage(err)}`,
        );
      } else socket.destroy();
    });
    backend.on('close', () => {
      if (connected) socket.destroy();
    });
    socket.on('close', () => backend.destroy());
  }
}
