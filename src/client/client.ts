import { Readable } from 'node:stream';
import type {
  WireBuild as Build,
  WireBuildEvent as BuildEvent,
  WireCatalogEntry as CatalogEntry,
} from '../core/wire-builds.js';
import type { WireWorkspaceInfo as WorkspaceInfo } from '../core/wire-files.js';
import { PATH_STAT_HEADER } from '../core/files-header.js';
import type { FileEntry } from '../core/wire-files.js';
import type {
  CreateSnapshotRequest,
  ForkSnapshotRequest,
  RestoreSnapshotRequest,
  Snapshot,
} from '../core/wire-snapshots.js';
import { ERROR_CODES, VesselError, type ErrorCode } from '../core/errors.js';
import type { ExecStream, ExecStreamRequest, SessionStream } from './exec-stream.js';
import type { Session, StartSessionRequest } from '../core/wire-sessions.js';
import {
  STDIO_MEDIA_TYPE,
  StdioDecoder,
  StdioKind,
  type StdioFrame,
} from '../core/stdio-stream.js';
import { SseParser, type SseEvent } from './sse.js';
import { HttpTransport, type HttpMethod, type HttpResponse } from './transport.js';
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
  Capabilities,
  ForkInstanceRequest,
  InstanceStats,
  PathInfo,
  StartInstanceRequest,
  UpdateInstanceRequest,
  Volume,
  CreateVolumeRequest,
  AttachVolumeRequest,
} from './types.js';

export interface ClientOptions {
  /** Unix socket path of the daemon (default transport). */
  readonly socketPath?: string;
  /** `http://host:port` of a TCP listener; requires `token`. */
  readonly baseUrl?: string;
  readonly token?: string;
  readonly timeoutMs?: number;
}

/** One log line (without its newline), as hypeman's SSE sends it; text decoded lossily. */
export type InstanceLogEvent = { type: 'log'; text: string };

export type LogSourceName = 'app' | 'console' | 'vmm' | 'daemon';

/** A chunk of a log read as bytes (`instanceLogBytes`). */
export type LogBytes =
  { type: 'stdout' | 'stderr' | 'text'; data: Buffer } | { type: 'state'; instance: Instance };

/** Where `execBytes` delivers output; a returned promise holds the next chunk back. */
export interface StdioSink {
  stdout(data: Buffer): void | Promise<void>;
  stderr(data: Buffer): void | Promise<void>;
}

function logQuery(options: {
  follow?: boolean;
  tail?: number;
  source?: LogSourceName;
}): URLSearchParams {
  const q = new URLSearchParams();
  if (options.follow) q.set('follow', 'true');
  if (options.tail !== undefined) q.set('tail', String(options.tail));
  if (options.source) q.set('source', options.source);
  return q;
}

/** The frames of an `application/vnd.vessel.stream` body; a cut-off frame is an error. */
async function* stdioFrames(body: AsyncIterable<Buffer>): AsyncGenerator<StdioFrame> {
  const decoder = new StdioDecoder();
  for await (const chunk of body) yield* decoder.push(chunk);
  if (decoder.pending > 0)
    throw new VesselError('daemon_unreachable', 'the daemon closed the stream inside a frame');
}

function errorFrame(payload: Buffer): VesselError {
  let e: { code?: string; message?: string; context?: Record<string, unknown> } = {};
  try {
    e = JSON.parse(payload.toString('utf8')) as typeof e;
  } catch {
    // reported as internal below
  }
  const code: ErrorCode =
    e.code && Object.hasOwn(ERROR_CODES, e.code) ? (e.code as ErrorCode) : 'internal';
  return new VesselError(
    code,
    e.message ?? 'the stream failed',
    e.context ? { details: e.context } : {},
  );
}

/** POST /builds fields (the context travels as the `source` file part). */
export interface CreateBuildRequest {
  readonly image: string;
  readonly dockerfile?: string;
  readonly dockerfile_path?: string;
  readonly build_args?: Readonly<Record<string, string>>;
  readonly target?: string;
  readonly no_cache?: boolean;
  readonly network?: 'none' | 'egress';
  readonly tags?: Readonly<Record<string, string>>;
}

