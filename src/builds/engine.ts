/**
 * One build, start to end: parse the Dockerfile, walk the stages the target
 * needs, and turn each instruction into a config change or a layer. COPY and
 * ADD layers are written on the host from the context; RUN steps run in a
 * builder microVM (a normal, confined instance booted from the stage's
 * current image with no main command) and their layer is the guest's overlay
 * upper directory, read by the guest program (DIFF). Every step that makes a
 * layer goes through the step cache first. See src/builds/README.md.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { catalogEntry } from '../core/catalog.js';
import { VesselError, isVesselError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { hostPlatform, type ImageManager } from '../images/index.js';
import type { Descriptor } from '../images/manifest.js';
import { applyLayer, openLayerStream } from '../images/unpack/index.js';
import type { InstanceManager } from '../instances/index.js';
import type { BuildsRepo, BuildStepRecord } from '../store/index.js';
import { parseChmod, parseChown } from './chown-chmod.js';
import { writeCopyLayer } from './copy-layer.js';
import { planCopy } from './copy-plan.js';
import { resolveInImage } from './image-paths.js';
import { parseDockerignore, type Matcher } from '../core/dockerignore.js';
import {
  expand,
  normalisePorts,
  stageByRef,
  type ParsedDockerfile,
  type Stage,
  type Step,
} from './dockerfile.js';
import { indexLayer, lowerLookup, type LayerIndex } from './lower-index.js';
import { cloneConfig, envMap, readOciConfig, setEnv, type OciConfig } from './oci-config.js';

/** Media type of the layers a build writes: plain tar, so diff_id = digest. */
export const LAYER_MEDIA_TYPE = 'application/vnd.oci.image.layer.v1.tar';
/** Files the guest writes for itself at boot: never part of a RUN's layer (Docker's rule too). */
export const DIFF_EXCLUDES = ['etc/hosts', 'etc/resolv.conf', 'etc/hostname'];
/** Intermediate images (a stage's state before a RUN) live under this registry name. */
export const INTERMEDIATE_REGISTRY = 'vessel-build.local';
const EPOCH = '1970-01-01T00:00:00Z';
/** Output lines of a failing RUN kept for the error. */
const TAIL_LINES = 20;

export interface BuildSpec {
  readonly id: string;
  readonly contextDir: string;
  /** The Dockerfile, parsed (and so checked) when the build was accepted. */
  readonly dockerfile: ParsedDockerfile;
  readonly dockerfileName: string;
  readonly imageRef: string;
  readonly buildArgs: Readonly<Record<string, string>>;
  readonly target?: string;
  readonly noCache: boolean;
  readonly network: 'none' | 'egress';
  readonly vcpus: number;
  readonly memoryMib: number;
}

export interface BuildDeps {
  readonly images: ImageManager;
  readonly instances: InstanceManager;
  readonly repo: BuildsRepo;
  readonly log: Logger;
  readonly signal: AbortSignal;
  /** A line of build output (step headers, RUN output). */
  readonly output: (line: string) => void;
  /** The step list is known (after parsing) or one step changed. */
  readonly steps: (steps: BuildStepRecord[]) => void;
  readonly builder: (instanceId: string | null) => void;
}

export interface BuildResult {
  readonly digest: string;
  readonly baseDigest: string | null;
  readonly cachedSteps: number;
  readonly ranSteps: number;
}

/** A failing RUN: its exit code and last lines travel with the build's error. */
export class StepFailed extends VesselError {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super('build_failed', message, { details: { exit_code: exitCode } });
    this.exitCode = exitCode;
  }
}

interface Accounts {
  user(name: string): number | undefined;
  group(name: string): number | undefined;
}

interface StageState {
  /** Cache chain key: everything that determined this state. */
  key: string;
  /**
   * When the newest step of this state first ran (the base image's time at
   * first): history and the config's `created` use it, so a fully cached
   * rebuild makes a byte-identical image (same digest, no disk conversion).
   */
  time: string;
  config: OciConfig;
  layers: Descriptor[];
  /** An image in the store holding exactly this state (made before a RUN). */
  image?: string;
  /** The stage's root unpacked on the host, for COPY --from (made on demand). */
  rootDir?: string;
}

