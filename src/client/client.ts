import type { Readable } from 'node:stream';
import { Agent, request, type Dispatcher } from 'undici';
import { ERROR_CODES, VesselError, errnoCode, type ErrorCode } from '../core/errors.js';
import { openExecStream, type ExecStream, type ExecStreamRequest } from './exec-stream.js';
import { SseParser, type SseEvent } from './sse.js';
import type {
  CreateInstanceRequest,
  CreateIngressRequest,
  Ingress,
  ExecRequest,
  ExecResult,
  GcResult,
  Health,
  Image,
  Instance,
  Kernel,
  LayerProgress,
  LifecycleEvent,
  WaitResult,
  Resources,
} from './types.js';

export interface ClientOptions {
  /** Unix socket path of the daemon (default transport). */
  readonly socketPath?: string;
  /** `http://host:port` of a TCP listener; requires `token`. */
  readonly baseUrl?: string;
  readonly token?: string;
  readonly timeoutMs?: number;
}

export type InstanceLogEvent =
  { type: 'log'; text: string } | { type: 'state'; instance: Instance };

export type ImageStreamEvent =
  | { type: 'status'; image: Image }
  | { type: 'progress'; layer: LayerProgress }
  | { type: 'deleted'; name: string };

/**
 * The typed HTTP client of the Vessel API, used by the CLI (and later the
 * web UI and SDKs). Errors come back as VesselError with the server's code.
 */
export class VesselClient {
  private readonly dispatcher: Dispatcher;
  private readonly origin: string;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly where: string;
  private readonly options: ClientOptions;

