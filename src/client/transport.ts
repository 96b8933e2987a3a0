/**
 * The client's HTTP/1.1 transport on `node:http`: the daemon's unix socket, or a TCP base URL
 * (`https:` loads `node:https` on first use). It is all a CLI command loads to talk to the
 * daemon, so it stays small: no HTTP library, keep-alive through one `http.Agent`.
 */
import http from 'node:http';
import type { Readable } from 'node:stream';
import { VesselError, errnoCode } from '../core/errors.js';

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** Methods that may be sent again when a kept-alive socket turns out closed (never a body stream). */
const IDEMPOTENT: ReadonlySet<HttpMethod> = new Set(['GET', 'HEAD', 'PUT', 'DELETE']);

export interface HttpRequest {
  readonly method: HttpMethod;
  /** Path and query, starting with `/`. */
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  /** A string is sent with its length; a stream is sent chunked, as it is read. */
  readonly body?: string | Readable;
  /** Fail when the daemon sends nothing for this long, before or within the body (0: never). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
}

/** The response body: the byte stream itself, plus readers for whole bodies. */
export interface ResponseBody extends Readable {
  json(): Promise<unknown>;
  text(): Promise<string>;
  /** Read and discard the rest, so the socket can be used again. */
  dump(): Promise<void>;
}

export interface HttpResponse {
  readonly statusCode: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: ResponseBody;
}

/** Where the daemon listens: its unix socket, or `http(s)://host:port[/prefix]`. */
export interface TransportTarget {
  readonly socketPath?: string;
  readonly baseUrl?: string;
}

interface Endpoint {
  readonly socketPath?: string;
  readonly hostname?: string;
  readonly port?: number;
  readonly secure: boolean;
  readonly prefix: string;
}

/**
 * Connection failures (refused, missing socket, reset before an answer, silence past the
 * timeout) reject with `VesselError('daemon_unreachable')` naming the daemon's address; an
 * abort rejects with the signal's reason; an error of the request body stream is passed on.
 */
export class HttpTransport {
  /** The daemon's address, for messages. */
  readonly where: string;
  private readonly endpoint: Endpoint;
  private client: Promise<{ request: typeof http.request; agent: http.Agent }> | undefined;

  constructor(target: TransportTarget) {
    if (target.baseUrl) {
      let url: URL;
      try {
        url = new URL(target.baseUrl);
      } catch (err) {
        throw new VesselError('invalid_argument', `"${target.baseUrl}" is not a URL`, {
          cause: err,
        });
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') {
        throw new VesselError('invalid_argument', `"${target.baseUrl}" is not an http(s) URL`);
      }
      const secure = url.protocol === 'https:';
      this.endpoint = {
        hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: url.port ? Number(url.port) : secure ? 443 : 80,
        secure,
        prefix: url.pathname.replace(/\/+$/, ''),
      };
      this.where = `${url.origin}${this.endpoint.prefix}`;
    } else if (target.socketPath) {
      this.endpoint = { socketPath: target.socketPath, secure: false, prefix: '' };
      this.where = target.socketPath;
    } else {
      throw new VesselError('invalid_argument', 'client needs a socketPath or a baseUrl');
    }
  }

  /** Resolves once the status line and headers are in; the body is left to the caller. */
  async request(req: HttpRequest): Promise<HttpResponse> {
    const client = await (this.client ??= this.load());
    return this.attempt(client, req, true);
  }

  /** Close kept-alive sockets; requests in flight are cut. */
  async close(): Promise<void> {
    if (this.client) (await this.client).agent.destroy();
  }

  private async load(): Promise<{ request: typeof http.request; agent: http.Agent }> {
    const mod = this.endpoint.secure ? (await import('node:https')).default : http;
    return { request: mod.request, agent: new mod.Agent({ keepAlive: true }) };
  }

  private attempt(
    client: { request: typeof http.request; agent: http.Agent },
    req: HttpRequest,
    mayRetry: boolean,
  ): Promise<HttpResponse> {
    return new Promise<HttpResponse>((resolve, reject) => {
      const { signal, body } = req;
      if (signal?.aborted) return reject(signal.reason as Error);
      const headers: Record<string, string> = { ...req.headers };
      if (typeof body === 'string') headers['content-length'] = String(Buffer.byteLength(body));
      // An empty POST would otherwise go out chunked.
      else if (body === undefined && req.method !== 'GET') headers['content-length'] = '0';
      const e = this.endpoint;
      const cr = client.request({
        agent: client.agent,
        method: req.method,
        path: `${e.prefix}${req.path}`,
        headers,
        ...(e.socketPath === undefined
          ? { hostname: e.hostname, port: e.port }
          : { socketPath: e.socketPath }),
        // No TLS server name to work out for plain HTTP: the agent would otherwise call
        // net.isIP(), whose first use compiles a regex (~15 ms on every CLI command).
        ...(e.secure ? {} : { servername: '' }),
      });
      let res: http.IncomingMessage | undefined;
      let failed: Error | undefined;
      const fail = (err: Error): void => {
        failed ??= err;
        if (res) res.destroy(err);
        else cr.destroy(err);
      };
      const onAbort = (): void => fail(signal?.reason as Error);
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (): void => signal?.removeEventListener('abort', onAbort);
      if (req.timeoutMs > 0) {
        cr.setTimeout(req.timeoutMs, () =>
          fail(
            new VesselError(
              'daemon_unreachable',
              `the Vessel daemon at ${this.where} sent nothing for ${req.timeoutMs / 1000} s (${req.method} ${req.path})`,
            ),
          ),
        );
      }
      cr.on('error', (err) => {
        if (typeof body === 'object') body.destroy();
        if (res) return; // the response carries its own errors
        done();
        if (failed !== undefined) return reject(failed);
        if (
          mayRetry &&
          cr.reusedSocket &&
          errnoCode(err) === 'ECONNRESET' &&
          IDEMPOTENT.has(req.method) &&
          typeof body !== 'object'
        ) {
          return resolve(this.attempt(client, req, false));
        }
        const code = errnoCode(err);
        reject(
          new VesselError(
            'daemon_unreachable',
            `cannot reach the Vessel daemon at ${this.where}${code ? ` (${code})` : ''}`,
            { cause: err },
          ),
        );
      });
      cr.on('response', (incoming) => {
        res = incoming;
        incoming.once('close', done);
        if (typeof body === 'object' && !body.readableEnded) {
          // The daemon answered before reading the whole upload (an error): stop sending.
          incoming.once('end', () => body.destroy());
        }
        resolve({
          statusCode: incoming.statusCode ?? 0,
          headers: incoming.headers,
          body: withReaders(incoming),
        });
      });
      if (typeof body === 'object') {
        body.once('error', fail);
        body.pipe(cr);
      } else {
        cr.end(body);
      }
    });
  }
}

function withReaders(res: http.IncomingMessage): ResponseBody {
  const text = async (): Promise<string> => {
    const chunks: Buffer[] = [];
    for await (const chunk of res as AsyncIterable<Buffer | string>) {
      chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    }
    return Buffer.concat(chunks).toString('utf8');
  };
  return Object.assign(res, {
    text,
    json: async (): Promise<unknown> => JSON.parse(await text()) as unknown,
    dump: async (): Promise<void> => {
      for await (const _ of res) {
        // discard
      }
    },
  });
}