const h = (...parts: string[]): string => {
  const hash = createHash('sha256');
  for (const p of parts) hash.update(`${p.length}:${p}`);
  return hash.digest('hex');
};

export async function runBuild(spec: BuildSpec, deps: BuildDeps): Promise<BuildResult> {
  return new Build(spec, deps).run();
}

class Build {
  private readonly spec: BuildSpec;
  private readonly deps: BuildDeps;
  private readonly work: string;
  private readonly intermediates: string[] = [];
  private readonly records: BuildStepRecord[] = [];
  private cached = 0;
  private ran = 0;
  private runCount = 0;
  private baseDigest: string | null = null;
  private ignore: Matcher | undefined;

  constructor(spec: BuildSpec, deps: BuildDeps) {
    this.spec = spec;
    this.deps = deps;
    this.work = path.join(path.dirname(spec.contextDir), 'work');
  }

  async run(): Promise<BuildResult> {
    const parsed = this.spec.dockerfile;
    const dockerignore = await fs
      .readFile(path.join(this.spec.contextDir, '.dockerignore'), 'utf8')
      .catch(() => undefined);
    if (dockerignore !== undefined) this.ignore = parseDockerignore(dockerignore);
    const target =
      this.spec.target === undefined
        ? parsed.stages.length - 1
        : stageByRef(parsed, this.spec.target);
    if (target === undefined)
      throw new VesselError(
        'invalid_argument',
        `target stage "${this.spec.target}" is not in ${this.spec.dockerfileName}`,
      );
    const globalArgs = new Map<string, string>();
    for (const a of parsed.globalArgs) {
      const v = this.spec.buildArgs[a.name] ?? a.default;
      if (v !== undefined) globalArgs.set(a.name, v);
    }
    const needed = neededStages(parsed, target);
    for (const s of parsed.stages) {
      if (!needed.has(s.index)) continue;
      this.records.push(
        record(s.index, s.fromLine, `FROM ${s.from}${s.name ? ` AS ${s.name}` : ''}`),
      );
      for (const step of s.steps) this.records.push(record(s.index, step.line, step.text));
    }
    this.deps.steps(this.records);
    await fs.mkdir(this.work, { recursive: true, mode: 0o700 });
    const states = new Map<number, StageState>();
    try {
      let cursor = 0;
      let final: StageState | undefined;
      for (const stage of parsed.stages) {
        if (!needed.has(stage.index)) continue;
        const state = await this.stage(stage, target, cursor, globalArgs, states, parsed);
        cursor += stage.steps.length + 1;
        states.set(stage.index, state);
        if (stage.index === target) final = state;
      }
      if (!final) throw new VesselError('internal', 'target stage was not built');
      this.check();
      this.deps.output(`=> exporting image ${this.spec.imageRef}`);
      const config: OciConfig = { ...final.config, created: final.time };
      await this.deps.images.commit(this.spec.imageRef, {
        config: Buffer.from(JSON.stringify(config)),
        layers: final.layers,
      });
      const image = await this.deps.images.waitForReady(this.spec.imageRef, {
        signal: this.deps.signal,
      });
      return {
        digest: image.digest!,
        baseDigest: this.baseDigest,
        cachedSteps: this.cached,
        ranSteps: this.ran,
      };
    } finally {
      await this.cleanup();
    }
  }

  private check(): void {
    if (this.deps.signal.aborted) throw new VesselError('cancelled', 'the build was cancelled');
  }

  private mark(index: number, patch: Partial<BuildStepRecord>): void {
    Object.assign(this.records[index]!, patch);
    this.deps.steps(this.records);
  }

