/**
 * The build subsystem's front door: accepts a context and a Dockerfile,
 * queues the build, runs it (engine.ts), keeps its record and its event
 * stream, cancels it, and cleans up after a daemon that died mid-build.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { CATALOG, CATALOG_REGISTRY, catalogEntry } from '../core/catalog.js';
import type { Config } from '../core/config.js';
import { VesselError, toVesselError } from '../core/errors.js';
import { randomSuffix } from '../core/fs.js';
import type { Logger } from '../core/logger.js';
import type { Paths } from '../core/paths.js';
import { Semaphore } from '../core/sync.js';
import { VERSION } from '../core/version.js';
import { Topic } from '../events/index.js';
import type { ImageManager } from '../images/index.js';
import { formatReference, parseReference } from '../images/reference.js';
import { applyLayer } from '../images/unpack/index.js';
import type { InstanceManager } from '../instances/index.js';
import type { BuildRow, BuildStepRecord, BuildsRepo, BuildStatus } from '../store/index.js';
import { parseDockerfile, type ParsedDockerfile } from './dockerfile.js';
import {
  INTERMEDIATE_REGISTRY,
  StepFailed,
  newBuildId,
  runBuild,
  type BuildResult,
} from './engine.js';
import { buildGolden, goldenSteps } from './golden.js';

/** An event on a build's stream (hypeman's BuildEvent, plus `step`). */
export interface BuildEvent {
  readonly seq: number;
  readonly type: 'log' | 'status' | 'step' | 'heartbeat';
  readonly timestamp: string;
  /** `log`: one line of output. */
  readonly content?: string;
  /** `status`: the new status. */
  readonly status?: BuildStatus;
  /** `step`: the step list with each step's state. */
  readonly steps?: readonly BuildStepRecord[];
}

/** The build as the API shows it (hypeman's Build, plus steps and exit_code). */
export interface BuildView {
  readonly id: string;
  readonly status: BuildStatus;
  readonly tags: Readonly<Record<string, string>>;
  readonly queue_position: number | null;
  readonly image_ref: string;
  readonly image_digest: string | null;
  readonly error: string | null;
  readonly error_code: string | null;
  readonly exit_code: number | null;
  /** How the image was made (always present, as hypeman's). */
  readonly provenance: Record<string, unknown>;
  readonly steps: readonly BuildStepRecord[];
  readonly created_at: string;
  readonly started_at: string | null;
  readonly completed_at: string | null;
  readonly duration_ms: number | null;
  readonly builder_instance_id: string | null;
}

export interface CreateBuildInput {
  /** A directory holding the unpacked context (from {@link BuildManager.receiveContext}). */
  readonly contextDir: string;
  /** sha256 of the uploaded context bytes (provenance). */
  readonly sourceHash: string;
  /** The Dockerfile's text; default: the context's `dockerfileName`. */
  readonly dockerfile?: string;
  readonly dockerfileName?: string;
  /** The image to make; default `localhost/builds/<build id>:latest`. */
  readonly image?: string;
  readonly buildArgs?: Readonly<Record<string, string>>;
  /** Builder VM size (default: the daemon's builds config). */
  readonly vcpus?: number;
  readonly memoryMib?: number;
  readonly target?: string;
  readonly noCache?: boolean;
  readonly network?: 'none' | 'egress';
  readonly tags?: Readonly<Record<string, string>>;
}

export interface BuildManagerOptions {
  readonly repo: BuildsRepo;
  readonly images: ImageManager;
  readonly instances: InstanceManager;
  readonly paths: Paths;
  readonly logger: Logger;
  readonly config: Config['builds'];
}

/** Events kept per build in memory while it runs (then on disk). */
const MAX_EVENTS = 20_000;
const TERMINAL: ReadonlySet<BuildStatus> = new Set(['ready', 'failed', 'cancelled']);

/** What a build's work gets from the manager. */
interface RunContext {
  readonly log: Logger;
  readonly signal: AbortSignal;
  readonly output: (line: string) => void;
  readonly steps: (steps: BuildStepRecord[]) => void;
  readonly builder: (instanceId: string | null) => void;
}

type Runner = (ctx: RunContext) => Promise<BuildResult>;

/** A catalog entry as the API shows it. */
export interface CatalogView {
  readonly name: string;
  readonly description: string;
  readonly default: boolean;
  readonly image: string;
  readonly source: string;
  readonly packages: readonly string[];
  /** The image is in the local store and ready. */
  readonly local: boolean;
  readonly digest: string | null;
  readonly built_at: string | null;
  /** A build of it in progress. */
  readonly build_id: string | null;
}