  constructor(options: ClientOptions) {
    this.options = options;
    if (options.baseUrl) {
      this.origin = options.baseUrl.replace(/\/$/, '');
      this.dispatcher = new Agent();
      this.where = this.origin;
    } else if (options.socketPath) {
      this.origin = 'http://vessel';
      this.dispatcher = new Agent({ connect: { socketPath: options.socketPath } });
      this.where = options.socketPath;
    } else {
      throw new VesselError('invalid_argument', 'client needs a socketPath or a baseUrl');
    }
    this.headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async call(
    method: Dispatcher.HttpMethod,
    path: string,
    options: {
      body?: unknown;
      stream?: Readable;
      contentType?: string;
      expect?: number[];
      timeoutMs?: number;
      signal?: AbortSignal;
    } = {},
  ): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { ...this.headers };
    let body: string | Readable | undefined;
    if (options.stream) {
      body = options.stream;
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    let res: Dispatcher.ResponseData;
    try {
      res = await request(`${this.origin}${path}`, {
        method,
        headers,
        body: body ?? null,
        dispatcher: this.dispatcher,
        headersTimeout: options.timeoutMs ?? this.timeoutMs,
        bodyTimeout: options.timeoutMs ?? this.timeoutMs,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (err) {
      const code = errnoCode(err);
      throw new VesselError(
        'daemon_unreachable',
        `cannot reach the Vessel daemon at ${this.where}${code ? ` (${code})` : ''}`,
        { cause: err },
      );
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      let parsed: { code?: string; message?: string; details?: Record<string, unknown> } = {};
      try {
        parsed = JSON.parse(text) as typeof parsed;
      } catch {
        // not JSON: report the raw status
      }
      const code: ErrorCode =
        parsed.code && Object.hasOwn(ERROR_CODES, parsed.code)
          ? (parsed.code as ErrorCode)
          : 'internal';
      throw new VesselError(
        code,
        parsed.message ?? `HTTP ${res.statusCode} from ${method} ${path}`,
        {
          details: { status: res.statusCode, ...parsed.details },
        },
      );
    }
    return res;
  }

  private async json<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<T> {
    const res = await this.call(method, path, { body });
    if (res.statusCode === 204) {
      await res.body.dump();
      return undefined as T;
    }
    return (await res.body.json()) as T;
  }

  health(): Promise<Health> {
    return this.json('GET', '/health');
  }

  resources(options: { refresh?: boolean } = {}): Promise<Resources> {
    return this.json('GET', `/resources${options.refresh ? '?refresh=true' : ''}`);
  }

  pullImage(name: string): Promise<Image> {
    return this.json('POST', '/images', { name });
  }

  listImages(): Promise<Image[]> {
    return this.json('GET', '/images');
  }

  getImage(name: string): Promise<Image> {
    return this.json('GET', `/images/${encodeURIComponent(name)}`);
  }

  deleteImage(name: string): Promise<void> {
    return this.json('DELETE', `/images/${encodeURIComponent(name)}`);
  }

  gcImages(): Promise<GcResult> {
    return this.json('POST', '/images/gc');
  }

  async importImage(archive: Readable, name?: string): Promise<Image> {
    const q = name ? `?name=${encodeURIComponent(name)}` : '';
    const res = await this.call('POST', `/images/import${q}`, {
      stream: archive,
      contentType: 'application/x-tar',
      timeoutMs: 60 * 60_000,
    });
    return (await res.body.json()) as Image;
  }

  /** Pull a catalog kernel (default: the daemon's default); returns once it is published. */
  pullKernel(name?: string): Promise<Kernel> {
    return this.jsonLong('POST', '/kernels', name === undefined ? {} : { name });
  }

  listKernels(): Promise<Kernel[]> {
    return this.json('GET', '/kernels');
  }

  /** Remove every version of `name`, or only `version`; refused while an instance uses it. */
  deleteKernel(name: string, version?: string): Promise<void> {
    const q = version === undefined ? '' : `?version=${encodeURIComponent(version)}`;
    return this.json('DELETE', `/kernels/${encodeURIComponent(name)}${q}`);
  }

  createIngress(req: CreateIngressRequest): Promise<Ingress> {
    return this.json('POST', '/ingresses', req);
  }

  listIngresses(): Promise<Ingress[]> {
    return this.json('GET', '/ingresses');
  }

  getIngress(idOrName: string): Promise<Ingress> {
    return this.json('GET', `/ingresses/${encodeURIComponent(idOrName)}`);
  }

  deleteIngress(idOrName: string): Promise<void> {
    return this.json('DELETE', `/ingresses/${encodeURIComponent(idOrName)}`);
  }

  async metrics(): Promise<string> {
    const res = await this.call('GET', '/metrics');
    return res.body.text();
  }

  async openapi(): Promise<Record<string, unknown>> {
    return this.json('GET', '/openapi.json');
  }

  createInstance(req: CreateInstanceRequest): Promise<Instance> {
    return this.jsonLong('POST', '/instances', req);
  }

  listInstances(): Promise<Instance[]> {
    return this.json('GET', '/instances');
  }

  getInstance(id: string): Promise<Instance> {
    return this.json('GET', `/instances/${encodeURIComponent(id)}`);
  }

  deleteInstance(id: string): Promise<void> {
    return this.json('DELETE', `/instances/${encodeURIComponent(id)}`);
  }

  startInstance(id: string): Promise<Instance> {
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/start`);
  }

  stopInstance(id: string, timeoutSeconds?: number): Promise<Instance> {
    const q = timeoutSeconds === undefined ? '' : `?timeout=${timeoutSeconds}`;
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/stop${q}`);
  }

  execInstance(id: string, req: ExecRequest): Promise<ExecResult> {
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/exec`, req);
  }

  /** Interactive exec over the WebSocket endpoint: streams, tty, resize, signals. */
  execStream(id: string, req: ExecStreamRequest): Promise<ExecStream> {
    return openExecStream(this.options, id, req);
  }

  /** Lifecycle actions that answer with the instance once done. */
  instanceAction(
    id: string,
    action: 'pause' | 'resume' | 'standby' | 'restore',
  ): Promise<Instance> {
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/${action}`);
  }

  forkInstance(id: string, name?: string): Promise<Instance> {
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/fork`, name ? { name } : {});
  }

  /** Wait for a state; resolves with `timed_out: true` when the timeout passes first. */
  async waitInstance(id: string, state: string, timeoutSeconds: number): Promise<WaitResult> {
    const q = new URLSearchParams({ state, timeout: String(timeoutSeconds) });
    const res = await this.call(
      'GET',
      `/instances/${encodeURIComponent(id)}/wait?${q.toString()}`,
      {
        timeoutMs: (timeoutSeconds + 30) * 1000,
      },
    );
    return (await res.body.json()) as WaitResult;
  }

  /** Follow the lifecycle event stream (optionally one instance, some types). */
  async *events(
    filter: { instance?: string; types?: string[] } = {},
    signal?: AbortSignal,
  ): AsyncGenerator<LifecycleEvent> {
    const q = new URLSearchParams();
    if (filter.instance) q.set('instance', filter.instance);
    if (filter.types?.length) q.set('type', filter.types.join(','));
    const res = await this.call('GET', `/events?${q.toString()}`, {
      timeoutMs: 0,
      ...(signal ? { signal } : {}),
    });
    const parser = new SseParser();
    res.body.setEncoding('utf8');
    for await (const chunk of res.body as AsyncIterable<string>) {
      for (const e of parser.push(chunk)) yield JSON.parse(e.data) as LifecycleEvent;
    }
  }

  /** An instance log (`app` by default); with `follow`, live output and state changes until it stops. */
  async *instanceLogs(
    id: string,
    options: { follow?: boolean; tail?: number; source?: 'app' | 'vmm' | 'daemon' } = {},
  ): AsyncGenerator<InstanceLogEvent> {
    const q = new URLSearchParams();
    if (options.follow) q.set('follow', 'true');
    if (options.tail !== undefined) q.set('tail', String(options.tail));
    if (options.source) q.set('source', options.source);
    const res = await this.call(
      'GET',
      `/instances/${encodeURIComponent(id)}/logs?${q.toString()}`,
      { timeoutMs: 0 },
    );
    const parser = new SseParser();
    res.body.setEncoding('utf8');
    for await (const chunk of res.body as AsyncIterable<string>) {
      for (const e of parser.push(chunk)) {
        if (e.event === 'log') yield { type: 'log', text: JSON.parse(e.data) as string };
        else if (e.event === 'state')
          yield { type: 'state', instance: JSON.parse(e.data) as Instance };
      }
    }
  }

  /** Requests that may take as long as a boot or a pull (auto-pull on create). */
  private async jsonLong<T>(
    method: Dispatcher.HttpMethod,
    path: string,
    body?: unknown,
  ): Promise<T> {
    const res = await this.call(method, path, { body, timeoutMs: 30 * 60_000 });
    return (await res.body.json()) as T;
  }

  /** Follow an image's status and download progress until ready or failed. */
  async *imageEvents(name: string): AsyncGenerator<ImageStreamEvent> {
    const res = await this.call('GET', `/images/${encodeURIComponent(name)}/events`, {
      timeoutMs: 0,
    });
    const parser = new SseParser();
    res.body.setEncoding('utf8');
    for await (const chunk of res.body as AsyncIterable<string>) {
      for (const e of parser.push(chunk)) {
        const ev = decode(e);
        if (ev) yield ev;
      }
    }
  }
}

function decode(e: SseEvent): ImageStreamEvent | undefined {
  const data = JSON.parse(e.data) as unknown;
  switch (e.event) {
    case 'status':
      return { type: 'status', image: data as Image };
    case 'progress':
      return { type: 'progress', layer: data as LayerProgress };
    case 'deleted':
      return { type: 'deleted', name: (data as { name: string }).name };
    default:
      return undefined;
  }
}