  private async stage(
    stage: Stage,
    target: number,
    first: number,
    globalArgs: ReadonlyMap<string, string>,
    states: ReadonlyMap<number, StageState>,
    parsed: ParsedDockerfile,
  ): Promise<StageState> {
    this.check();
    const total = this.records.length;
    const from = expand(stage.from, (n) => globalArgs.get(n), { escape: parsed.escape });
    this.deps.output(`=> [${first + 1}/${total}] FROM ${from}`);
    const started = Date.now();
    const fromStage = stageByRef(parsed, from, { before: stage.index, byIndex: false });
    let state: StageState;
    if (fromStage !== undefined) {
      const src = states.get(fromStage)!;
      state = {
        key: src.key,
        time: src.time,
        config: cloneConfig(src.config),
        layers: [...src.layers],
      };
      if (src.image) state.image = src.image;
    } else {
      state = await this.baseImage(from);
      if (stage.index === target && state.key.startsWith('base:'))
        this.baseDigest = state.key.slice(5);
    }
    this.mark(first, { status: 'done', duration_ms: Date.now() - started });
    const args = new Map<string, string>();
    for (const [i, step] of stage.steps.entries()) {
      this.check();
      const index = first + 1 + i;
      this.deps.output(`=> [${index + 1}/${total}] ${step.text}`);
      const t0 = Date.now();
      this.mark(index, { status: 'running' });
      try {
        const how = await this.step(step, state, args, globalArgs, states, parsed, index);
        this.mark(index, { status: how, duration_ms: Date.now() - t0 });
        if (how === 'cached') this.deps.output('   CACHED');
      } catch (err) {
        this.mark(index, { status: 'failed', duration_ms: Date.now() - t0 });
        if (isVesselError(err) && !(err instanceof StepFailed) && err.code !== 'cancelled')
          err.message = `${this.spec.dockerfileName} line ${step.line} (${step.text}): ${err.message}`;
        throw err;
      }
    }
    return state;
  }

  /** Execute one instruction on `state`; says whether it came from the cache. */
  private async step(
    step: Step,
    state: StageState,
    args: Map<string, string>,
    globalArgs: ReadonlyMap<string, string>,
    states: ReadonlyMap<number, StageState>,
    parsed: ParsedDockerfile,
    index: number,
  ): Promise<'done' | 'cached'> {
    const cfg = state.config;
    const env = envMap(cfg);
    const lookup = (n: string): string | undefined => env.get(n) ?? args.get(n);
    const x = (w: string): string => expand(w, lookup, { escape: parsed.escape });
    const configOnly = (created: string): 'done' => {
      // The files are unchanged: an image made for an earlier RUN still serves as the root.
      state.key = h(state.key, created);
      cfg.history.push({ created: state.time, created_by: created, empty_layer: true });
      return 'done';
    };
    switch (step.kind) {
      case 'ENV': {
        // As in Docker, every value sees the environment from before this ENV.
        const pairs = step.pairs.map(([k, v]) => [k, x(v)] as const);
        setEnv(cfg, pairs);
        return configOnly(`ENV ${pairs.map(([k, v]) => `${k}=${v}`).join(' ')}`);
      }
      case 'ARG': {
        const v =
          this.spec.buildArgs[step.name] ??
          globalArgs.get(step.name) ??
          (step.default === undefined ? undefined : x(step.default));
        if (v !== undefined) args.set(step.name, v);
        // An ARG's value changes what later RUNs see: it is part of the chain.
        state.key = h(state.key, 'ARG', step.name, v ?? '\0');
        return 'done';
      }
      case 'WORKDIR': {
        const p = x(step.path);
        cfg.config.WorkingDir = path.posix.resolve(cfg.config.WorkingDir || '/', p);
        return this.workdir(state, cfg.config.WorkingDir, step.text, configOnly);
      }
      case 'USER':
        cfg.config.User = x(step.user);
        return configOnly(`USER ${cfg.config.User}`);
      case 'ENTRYPOINT':
        cfg.config.Entrypoint = step.shell ? ['/bin/sh', '-c', step.args[0] ?? ''] : [...step.args];
        // Docker: a new ENTRYPOINT drops the CMD inherited from the base.
        if (!this.cmdSet.has(state)) cfg.config.Cmd = null;
        return configOnly(step.text);
      case 'CMD':
        cfg.config.Cmd = step.shell ? ['/bin/sh', '-c', step.args[0] ?? ''] : [...step.args];
        this.cmdSet.add(state);
        return configOnly(step.text);
      case 'EXPOSE': {
        const ports = { ...(cfg.config.ExposedPorts ?? {}) };
        for (const p of step.ports) for (const k of normalisePorts(x(p))) ports[k] = {};
        cfg.config.ExposedPorts = ports;
        return configOnly(`EXPOSE ${Object.keys(ports).join(' ')}`);
      }
      case 'LABEL': {
        const labels = { ...(cfg.config.Labels ?? {}) };
        for (const [k, v] of step.pairs) labels[x(k)] = x(v);
        cfg.config.Labels = labels;
        return configOnly(step.text);
      }
      case 'COPY':
      case 'ADD':
        return this.copy(step, state, x, states, parsed, index);
      case 'RUN':
        return this.runStep(step, state, args, index);
    }
  }