interface Active {
  readonly abort: AbortController;
  readonly events: BuildEvent[];
  readonly topic: Topic<BuildEvent>;
  seq: number;
  done: Promise<void>;
}

export class BuildManager {
  private readonly o: BuildManagerOptions;
  private readonly log: Logger;
  private readonly slots: Semaphore;
  private readonly active = new Map<string, Active>();
  private readonly queue: string[] = [];
  private closed = false;

  constructor(options: BuildManagerOptions) {
    this.o = options;
    this.log = options.logger;
    this.slots = new Semaphore(options.config.max_concurrent);
    options.images.keepBlobs(() => options.repo.cacheLayers());
  }

  /** Fail builds a previous daemon left running; remove their builder VMs and intermediate images. */
  async init(): Promise<void> {
    await fs.mkdir(this.o.paths.buildsDir, { recursive: true, mode: 0o700 });
    for (const row of this.o.repo.list()) {
      if (TERMINAL.has(row.status)) continue;
      this.o.repo.upsert({
        ...row,
        status: 'failed',
        error: 'the daemon stopped during the build',
        error_code: 'internal',
        completed_at: new Date().toISOString(),
        builder_instance_id: null,
      });
    }
    for (const inst of this.o.instances.list({ tags: {} })) {
      if (inst.tags?.['vessel.build'] === undefined) continue;
      await this.o.instances.delete(inst.id).catch((err: unknown) => {
        this.log.warn({ err, instance: inst.id }, 'could not remove a stale builder VM');
      });
    }
    for (const img of this.o.images.list()) {
      if (!img.name.startsWith(`${INTERMEDIATE_REGISTRY}/`)) continue;
      await this.o.images.delete(img.name).catch(() => undefined);
    }
    for (const entry of await fs.readdir(this.o.paths.buildsDir)) {
      if (entry.startsWith('.incoming-'))
        await fs.rm(path.join(this.o.paths.buildsDir, entry), { recursive: true, force: true });
      else
        await fs.rm(path.join(this.o.paths.buildsDir, entry, 'work'), {
          recursive: true,
          force: true,
        });
    }
  }

  /**
   * Unpack an uploaded context (a tar, optionally gzip/zstd compressed) into
   * a fresh private directory, with the image layer applier: entries that
   * would leave the directory are refused. Returns the directory and the
   * sha256 of the bytes received.
   */
  async receiveContext(body: Readable): Promise<{ dir: string; sourceHash: string }> {
    const dir = path.join(this.o.paths.buildsDir, `.incoming-${randomSuffix()}`);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const hash = createHash('sha256');
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    body.on('error', (err) => meter.destroy(err));
    try {
      await applyLayer(body.pipe(meter), {
        rootfs: dir,
        maxBytes: this.o.config.max_context_bytes,
        canChown: false,
      });
    } catch (err) {
      await fs.rm(dir, { recursive: true, force: true });
      const e = toVesselError(err, 'build context');
      throw new VesselError(
        e.code === 'internal' ? 'invalid_archive' : e.code,
        `build context: ${e.message}`,
      );
    }
    return { dir, sourceHash: `sha256:${hash.digest('hex')}` };
  }