export type ImageStreamEvent =
  | { type: 'status'; image: Image }
  | { type: 'progress'; layer: LayerProgress }
  | { type: 'deleted'; name: string };

/**
 * The typed HTTP client of the Vessel API, used by the CLI (and later the
 * web UI and SDKs). Errors come back as VesselError with the server's code.
 */
export class VesselClient {
  private readonly http: HttpTransport;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly options: ClientOptions;

  constructor(options: ClientOptions) {
    this.options = options;
    this.http = new HttpTransport(options);
    this.headers = options.token ? { authorization: `Bearer ${options.token}` } : {};
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  async close(): Promise<void> {
    await this.http.close();
  }

  private async call(
    method: HttpMethod,
    path: string,
    options: {
      body?: unknown;
      stream?: Readable;
      contentType?: string;
      expect?: number[];
      timeoutMs?: number;
      signal?: AbortSignal;
      headers?: Record<string, string>;
    } = {},
  ): Promise<HttpResponse> {
    const headers: Record<string, string> = { ...this.headers, ...options.headers };
    let body: string | Readable | undefined;
    if (options.stream) {
      body = options.stream;
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    // Connection failures come back as `daemon_unreachable` from the transport.
    const res = await this.http.request({
      method,
      path,
      headers,
      ...(body === undefined ? {} : { body }),
      timeoutMs: options.timeoutMs ?? this.timeoutMs,
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      // `context`: the error's structured facts (`details` is the hypeman API's list of errors).
      let parsed: { code?: string; message?: string; context?: Record<string, unknown> } = {};
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
          details: { status: res.statusCode, ...parsed.context },
        },
      );
    }
    return res;
  }

  private async json<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
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

  listVolumes(filter: { tags?: Record<string, string> } = {}): Promise<Volume[]> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter.tags ?? {})) q.set(`tags[${k}]`, v);
    const qs = q.toString();
    return this.json('GET', `/volumes${qs ? `?${qs}` : ''}`);
  }

  createVolume(req: CreateVolumeRequest): Promise<Volume> {
    return this.jsonLong('POST', '/volumes', req);
  }

  /** A volume from a tar, tar.gz or tar.zst stream (the daemon detects which). */
  async createVolumeFromArchive(
    archive: Readable,
    req: { name: string; size_gb: number },
  ): Promise<Volume> {
    const q = new URLSearchParams({ name: req.name, size_gb: String(req.size_gb) });
    const res = await this.call('POST', `/volumes/from-archive?${q.toString()}`, {
      stream: archive,
      contentType: 'application/octet-stream',
      timeoutMs: 60 * 60_000,
    });
    return (await res.body.json()) as Volume;
  }

  getVolume(idOrName: string): Promise<Volume> {
    return this.json('GET', `/volumes/${encodeURIComponent(idOrName)}`);
  }

  /** Refused (`volume_in_use`) while the volume is attached. */
  deleteVolume(idOrName: string): Promise<void> {
    return this.json('DELETE', `/volumes/${encodeURIComponent(idOrName)}`);
  }

  /** Attach a volume to a Stopped instance; mounted at its next boot. */
  attachVolume(id: string, volumeId: string, req: AttachVolumeRequest): Promise<Instance> {
    return this.json(
      'POST',
      `/instances/${encodeURIComponent(id)}/volumes/${encodeURIComponent(volumeId)}`,
      req,
    );
  }

  detachVolume(id: string, volumeId: string): Promise<Instance> {
    return this.json(
      'DELETE',
      `/instances/${encodeURIComponent(id)}/volumes/${encodeURIComponent(volumeId)}`,
    );
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

  /** Instances, optionally only those in `state` carrying every tag of `tags`. */
  listInstances(
    filter: { state?: string; tags?: Record<string, string> } = {},
  ): Promise<Instance[]> {
    const q = new URLSearchParams();
    if (filter.state) q.set('state', filter.state);
    for (const [k, v] of Object.entries(filter.tags ?? {})) q.set(`tags[${k}]`, v);
    const qs = q.toString();
    return this.json('GET', `/instances${qs ? `?${qs}` : ''}`);
  }

  /** Change env (merged), tags (replaced) or the expiry (`ttl`, `expires_at`). */
  updateInstance(id: string, patch: UpdateInstanceRequest): Promise<Instance> {
    return this.json('PATCH', `/instances/${encodeURIComponent(id)}`, patch);
  }

  /** A path in a Running instance's guest filesystem. */
  statInstancePath(id: string, path: string, followLinks = false): Promise<PathInfo> {
    const q = new URLSearchParams({ path, follow_links: String(followLinks) });
    return this.json('GET', `/instances/${encodeURIComponent(id)}/stat?${q.toString()}`);
  }

  /**
   * A tar stream of a guest path (Docker's GET /archive) and the path's
   * PathInfo. Read the stream to its end (or destroy it) to free the socket.
   */
  async getInstanceArchive(
    id: string,
    path: string,
  ): Promise<{ stat: PathInfo | null; stream: Readable }> {
    const q = new URLSearchParams({ path });
    const res = await this.call(
      'GET',
      `/instances/${encodeURIComponent(id)}/archive?${q.toString()}`,
      {
        timeoutMs: 10 * 60_000,
      },
    );
    let stat: PathInfo | null = null;
    const header = res.headers[PATH_STAT_HEADER];
    if (typeof header === 'string') {
      try {
        stat = JSON.parse(Buffer.from(header, 'base64').toString('utf8')) as PathInfo;
      } catch {
        stat = null;
      }
    }
    return { stat, stream: res.body };
  }

  /** Unpack a tar stream into an existing guest directory (Docker's PUT /archive). */
  async putInstanceArchive(id: string, path: string, tar: Readable): Promise<void> {
    const q = new URLSearchParams({ path });
    const res = await this.call(
      'PUT',
      `/instances/${encodeURIComponent(id)}/archive?${q.toString()}`,
      {
        stream: tar,
        contentType: 'application/x-tar',
        timeoutMs: 10 * 60_000,
      },
    );
    await res.body.dump();
  }

  /**
   * Stream a workspace into the guest at `req.path` (default /work): a tar of
   * the tree and, with `head`, the history (WORKSPACE_PACK, its index and WORKSPACE_REFS;
   * a bundle, WORKSPACE_BUNDLE, is still taken).
   */
  async prepareWorkspace(
    id: string,
    tar: Readable,
    req: { path?: string; head?: string; branch?: string } = {},
  ): Promise<WorkspaceInfo> {
    const q = new URLSearchParams({ path: req.path ?? '/work' });
    if (req.head) q.set('head', req.head);
    if (req.branch) q.set('branch', req.branch);
    const res = await this.call(
      'POST',
      `/instances/${encodeURIComponent(id)}/workspace?${q.toString()}`,
      { stream: tar, contentType: 'application/x-tar', timeoutMs: 60 * 60_000 },
    );
    return (await res.body.json()) as WorkspaceInfo;
  }

  /**
   * The guest's changes as a binary git patch (a stream): against the prepared
   * HEAD, or with `since: 'prepared'` only what changed in the guest.
   */
  async workspacePatch(
    id: string,
    path = '/work',
    since: 'head' | 'prepared' = 'head',
  ): Promise<Readable> {
    const q = new URLSearchParams({ path, since });
    const res = await this.call(
      'GET',
      `/instances/${encodeURIComponent(id)}/workspace/patch?${q.toString()}`,
      { timeoutMs: 30 * 60_000 },
    );
    return res.body;
  }

  /** The bytes of a guest file, streamed (symlinks followed); a directory is `invalid_argument`. */
  async readInstanceFile(id: string, path: string): Promise<Readable> {
    const res = await this.files('GET', id, { path });
    if (String(res.headers['content-type'] ?? '').startsWith('application/json')) {
      await res.body.dump();
      throw new VesselError('invalid_argument', `"${path}" is a directory; list it instead`, {
        details: { path },
      });
    }
    return res.body;
  }

  /** The entries of a guest directory; a file is `invalid_argument`. */
  async listInstanceFiles(id: string, path: string): Promise<FileEntry[]> {
    const res = await this.files('GET', id, { path });
    if (!String(res.headers['content-type'] ?? '').startsWith('application/json')) {
      res.body.destroy();
      throw new VesselError('invalid_argument', `"${path}" is not a directory`, {
        details: { path },
      });
    }
    return (await res.body.json()) as FileEntry[];
  }

  /** Write a guest file (parents created, replaced if present); `mode` defaults to 0o644. */
  async writeInstanceFile(
    id: string,
    path: string,
    data: Readable | Buffer | string,
    options: { mode?: number } = {},
  ): Promise<void> {
    const mode = (options.mode ?? 0o644).toString(8).padStart(4, '0');
    const stream =
      typeof data === 'string' || Buffer.isBuffer(data) ? Readable.from([Buffer.from(data)]) : data;
    const res = await this.files('PUT', id, { path, mode }, stream);
    await res.body.dump();
  }

  /** Remove a guest file, symlink or directory (`recursive` for a non-empty one). */
  async removeInstanceFile(
    id: string,
    path: string,
    options: { recursive?: boolean } = {},
  ): Promise<void> {
    const res = await this.files('DELETE', id, {
      path,
      recursive: String(options.recursive ?? false),
    });
    await res.body.dump();
  }

  private files(
    method: HttpMethod,
    id: string,
    query: Record<string, string>,
    stream?: Readable,
  ): Promise<HttpResponse> {
    const q = new URLSearchParams(query);
    return this.call(method, `/instances/${encodeURIComponent(id)}/files?${q.toString()}`, {
      ...(stream ? { stream, contentType: 'application/octet-stream' } : {}),
      timeoutMs: 10 * 60_000,
    });
  }

  /** CPU time, memory, network and disk bytes of an instance's VM. */
  instanceStats(id: string): Promise<InstanceStats> {
    return this.json('GET', `/instances/${encodeURIComponent(id)}/stats`);
  }

  capabilities(): Promise<Capabilities> {
    return this.json('GET', '/capabilities');
  }

  getInstance(id: string): Promise<Instance> {
    return this.json('GET', `/instances/${encodeURIComponent(id)}`);
  }

  /** Delete an instance; its named snapshots stay unless `deleteSnapshots`. */
  deleteInstance(id: string, options: { deleteSnapshots?: boolean } = {}): Promise<void> {
    const q = options.deleteSnapshots ? '?delete_snapshots=true' : '';
    return this.json('DELETE', `/instances/${encodeURIComponent(id)}${q}`);
  }

  /** Take a named snapshot (`Standby`: memory + disk; `Stopped`: disk only). */
  createSnapshot(instance: string, req: CreateSnapshotRequest): Promise<Snapshot> {
    return this.jsonLong('POST', `/instances/${encodeURIComponent(instance)}/snapshots`, req);
  }

  listSnapshots(
    filter: {
      instance?: string;
      kind?: 'Standby' | 'Stopped';
      name?: string;
      tags?: Record<string, string>;
    } = {},
  ): Promise<Snapshot[]> {
    const q = new URLSearchParams();
    if (filter.instance !== undefined) q.set('source_instance_id', filter.instance);
    if (filter.kind !== undefined) q.set('kind', filter.kind);
    if (filter.name !== undefined) q.set('name', filter.name);
    for (const [k, v] of Object.entries(filter.tags ?? {})) q.set(`tags[${k}]`, v);
    const qs = q.toString();
    return this.json('GET', `/snapshots${qs ? `?${qs}` : ''}`);
  }

  getSnapshot(id: string): Promise<Snapshot> {
    return this.json('GET', `/snapshots/${encodeURIComponent(id)}`);
  }

  deleteSnapshot(id: string): Promise<void> {
    return this.json('DELETE', `/snapshots/${encodeURIComponent(id)}`);
  }

  /** Roll `instance` back to snapshot `id`; it ends in `target_state`. */
  restoreSnapshot(
    instance: string,
    id: string,
    req: RestoreSnapshotRequest = {},
  ): Promise<Instance> {
    return this.jsonLong(
      'POST',
      `/instances/${encodeURIComponent(instance)}/snapshots/${encodeURIComponent(id)}/restore`,
      req,
    );
  }

  /** A new instance from snapshot `id`. */
  forkSnapshot(id: string, req: ForkSnapshotRequest = {}): Promise<Instance> {
    return this.jsonLong('POST', `/snapshots/${encodeURIComponent(id)}/fork`, req);
  }

  /** Boot a stopped instance; `overrides` replace its entrypoint/cmd for this and later boots. */
  startInstance(id: string, overrides?: StartInstanceRequest): Promise<Instance> {
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/start`, overrides);
  }

  stopInstance(id: string, timeoutSeconds?: number): Promise<Instance> {
    const q = timeoutSeconds === undefined ? '' : `?timeout=${timeoutSeconds}`;
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/stop${q}`);
  }

  execInstance(id: string, req: ExecRequest): Promise<ExecResult> {
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/exec`, req);
  }

  /**
   * Run a command and stream its output byte for byte: `sink` gets stdout
   * and stderr apart, in order; awaiting its promise slows the command down
   * (back-pressure). Resolves with the exit status; a command that could not
   * start rejects with the guest's error (`details.exit_code` 127 or 126).
   */
  async execBytes(
    id: string,
    req: ExecRequest,
    sink: StdioSink,
    signal?: AbortSignal,
  ): Promise<{ exit_code: number | null; signal: number | null }> {
    const res = await this.call('POST', `/instances/${encodeURIComponent(id)}/exec`, {
      body: req,
      headers: { accept: STDIO_MEDIA_TYPE },
      timeoutMs: 0,
      ...(signal ? { signal } : {}),
    });
    let status: { exit_code: number | null; signal: number | null } | undefined;
    for await (const f of stdioFrames(res.body)) {
      if (f.kind === StdioKind.stdout) await sink.stdout(f.payload);
      else if (f.kind === StdioKind.stderr) await sink.stderr(f.payload);
      else if (f.kind === StdioKind.exit)
        status = JSON.parse(f.payload.toString('utf8')) as typeof status;
      else if (f.kind === StdioKind.error) throw errorFrame(f.payload);
    }
    if (!status)
      throw new VesselError(
        'daemon_unreachable',
        'the exec stream ended before the command exited',
      );
    return status;
  }

  /**
   * An instance log as bytes: stdout and stderr apart (`app`), or text
   * (`console`, `vmm`, `daemon`); with `follow`, until the instance stops.
   * The last item is the instance as it was when the stream ended.
   */
  async *instanceLogBytes(
    id: string,
    options: { follow?: boolean; tail?: number; source?: LogSourceName } = {},
    signal?: AbortSignal,
  ): AsyncGenerator<LogBytes> {
    const q = logQuery(options);
    const res = await this.call(
      'GET',
      `/instances/${encodeURIComponent(id)}/logs?${q.toString()}`,
      {
        headers: { accept: STDIO_MEDIA_TYPE },
        timeoutMs: 0,
        ...(signal ? { signal } : {}),
      },
    );
    for await (const f of stdioFrames(res.body)) {
      if (f.kind === StdioKind.stdout) yield { type: 'stdout', data: f.payload };
      else if (f.kind === StdioKind.stderr) yield { type: 'stderr', data: f.payload };
      else if (f.kind === StdioKind.console) yield { type: 'text', data: f.payload };
      else if (f.kind === StdioKind.state)
        yield { type: 'state', instance: JSON.parse(f.payload.toString('utf8')) as Instance };
      else if (f.kind === StdioKind.error) throw errorFrame(f.payload);
    }
  }

  /** Attach to the main command (WebSocket): output, stdin (`stdin: true` instances), signals, tty size. */
  async attach(id: string, options: { logs?: boolean } = {}): Promise<ExecStream> {
    const { openAttachStream } = await import('./exec-stream.js');
    return openAttachStream(this.options, id, options);
  }

  listSessions(id: string): Promise<Session[]> {
    return this.json('GET', `/instances/${encodeURIComponent(id)}/sessions`);
  }

  /** Start a command as a session in the guest: it outlives this client. */
  startSession(id: string, req: StartSessionRequest): Promise<Session> {
    return this.json('POST', `/instances/${encodeURIComponent(id)}/sessions`, req);
  }

  getSession(id: string, name: string): Promise<Session> {
    return this.json('GET', this.sessionPath(id, name));
  }

  signalSession(id: string, name: string, signal = 15): Promise<Session> {
    return this.json('POST', `${this.sessionPath(id, name)}/signal`, { signal });
  }

  /** Remove an ended session; `force` kills a running one first. */
  async deleteSession(id: string, name: string, options: { force?: boolean } = {}): Promise<void> {
    const q = options.force ? '?force=true' : '';
    await this.json('DELETE', `${this.sessionPath(id, name)}${q}`);
  }

  /** A session's kept output as bytes (stdout and stderr in arrival order); `follow` to its end. */
  async sessionLogs(
    id: string,
    name: string,
    options: { from?: number; follow?: boolean } = {},
  ): Promise<Readable> {
    const q = new URLSearchParams();
    if (options.from !== undefined) q.set('from', String(options.from));
    if (options.follow) q.set('follow', 'true');
    const res = await this.call('GET', `${this.sessionPath(id, name)}/logs?${q.toString()}`, {
      timeoutMs: 0,
    });
    return res.body;
  }

  /** Attach to a session (WebSocket): its kept output, then live; input; `close()` detaches. */
  async attachSession(
    id: string,
    name: string,
    options: { from?: number; input?: boolean; follow?: boolean } = {},
  ): Promise<SessionStream> {
    const { openSessionStream } = await import('./exec-stream.js');
    return openSessionStream(this.options, id, name, options);
  }

  private sessionPath(id: string, name: string): string {
    return `/instances/${encodeURIComponent(id)}/sessions/${encodeURIComponent(name)}`;
  }

  /** Interactive exec over the WebSocket endpoint: streams, tty, resize, signals. */
  async execStream(id: string, req: ExecStreamRequest): Promise<ExecStream> {
    // Loaded here only: `ws` is for exec, not for every command.
    const { openExecStream } = await import('./exec-stream.js');
    return openExecStream(this.options, id, req);
  }

  /** Lifecycle actions that answer with the instance once done. */
  instanceAction(
    id: string,
    action: 'pause' | 'resume' | 'standby' | 'restore',
  ): Promise<Instance> {
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/${action}`);
  }

  /** Fork: a name, or the full request (`from_running`, `target_state`). */
  forkInstance(id: string, req?: string | ForkInstanceRequest): Promise<Instance> {
    const body = typeof req === 'string' ? { name: req } : (req ?? {});
    return this.jsonLong('POST', `/instances/${encodeURIComponent(id)}/fork`, body);
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
    yield* this.sse<LifecycleEvent>(`/events?${q.toString()}`, signal);
  }

  /** A Server-Sent Events stream's `data` as JSON, until the server ends it. */
  private async *sse<T>(path: string, signal?: AbortSignal): AsyncGenerator<T> {
    const res = await this.call('GET', path, { timeoutMs: 0, ...(signal ? { signal } : {}) });
    const parser = new SseParser();
    res.body.setEncoding('utf8');
    for await (const chunk of res.body as AsyncIterable<string>) {
      for (const e of parser.push(chunk)) yield JSON.parse(e.data) as T;
    }
  }

  /**
   * An instance log as text lines, the hypeman way (Server-Sent Events; the
   * last 100 lines unless `tail` says otherwise); with `follow`, until it
   * stops. `instanceLogBytes` is the byte-exact form.
   */
  async *instanceLogs(
    id: string,
    options: { follow?: boolean; tail?: number; source?: LogSourceName } = {},
  ): AsyncGenerator<InstanceLogEvent> {
    const q = logQuery(options);
    const res = await this.call(
      'GET',
      `/instances/${encodeURIComponent(id)}/logs?${q.toString()}`,
      { timeoutMs: 0 },
    );
    const parser = new SseParser();
    res.body.setEncoding('utf8');
    for await (const chunk of res.body as AsyncIterable<string>) {
      for (const e of parser.push(chunk))
        if (e.event === 'message') yield { type: 'log', text: JSON.parse(e.data) as string };
    }
  }

  /** Requests that may take as long as a boot or a pull (auto-pull on create). */
  private async jsonLong<T>(method: HttpMethod, path: string, body?: unknown): Promise<T> {
    const res = await this.call(method, path, { body, timeoutMs: 30 * 60_000 });
    return (await res.body.json()) as T;
  }

  /**
   * Start a build: `context` is a tar stream of the build context, sent as
   * the multipart file part `source` after the fields (POST /builds).
   */
  async createBuild(req: CreateBuildRequest, context: Readable): Promise<Build> {
    const { randomBytes } = await import('node:crypto');
    const boundary = `vessel-${randomBytes(16).toString('hex')}`;
    const fields: Record<string, string> = { image: req.image };
    if (req.dockerfile !== undefined) fields.dockerfile = req.dockerfile;
    if (req.dockerfile_path !== undefined) fields.dockerfile_path = req.dockerfile_path;
    if (req.build_args) fields.build_args = JSON.stringify(req.build_args);
    if (req.target !== undefined) fields.target = req.target;
    if (req.no_cache) fields.no_cache = 'true';
    if (req.network) fields.network = req.network;
    if (req.tags) fields.tags = JSON.stringify(req.tags);
    const body = Readable.from(
      (async function* () {
        for (const [k, v] of Object.entries(fields))
          yield Buffer.from(
            `--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`,
          );
        yield Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="source"; filename="context.tar"\r\n` +
            'Content-Type: application/x-tar\r\n\r\n',
        );
        for await (const chunk of context) yield chunk as Buffer;
        yield Buffer.from(`\r\n--${boundary}--\r\n`);
      })(),
    );
    const res = await this.call('POST', '/builds', {
      stream: body,
      contentType: `multipart/form-data; boundary=${boundary}`,
      timeoutMs: 60 * 60_000,
    });
    return (await res.body.json()) as Build;
  }

  listBuilds(): Promise<Build[]> {
    return this.json('GET', '/builds');
  }

  getBuild(id: string): Promise<Build> {
    return this.json('GET', `/builds/${encodeURIComponent(id)}`);
  }

  /** Cancel a queued or running build; delete a finished one's record. */
  /** The image catalog: golden images built locally, and which are local. */
  listCatalog(): Promise<CatalogEntry[]> {
    return this.json('GET', '/catalog');
  }

  /** Build (or rebuild) a catalog image; follow it with {@link buildEvents}. */
  buildCatalogImage(name: string): Promise<Build> {
    return this.json('POST', `/catalog/${encodeURIComponent(name)}/build`);
  }

  /** Cancel a running build (resolves once it is cancelled), or delete a finished one. */
  async cancelBuild(id: string): Promise<void> {
    const res = await this.call('DELETE', `/builds/${encodeURIComponent(id)}`, {
      timeoutMs: 30 * 60_000,
    });
    await res.body.dump();
  }

  /** A build's events from the first, live until it ends. */
  async *buildEvents(id: string, signal?: AbortSignal): AsyncGenerator<BuildEvent> {
    yield* this.sse<BuildEvent>(`/builds/${encodeURIComponent(id)}/events?follow=true`, signal);
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