  /**
   * WORKDIR creates its directory (and missing parents) even when no RUN
   * uses it, owned by the current USER, as Docker does: a small layer through
   * the step cache. A directory the image already has changes nothing.
   */
  private async workdir(
    state: StageState,
    dir: string,
    text: string,
    configOnly: (created: string) => 'done',
  ): Promise<'done' | 'cached'> {
    const lower = await this.lowerOf(state);
    // Through the image's symlinks: WORKDIR /var/run/app on Debian is /run/app.
    const real = `/${resolveInImage(lower, dir)}`;
    const missing: string[] = [];
    for (let p = real; p !== '/'; p = path.posix.dirname(p)) {
      const have = lower(p);
      if (have?.isDir) break;
      if (have)
        throw new VesselError('invalid_argument', `WORKDIR ${dir}: ${p} is a file in the image`);
      missing.unshift(p.slice(1));
    }
    if (missing.length === 0) return configOnly(`WORKDIR ${dir}`);
    // Owned by the USER, resolved like --chown (a bare uid gets gid = uid), as buildah does.
    const user = state.config.config.User ?? '';
    const owner = user === '' ? { uid: 0, gid: 0 } : parseChown(user, await this.accounts(state));
    const key = h(state.key, 'WORKDIR', real, `${owner.uid}:${owner.gid}`);
    return this.layerStep(state, key, text, () => {
      const pack = tar.pack();
      for (const name of missing)
        pack.entry({ name, type: 'directory', mode: 0o755, uid: owner.uid, gid: owner.gid });
      pack.finalize();
      return this.storeLayer(Readable.from(pack as AsyncIterable<Buffer>));
    });
  }

  /** A step that makes a layer, through the cache: a hit is reused, else `make` runs. */
  private async layerStep(
    state: StageState,
    key: string,
    text: string,
    make: () => Promise<Descriptor | null>,
  ): Promise<'done' | 'cached'> {
    const hit = this.spec.noCache ? undefined : await this.cacheHit(key);
    if (hit !== undefined) {
      this.cached++;
      this.addLayer(state, key, hit, text);
      return 'cached';
    }
    const layer = await make();
    this.deps.repo.cachePut({
      created_at: this.stamp(key),
      key,
      layer_digest: layer?.digest ?? null,
      layer_size: layer?.size ?? null,
    });
    this.ran++;
    this.addLayer(state, key, layer, text);
    return 'done';
  }

  /** Stages whose CMD was set in this build (an ENTRYPOINT then keeps it). */
  private readonly cmdSet = new WeakSet<StageState>();

  private async baseImage(ref: string): Promise<StageState> {
    if (ref === 'scratch') {
      return {
        key: 'scratch',
        time: EPOCH,
        config: {
          architecture: hostPlatform().architecture,
          os: 'linux',
          config: {},
          rootfs: { type: 'layers', diff_ids: [] },
          history: [],
        },
        layers: [],
      };
    }
    const images = this.deps.images;
    // FROM debian-bookworm: the catalog's image, which is built, never pulled.
    const golden = catalogEntry(ref);
    if (golden) ref = golden.image;
    let name: string;
    try {
      const img = images.get(ref);
      name = img.name;
      if (img.status !== 'ready') await images.waitForReady(name, { signal: this.deps.signal });
    } catch (err) {
      if (!isVesselError(err, 'image_not_found')) throw err;
      if (golden)
        throw new VesselError(
          'image_not_found',
          `${golden.name} is a catalog image that is not built yet: run \`vessel image catalog build ${golden.name}\` first`,
        );
      this.deps.output(`   pulling ${ref}`);
      name = images.pull(ref).name;
      await images.waitForReady(name, { signal: this.deps.signal });
    }
    const c = await images.contents(name);
    const config = readOciConfig(c.config, `image ${c.name}`);
    return {
      key: `base:${c.digest}`,
      time: config.created && !Number.isNaN(Date.parse(config.created)) ? config.created : EPOCH,
      config,
      layers: c.layers,
      image: c.name,
    };
  }