  /** Queue a build; returns its record at once (`queued`). Errors in the Dockerfile are a 400 now. */
  async create(input: CreateBuildInput): Promise<BuildView> {
    if (this.closed)
      throw new VesselError('conflict', 'the daemon is shutting down; start the build again later');
    const id = newBuildId();
    const dockerfileName = input.dockerfileName ?? 'Dockerfile';
    let imageRef: string;
    let parsed: ParsedDockerfile;
    try {
      imageRef = formatReference(parseReference(input.image ?? `localhost/builds/${id}`));
      for (const [registry, what] of [
        [INTERMEDIATE_REGISTRY, 'build steps'],
        [CATALOG_REGISTRY, 'the image catalog (vessel image catalog build NAME)'],
      ] as const) {
        if (imageRef.startsWith(`${registry}/`))
          throw new VesselError('invalid_argument', `${registry} is reserved for ${what}`);
      }
      // A bad Dockerfile is the request's fault: 400 before queueing.
      parsed = parseDockerfile(
        input.dockerfile ?? (await readInContext(input.contextDir, dockerfileName)),
      );
    } catch (err) {
      await fs.rm(input.contextDir, { recursive: true, force: true });
      throw err;
    }
    const dir = this.o.paths.buildDir(id);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    await fs.rename(input.contextDir, path.join(dir, 'context'));
    const request = {
      dockerfile: dockerfileName,
      build_args: { ...input.buildArgs },
      ...(input.target ? { target: input.target } : {}),
      no_cache: input.noCache ?? false,
      network: input.network ?? 'none',
      vcpus: input.vcpus ?? this.o.config.vcpus,
      memory_mib: input.memoryMib ?? this.o.config.memory_mib,
    };
    const row: BuildRow = {
      ...this.newRow(id, imageRef, request, input.tags ?? {}),
      provenance: { source_hash: input.sourceHash, builder: `vessel ${VERSION}` },
    };
    this.o.repo.upsert(row);
    return this.launch(row, (ctx) =>
      runBuild(
        {
          id,
          contextDir: path.join(this.o.paths.buildDir(id), 'context'),
          dockerfile: parsed,
          dockerfileName,
          imageRef: row.image_ref,
          buildArgs: request.build_args,
          ...(request.target ? { target: request.target } : {}),
          noCache: request.no_cache,
          network: request.network,
          vcpus: request.vcpus,
          memoryMib: request.memory_mib,
        },
        {
          images: this.o.images,
          instances: this.o.instances,
          repo: this.o.repo,
          log: ctx.log,
          signal: ctx.signal,
          output: ctx.output,
          steps: ctx.steps,
          builder: ctx.builder,
        },
      ),
    );
  }

  /**
   * Build a golden image of the catalog (src/core/catalog.ts), or rebuild it.
   * While one is being built, asking again returns that build: two
   * `vessel run -- CMD` on a fresh host share one mmdebstrap.
   */
  async createGolden(
    name: string,
    tags: Readonly<Record<string, string>> = {},
  ): Promise<BuildView> {
    if (this.closed)
      throw new VesselError('conflict', 'the daemon is shutting down; start the build again later');
    const entry = catalogEntry(name);
    if (!entry)
      throw new VesselError(
        'not_found',
        `"${name}" is not in the image catalog (${CATALOG.map((e) => e.name).join(', ')})`,
        { details: { catalog: name } },
      );
    const running = this.catalogBuild(entry.name);
    if (running) return this.view(running);
    const id = newBuildId();
    await fs.mkdir(this.o.paths.buildDir(id), { recursive: true, mode: 0o700 });
    const row: BuildRow = {
      ...this.newRow(id, entry.image, { catalog: entry.name }, tags),
      steps: goldenSteps(entry),
      provenance: { builder: `vessel ${VERSION}`, recipe: { ...entry.recipe } },
    };
    this.o.repo.upsert(row);
    return this.launch(row, (ctx) =>
      buildGolden(entry, {
        images: this.o.images,
        signal: ctx.signal,
        work: path.join(this.o.paths.buildDir(id), 'work'),
        output: ctx.output,
        steps: ctx.steps,
      }),
    );
  }

  /** The queued or running build of catalog entry `name`, if any. */
  private catalogBuild(name: string): BuildRow | undefined {
    for (const id of this.active.keys()) {
      const row = this.o.repo.get(id);
      if (row?.request.catalog === name) return row;
    }
    return undefined;
  }

  /** The catalog with what is local. */
  catalog(): CatalogView[] {
    return CATALOG.map((e) => {
      let image: { status: string; digest: string | null; created_at: string } | undefined;
      try {
        image = this.o.images.get(e.image);
      } catch {
        image = undefined;
      }
      const building = this.catalogBuild(e.name)?.id;
      return {
        name: e.name,
        description: e.description,
        default: e.default,
        image: e.image,
        source: `${e.recipe.tool} ${e.recipe.suite}`,
        packages: [...e.recipe.include],
        local: image?.status === 'ready',
        digest: image?.status === 'ready' ? image.digest : null,
        built_at: image?.status === 'ready' ? image.created_at : null,
        build_id: building ?? null,
      };
    });
  }

  private newRow(
    id: string,
    imageRef: string,
    request: Record<string, unknown>,
    tags: Readonly<Record<string, string>>,
  ): BuildRow {
    return {
      id,
      status: 'queued',
      image_ref: imageRef,
      image_digest: null,
      error: null,
      error_code: null,
      exit_code: null,
      request,
      steps: [],
      provenance: null,
      tags: { ...tags },
      builder_instance_id: null,
      created_at: new Date().toISOString(),
      started_at: null,
      completed_at: null,
      duration_ms: null,
    };
  }