  private async copy(
    step: Extract<Step, { kind: 'COPY' | 'ADD' }>,
    state: StageState,
    x: (w: string) => string,
    states: ReadonlyMap<number, StageState>,
    parsed: ParsedDockerfile,
    index: number,
  ): Promise<'done' | 'cached'> {
    let root = this.spec.contextDir;
    let ignore = this.ignore;
    let fromKey = 'context';
    let rootLabel: string | undefined;
    if (step.from !== undefined) {
      const ref = x(step.from);
      rootLabel = `stage or image ${JSON.stringify(ref)}`;
      const si = stageByRef(parsed, ref);
      const src = si === undefined ? await this.baseImage(ref) : states.get(si);
      if (!src)
        throw new VesselError(
          'invalid_argument',
          `--from=${ref}: that stage is not built before this step`,
        );
      root = await this.unpacked(src, `from-${index}`);
      ignore = undefined;
      fromKey = src.key;
    }
    const cfg = state.config;
    const lower = await this.lowerOf(state);
    const plan = await planCopy({
      existing: lower,
      root,
      sources: step.sources.map(x),
      dest: x(step.dest),
      workdir: cfg.config.WorkingDir || '/',
      ...(ignore ? { ignore } : {}),
      ...(rootLabel ? { rootLabel } : {}),
      allowTarExtract: step.kind === 'ADD',
    });
    for (const w of plan.warnings) this.deps.output(`   warning: ${w}`);
    const chown = step.chown === undefined ? '' : x(step.chown);
    const chmod = step.chmod === undefined ? undefined : parseChmod(x(step.chmod));
    const key = h(
      state.key,
      step.kind,
      step.text,
      fromKey,
      plan.contentHash,
      chown,
      chmod === undefined ? '' : chmod.toString(8),
    );
    return this.layerStep(state, key, step.text, async () => {
      const owner =
        chown === '' ? { uid: 0, gid: 0 } : parseChown(chown, await this.accounts(state));
      // Written straight into the blob store (and its check): no temporary copy.
      const out = new PassThrough();
      // Either side failing ends the other: the writer's stream is destroyed.
      const stop = (err: unknown): never => {
        out.destroy(err as Error);
        throw err;
      };
      const [layer, written] = await Promise.all([
        this.storeLayer(out).catch(stop),
        writeCopyLayer(
          plan,
          {
            ...owner,
            ...(chmod === undefined ? {} : { chmod }),
            maxBytes: this.deps.images.maxUnpackedBytes,
          },
          out,
        ).catch(stop),
      ]);
      for (const w of written.warnings) this.deps.output(`   warning: ${w}`);
      return layer;
    });
  }

  private async runStep(
    step: Extract<Step, { kind: 'RUN' }>,
    state: StageState,
    args: ReadonlyMap<string, string>,
    index: number,
  ): Promise<'done' | 'cached'> {
    const cfg = state.config;
    const argv = step.shell ? ['/bin/sh', '-c', step.args[0] ?? ''] : [...step.args];
    // ARG values reach the command as env; ENV wins over an ARG of the same name.
    const env = envMap(cfg);
    const runEnv = new Map(args);
    for (const [k, v] of env) runEnv.set(k, v);
    const argsKey = [...args].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${v}`);
    const key = h(state.key, 'RUN', JSON.stringify(argv), argsKey.join('\0'), this.spec.network);
    return this.layerStep(state, key, step.text, async () =>
      this.inBuilder(await this.ensureImage(state, index), cfg, async (id) => {
        const session = await this.deps.instances.exec(id, {
          argv,
          env: [...runEnv].map(([k, v]) => `${k}=${v}`),
          cwd: cfg.config.WorkingDir || '/',
          user: cfg.config.User || '0:0',
        });
        session.stdin.end();
        const tail: string[] = [];
        const pump = (s: Readable): Promise<void> =>
          lines(s, (line) => {
            this.deps.output(`   ${line}`);
            tail.push(line);
            if (tail.length > TAIL_LINES) tail.shift();
          });
        const [status] = await Promise.all([
          session.result,
          pump(session.stdout),
          pump(session.stderr),
        ]);
        const code = status.code ?? 128 + (status.signal ?? 0);
        if (code !== 0) {
          throw new StepFailed(
            `${this.spec.dockerfileName} line ${step.line}: "${step.text}" exited with code ${code}` +
              (tail.length > 0 ? `; last output:\n${tail.join('\n')}` : ''),
            code,
          );
        }
        this.check();
        return this.storeLayer(this.deps.instances.diff(id, DIFF_EXCLUDES));
      }),
    );
  }

  /** Boot a builder VM from `image`, run `fn` in it, and always remove it. */
  private async inBuilder<T>(
    image: string,
    cfg: OciConfig,
    fn: (instanceId: string) => Promise<T>,
  ): Promise<T> {
    const instances = this.deps.instances;
    const n = ++this.runCount;
    const inst = await instances.create({
      image,
      name: `${this.spec.id}-${n}`,
      agent: true,
      vcpus: this.spec.vcpus,
      memory_mib: this.spec.memoryMib,
      workdir: cfg.config.WorkingDir || '/',
      tags: { 'vessel.build': this.spec.id },
      ...(this.spec.network === 'egress' ? { network: { egress: true } } : {}),
    });
    this.deps.builder(inst.id);
    const onAbort = (): void => {
      void instances.delete(inst.id).catch(() => undefined);
    };
    this.deps.signal.addEventListener('abort', onAbort, { once: true });
    try {
      const w = await instances.waitForState(inst.id, 'Running', 300_000);
      if (w.state !== 'Running') {
        const row = instances.get(inst.id);
        throw new VesselError(
          'build_failed',
          `the builder VM did not start (${w.timed_out ? 'timed out' : row.state}${row.state_error ? `: ${row.state_error}` : ''})`,
        );
      }
      return await fn(inst.id);
    } catch (err) {
      if (this.deps.signal.aborted) throw new VesselError('cancelled', 'the build was cancelled');
      throw err;
    } finally {
      this.deps.signal.removeEventListener('abort', onAbort);
      this.deps.builder(null);
      await instances.delete(inst.id).catch((err: unknown) => {
        if (!isVesselError(err, 'not_found'))
          this.deps.log.warn({ err, instance: inst.id }, 'could not remove a builder VM');
      });
    }
  }

  /** An image in the store with exactly `state`'s layers and config (a RUN boots it). */
  private async ensureImage(state: StageState, index: number): Promise<string> {
    if (state.image) return state.image;
    const name = `${INTERMEDIATE_REGISTRY}/${this.spec.id}:step-${index}`;
    this.intermediates.push(name);
    await this.deps.images.commit(name, {
      config: Buffer.from(JSON.stringify(state.config)),
      layers: state.layers,
    });
    await this.deps.images.waitForReady(name, { signal: this.deps.signal });
    state.image = name;
    return name;
  }

  private addLayer(state: StageState, key: string, layer: Descriptor | null, text: string): void {
    state.key = key;
    state.time = this.stamps.get(key) ?? new Date().toISOString();
    delete state.image;
    delete state.rootDir;
    const entry = { created: state.time, created_by: text };
    if (layer) {
      state.layers.push(layer);
      state.config.rootfs.diff_ids.push(layer.digest);
      state.config.history.push(entry);
    } else {
      state.config.history.push({ ...entry, empty_layer: true });
    }
  }

  /** When each cached step first ran, by cache key. */
  private readonly stamps = new Map<string, string>();

  /** Now, as the time of the step `key` (its layer's history and the cache entry). */
  private stamp(key: string): string {
    const now = new Date().toISOString();
    this.stamps.set(key, now);
    return now;
  }

  /** A cached step's layer (null: it changed nothing), if its blob is still here. */
  private async cacheHit(key: string): Promise<Descriptor | null | undefined> {
    const hit = this.deps.repo.cacheGet(key);
    if (!hit) return undefined;
    if (hit.created_at) this.stamps.set(key, hit.created_at);
    if (hit.layer_digest === null) return null;
    if (!(await this.deps.images.blobs.has(hit.layer_digest))) {
      this.deps.repo.cacheDrop(key);
      return undefined;
    }
    return { mediaType: LAYER_MEDIA_TYPE, digest: hit.layer_digest, size: hit.layer_size ?? 0 };
  }

  /**
   * Store a layer tar (from the guest: hostile) after checking every entry
   * name; an archive with no entries is no layer at all.
   */
  private async storeLayer(source: Readable): Promise<Descriptor | null> {
    // One pass: the bytes go to the blob store and through the check together.
    const toStore = new PassThrough();
    const toCheck = new PassThrough();
    source.once('error', (err) => {
      toStore.destroy(err);
      toCheck.destroy(err);
    });
    source.pipe(toStore);
    source.pipe(toCheck);
    const [{ digest, size }, entries] = await Promise.all([
      this.deps.images.blobs.adopt(toStore),
      checkLayer(toCheck),
    ]);
    if (entries === 0) return null;
    return { mediaType: LAYER_MEDIA_TYPE, digest, size };
  }

  private readonly indexes = new Map<string, Promise<LayerIndex>>();

  /** What `state`'s image has at a path (COPY destinations, WORKDIR). */
  private async lowerOf(state: StageState): Promise<ReturnType<typeof lowerLookup>> {
    return lowerLookup(await Promise.all(state.layers.map((l) => this.layerIndex(l.digest))));
  }

  /** A layer's names and metadata (read once per build). */
  private layerIndex(digest: string): Promise<LayerIndex> {
    let index = this.indexes.get(digest);
    if (!index) {
      index = openLayerStream(this.deps.images.blobs.open(digest)).then(indexLayer);
      this.indexes.set(digest, index);
    }
    return index;
  }

  /** `state`'s root filesystem unpacked on the host (COPY --from), with the image applier. */
  private async unpacked(state: StageState, name: string): Promise<string> {
    if (state.rootDir) return state.rootDir;
    const dir = path.join(this.work, name);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    for (const l of state.layers) {
      await applyLayer(this.deps.images.blobs.open(l.digest), {
        rootfs: dir,
        maxBytes: this.deps.images.maxUnpackedBytes,
        canChown: process.getuid?.() === 0,
      });
    }
    state.rootDir = dir;
    return dir;
  }

  private readonly accountsByKey = new Map<string, Promise<Accounts>>();

  /**
   * Users and groups of `state`'s /etc/passwd and /etc/group (COPY --chown=name,
   * WORKDIR after USER), read from the layers once per state.
   */
  private accounts(state: StageState): Promise<Accounts> {
    let found = this.accountsByKey.get(state.key);
    if (!found) {
      found = this.etcFiles(state, ['etc/passwd', 'etc/group']).then((files) => {
        const table = (text: string): Map<string, number> => {
          const m = new Map<string, number>();
          for (const line of text.split('\n')) {
            const f = line.split(':');
            const id = Number(f[2]);
            if (f[0] && f[2] && Number.isInteger(id)) m.set(f[0], id);
          }
          return m;
        };
        const users = table(files.get('etc/passwd') ?? '');
        const groups = table(files.get('etc/group') ?? '');
        return { user: (n) => users.get(n), group: (n) => groups.get(n) };
      });
      this.accountsByKey.set(state.key, found);
    }
    return found;
  }

  /** The current text of small files in `state`'s layers (newest layer first, one pass each). */
  private async etcFiles(state: StageState, files: string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const wanted = new Set(files);
    for (const l of [...state.layers].reverse()) {
      if (wanted.size === 0) break;
      const found = await findInLayer(this.deps.images.blobs.open(l.digest), wanted);
      for (const [file, text] of found) {
        wanted.delete(file);
        if (text !== null) out.set(file, text);
      }
    }
    return out;
  }

  private async cleanup(): Promise<void> {
    for (const name of this.intermediates) {
      await this.deps.images.delete(name).catch((err: unknown) => {
        if (!isVesselError(err, 'image_not_found'))
          this.deps.log.warn({ err, image: name }, 'could not remove an intermediate image');
      });
    }
    await fs.rm(this.work, { recursive: true, force: true, maxRetries: 3 });
  }
}

function record(stage: number, line: number, text: string): BuildStepRecord {
  return { stage, line, text, status: 'pending', duration_ms: null };
}

/**
 * The stages the target depends on (FROM an earlier stage, COPY --from). A
 * reference that uses a variable cannot be resolved before the build runs:
 * then every earlier stage is built, as Docker's classic builder does.
 */
function neededStages(parsed: ParsedDockerfile, target: number): Set<number> {
  const needed = new Set<number>();
  const visit = (i: number): void => {
    if (needed.has(i)) return;
    needed.add(i);
    const s = parsed.stages[i]!;
    const refs: { ref: string; byIndex: boolean }[] = [{ ref: s.from, byIndex: false }];
    for (const step of s.steps) {
      if ((step.kind === 'COPY' || step.kind === 'ADD') && step.from !== undefined)
        refs.push({ ref: step.from, byIndex: true });
    }
    for (const { ref, byIndex } of refs) {
      if (ref.includes('$')) {
        for (let j = 0; j < i; j++) visit(j);
        continue;
      }
      const d = stageByRef(parsed, ref, { before: i, byIndex });
      if (d !== undefined) visit(d);
    }
  };
  visit(target);
  return needed;
}

/** Split a byte stream into lines (UTF-8, invalid bytes replaced), for logs only. */
async function lines(stream: Readable, onLine: (line: string) => void): Promise<void> {
  let rest = '';
  for await (const chunk of stream) {
    rest += (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      onLine(rest.slice(0, nl).replace(/\r$/, ''));
      rest = rest.slice(nl + 1);
    }
    if (rest.length > 64 * 1024) {
      onLine(rest);
      rest = '';
    }
  }
  if (rest.length > 0) onLine(rest);
}

/** Count a layer's entries, refusing names no layer may carry. */
export async function checkLayer(stream: Readable): Promise<number> {
  const extract = tar.extract();
  let count = 0;
  const done = (async () => {
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^\.\//, '');
      if (name.startsWith('/') || name.split('/').some((p) => p === '..'))
        throw new VesselError(
          'unsafe_layer',
          `the builder's layer has an unsafe entry "${entry.header.name}"`,
        );
      count++;
      entry.resume();
    }
  })();
  await Promise.all([pipeline(stream, extract), done]);
  return count;
}