  /** Queue a recorded build; `run` does the work once a slot is free. */
  private launch(row: BuildRow, run: Runner): BuildView {
    const id = row.id;
    const active: Active = {
      abort: new AbortController(),
      events: [],
      topic: new Topic({
        onListenerError: (err) => this.log.error({ err }, 'build listener failed'),
      }),
      seq: 0,
      done: Promise.resolve(),
    };
    this.active.set(id, active);
    this.queue.push(id);
    this.emit(id, { type: 'status', status: 'queued' });
    active.done = this.slots
      .run(() => this.execute(id, run))
      .catch((err: unknown) => this.log.error({ err, build: id }, 'build bookkeeping failed'));
    return this.view(this.o.repo.get(id)!);
  }

  private async execute(id: string, run: Runner): Promise<void> {
    this.queue.splice(this.queue.indexOf(id), 1);
    const active = this.active.get(id)!;
    let row = this.o.repo.get(id)!;
    if (active.abort.signal.aborted)
      return this.finish(id, {
        status: 'cancelled',
        error: 'cancelled while queued',
        error_code: 'cancelled',
      });
    const started = Date.now();
    row = this.update(id, { status: 'building', started_at: new Date(started).toISOString() });
    this.emit(id, { type: 'status', status: 'building' });
    try {
      const result = await run({
        log: this.log.child({ build: id }),
        signal: active.abort.signal,
        output: (line) => this.emit(id, { type: 'log', content: line }),
        steps: (steps) => {
          this.update(id, { steps: steps.map((s) => ({ ...s })) });
          this.emit(id, { type: 'step', steps: steps.map((s) => ({ ...s })) });
        },
        builder: (instanceId) => this.update(id, { builder_instance_id: instanceId }),
      });
      this.emit(id, {
        type: 'log',
        content: `=> built ${row.image_ref} ${result.digest} (${result.ranSteps} steps run, ${result.cachedSteps} cached) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      });
      await this.finish(id, {
        status: 'ready',
        image_digest: result.digest,
        provenance: {
          ...row.provenance,
          ...(result.baseDigest ? { base_image_digest: result.baseDigest } : {}),
          timestamp: new Date().toISOString(),
          steps_run: result.ranSteps,
          steps_cached: result.cachedSteps,
        },
      });
    } catch (err) {
      const cancelled = active.abort.signal.aborted;
      const e = toVesselError(err, `build ${id}`);
      this.emit(id, { type: 'log', content: `ERROR: ${e.message}` });
      await this.finish(id, {
        status: cancelled ? 'cancelled' : 'failed',
        error: cancelled ? 'the build was cancelled' : e.message,
        error_code: cancelled ? 'cancelled' : e.code,
        exit_code: err instanceof StepFailed ? err.exitCode : null,
      });
    }
  }

  private async finish(id: string, patch: Partial<BuildRow>): Promise<void> {
    const row = this.o.repo.get(id);
    if (!row) return;
    const now = Date.now();
    this.update(id, {
      ...patch,
      builder_instance_id: null,
      completed_at: new Date(now).toISOString(),
      duration_ms: row.started_at ? now - Date.parse(row.started_at) : null,
    });
    if (patch.status) this.emit(id, { type: 'status', status: patch.status });
    const active = this.active.get(id);
    this.active.delete(id);
    if (!active) return;
    const file = path.join(this.o.paths.buildDir(id), 'events.jsonl');
    await fs
      .writeFile(file, active.events.map((e) => JSON.stringify(e)).join('\n') + '\n', {
        mode: 0o600,
      })
      .catch((err: unknown) => this.log.warn({ err, build: id }, 'could not save build events'));
    for (const d of ['context', 'work'])
      await fs.rm(path.join(this.o.paths.buildDir(id), d), { recursive: true, force: true });
  }

  private update(id: string, patch: Partial<BuildRow>): BuildRow {
    const row = { ...this.o.repo.get(id)!, ...patch };
    this.o.repo.upsert(row);
    return row;
  }

  private emit(id: string, e: Omit<BuildEvent, 'seq' | 'timestamp'>): void {
    const active = this.active.get(id);
    if (!active) return;
    const event: BuildEvent = { ...e, seq: ++active.seq, timestamp: new Date().toISOString() };
    active.events.push(event);
    if (active.events.length > MAX_EVENTS)
      active.events.splice(0, active.events.length - MAX_EVENTS);
    active.topic.publish(event);
  }

  list(): BuildView[] {
    return this.o.repo.list().map((r) => this.view(r));
  }

  get(id: string): BuildView {
    return this.view(this.row(id));
  }

  private row(id: string): BuildRow {
    const row = this.o.repo.get(id);
    if (!row)
      throw new VesselError('not_found', `build "${id}" not found`, { details: { build: id } });
    return row;
  }

  private view(row: BuildRow): BuildView {
    const pos = this.queue.indexOf(row.id);
    return {
      id: row.id,
      status: row.status,
      tags: row.tags,
      queue_position: row.status === 'queued' && pos >= 0 ? pos + 1 : null,
      image_ref: row.image_ref,
      image_digest: row.image_digest,
      error: row.error,
      error_code: row.error_code,
      exit_code: row.exit_code,
      provenance: row.provenance ?? {},
      steps: row.steps,
      created_at: row.created_at,
      started_at: row.started_at,
      completed_at: row.completed_at,
      duration_ms: row.duration_ms,
      builder_instance_id: row.builder_instance_id,
    };
  }

  /**
   * The build's events from the first, then live until it ends: `onEvent`
   * gets each once, in order; `onEnd` when the build is over. Returns the
   * unsubscribe function.
   */
  async follow(
    id: string,
    onEvent: (e: BuildEvent) => void,
    onEnd: () => void,
    options: { live?: boolean } = {},
  ): Promise<() => void> {
    this.row(id);
    const active = this.active.get(id);
    if (active && options.live === false) {
      // hypeman's follow=false: what happened so far, then the end.
      for (const e of [...active.events]) onEvent(e);
      queueMicrotask(onEnd);
      return () => undefined;
    }
    if (active) {
      // Snapshot and subscribe in one turn: nothing can be missed or repeated.
      const past = [...active.events];
      let ended = false;
      const unsubscribe = active.topic.subscribe((e) => {
        if (ended) return;
        onEvent(e);
        if (e.type === 'status' && e.status && TERMINAL.has(e.status)) {
          ended = true;
          queueMicrotask(onEnd);
        }
      });
      for (const e of past) onEvent(e);
      return unsubscribe;
    }
    const text = await fs
      .readFile(path.join(this.o.paths.buildDir(id), 'events.jsonl'), 'utf8')
      .catch(() => '');
    for (const line of text.split('\n')) if (line) onEvent(JSON.parse(line) as BuildEvent);
    queueMicrotask(onEnd);
    return () => undefined;
  }

  /** Cancel a queued or running build (its builder VM is removed), or delete a finished one's record. */
  async delete(id: string): Promise<BuildView> {
    const row = this.row(id);
    const active = this.active.get(id);
    if (active) {
      active.abort.abort();
      this.emit(id, { type: 'log', content: 'cancel requested: stopping the builder VM' });
      await active.done;
      return this.get(id);
    }
    this.o.repo.delete(id);
    await fs.rm(this.o.paths.buildDir(id), { recursive: true, force: true });
    return this.view({ ...row });
  }

  /** Stop running builds (their builder VMs go); their records say why. */
  async shutdown(): Promise<void> {
    this.closed = true;
    const running = [...this.active.values()];
    for (const a of running) a.abort.abort();
    await Promise.all(running.map((a) => a.done));
  }

  /** Counts by status (for /resources and the web UI). */
  summary(): Record<BuildStatus, number> {
    const out: Record<BuildStatus, number> = {
      queued: 0,
      building: 0,
      pushing: 0,
      ready: 0,
      failed: 0,
      cancelled: 0,
    };
    for (const r of this.o.repo.list()) out[r.status]++;
    return out;
  }
}

/** A file of the context by relative name; names leaving the context are refused. */
async function readInContext(dir: string, name: string): Promise<string> {
  const rel = path.posix.normalize(name.replace(/^\/+/, ''));
  if (rel === '..' || rel.startsWith('../'))
    throw new VesselError('invalid_argument', `Dockerfile "${name}" is outside the build context`);
  const file = path.join(dir, rel);
  const real = await fs.realpath(file).catch(() => undefined);
  if (real === undefined)
    throw new VesselError('invalid_argument', `no ${name} in the build context`);
  const root = await fs.realpath(dir);
  if (!real.startsWith(`${root}/`))
    throw new VesselError('invalid_argument', `Dockerfile "${name}" is outside the build context`);
  return fs.readFile(real, 'utf8');
}