/**
 * The content of each `wanted` file this layer has (null: deleted here, by a
 * whiteout or an opaque parent); files it does not touch are absent.
 */
async function findInLayer(
  blob: Readable,
  wanted: ReadonlySet<string>,
): Promise<Map<string, string | null>> {
  const found = new Map<string, string | null>();
  const extract = tar.extract();
  const done = (async () => {
    for await (const entry of extract) {
      const name = entry.header.name.replace(/^\.?\//, '');
      if (wanted.has(name) && entry.header.type === 'file') {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of entry) {
          size += (c as Buffer).length;
          if (size <= 1 << 20) chunks.push(c as Buffer);
        }
        found.set(name, Buffer.concat(chunks).toString('utf8'));
        continue;
      }
      const slash = name.lastIndexOf('/');
      const dir = name.slice(0, slash + 1);
      const base = name.slice(slash + 1);
      if (base.startsWith('.wh.')) {
        // `.wh..wh..opq` hides what lower layers have in `dir`; `.wh.X` deletes dir/X and below.
        const gone = base === '.wh..wh..opq' ? dir : `${dir}${base.slice(4)}`;
        for (const file of wanted)
          if (
            !found.has(file) &&
            (file === gone ||
              file.startsWith(gone.endsWith('/') || gone === '' ? gone : `${gone}/`))
          )
            found.set(file, null);
      }
      entry.resume();
    }
  })();
  await Promise.all([pipeline(await openLayerStream(blob), extract), done]);
  return found;
}

export function newBuildId(): string {
  return `build-${randomBytes(6).toString('hex')}`;
}
