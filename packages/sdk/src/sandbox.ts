import { Sessions } from './sessions.js';
import type { CreateInstanceRequest, Instance, LifecycleEvent } from '../../../src/client/index.js';
import { VesselError, isVesselError } from '../../../src/core/errors.js';
import { Commands } from './commands.js';
import { Files } from './files.js';
import type { InstanceState } from './types.js';
import { Vessel, type ConnectionOptions, type EventsOptions } from './vessel.js';

/** Which daemon: an existing {@link Vessel}, or options to connect with. */
export type SandboxConnection = ConnectionOptions & { readonly vessel?: Vessel };

/** A port to publish: `hostIp` defaults to 127.0.0.1, `protocol` to tcp. */
export interface PortMapping {
  readonly hostPort: number;
  readonly guestPort: number;
  readonly protocol?: 'tcp' | 'udp';
  readonly hostIp?: string;
}

export interface SandboxCreateOptions extends SandboxConnection {
  /** OCI image reference; pulled when missing. */
  readonly image: string;
  readonly name?: string;
  /**
   * Keep the sandbox up with an idle `/bin/sh` loop as its main process, so it lives until
   * stopped or deleted. Default: true when neither `cmd` nor `entrypoint` is given.
   */
  readonly keepAlive?: boolean;
  /** Replaces the image's CMD (the instance stops when its main command exits). */
  readonly cmd?: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly workdir?: string;
  readonly user?: string;
  readonly vcpus?: number;
  readonly memoryMib?: number;
  readonly diskBytes?: number;
  readonly network?: CreateInstanceRequest['network'];
  readonly ports?: readonly PortMapping[];
  /** How long to wait for Running, in ms (default 300 000). */
  readonly timeoutMs?: number;
}

const IDLE = ['/bin/sh', '-c', "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"];

function createRequest(o: SandboxCreateOptions): CreateInstanceRequest {
  const keepAlive = o.keepAlive ?? (o.cmd === undefined && o.entrypoint === undefined);
  if (keepAlive && (o.cmd !== undefined || o.entrypoint !== undefined))
    throw new VesselError(
      'invalid_argument',
      'keepAlive replaces the command: leave out cmd and entrypoint',
    );
  return {
    image: o.image,
    ...(o.name === undefined ? {} : { name: o.name }),
    ...(keepAlive ? { entrypoint: IDLE.slice(0, 2), cmd: IDLE.slice(2) } : {}),
    ...(o.cmd === undefined ? {} : { cmd: [...o.cmd] }),
    ...(o.entrypoint === undefined ? {} : { entrypoint: [...o.entrypoint] }),
    ...(o.env === undefined ? {} : { env: Object.entries(o.env).map(([k, v]) => `${k}=${v}`) }),
    ...(o.workdir === undefined ? {} : { workdir: o.workdir }),
    ...(o.user === undefined ? {} : { user: o.user }),
    ...(o.vcpus === undefined ? {} : { vcpus: o.vcpus }),
    ...(o.memoryMib === undefined ? {} : { memory_mib: o.memoryMib }),
    ...(o.diskBytes === undefined ? {} : { disk_bytes: o.diskBytes }),
    ...(o.network === undefined ? {} : { network: o.network }),
    ...(o.ports === undefined
      ? {}
      : {
          ports: o.ports.map((p) => ({
            host_port: p.hostPort,
            guest_port: p.guestPort,
            ...(p.protocol === undefined ? {} : { protocol: p.protocol }),
            ...(p.hostIp === undefined ? {} : { host_ip: p.hostIp }),
          })),
        }),
  };
}

/** States from which an instance will not become Running by itself. */
const DEAD: ReadonlySet<InstanceState> = new Set(['Stopped', 'Shutdown', 'Unknown']);

/**
 * Resolve with the instance once Running (the daemon's wait endpoint); reject as soon as the
 * lifecycle stream shows it stopped instead, or after `timeoutMs`.
 */
async function untilRunning(vessel: Vessel, id: string, timeoutMs: number): Promise<Instance> {
  const api = vessel.api;
  const abort = new AbortController();
  const stopped = (async (): Promise<LifecycleEvent | undefined> => {
    try {
      for await (const e of vessel.events({ instance: id, types: ['state'], signal: abort.signal }))
        if (e.new_state !== null && DEAD.has(e.new_state)) return e;
    } catch {
      // the wait below decides
    }
    return undefined;
  })();
  const waited = api.waitInstance(id, 'Running', Math.ceil(timeoutMs / 1000));
  waited.catch(() => undefined);
  try {
    const dead = await Promise.race([waited.then(() => undefined), stopped]);
    if (dead) {
      const why = dead.state_error ? `: ${dead.state_error}` : '';
      throw new VesselError(
        'conflict',
        `sandbox "${dead.instance_name}" is ${dead.new_state ?? 'gone'} instead of Running${why}`,
        { details: { instance: id, state: dead.new_state } },
      );
    }
    const result = await waited;
    if (result.timed_out)
      throw new VesselError(
        'timeout',
        `sandbox ${id} is ${result.state}, not Running, after ${timeoutMs} ms`,
        { details: { instance: id, state: result.state } },
      );
    return await api.getInstance(id);
  } finally {
    abort.abort();
  }
}

/**
 * A microVM sandbox: one Vessel instance. Shaped after E2B's `Sandbox`: create one from an
 * image, run commands, read and write files, then stop or delete it.
 */
export class Sandbox {
  /** The connection this sandbox uses (`sandbox.vessel.close()` when done with it). */
  readonly vessel: Vessel;
  /** Instance id (stable); `name` is the unique human name. */
  readonly id: string;
  readonly name: string;
  readonly commands: Commands;
  /** Files, through the daemon's files API (streamed; no shell needed in the guest). */
  readonly files: Files;
  /** Commands that outlive this client: start, attach, detach, read their kept output. */
  readonly sessions: Sessions;
  private last: Instance;
  private readonly ownsVessel: boolean;

  private constructor(vessel: Vessel, instance: Instance, ownsVessel: boolean) {
    this.vessel = vessel;
    this.ownsVessel = ownsVessel;
    this.id = instance.id;
    this.name = instance.name;
    this.last = instance;
    this.commands = new Commands(vessel.api, () => this.id);
    this.sessions = new Sessions(vessel.api, () => this.id);
    this.files = new Files(
      vessel.api,
      () => this.id,
      () => this.name,
    );
  }

  /**
   * Create an instance from `image` and resolve once it is Running. If it stops or does not
   * get there within `timeoutMs`, it is deleted and the promise rejects.
   */
  static async create(options: SandboxCreateOptions): Promise<Sandbox> {
    const request = createRequest(options);
    const vessel = options.vessel ?? new Vessel(options);
    try {
      const created = await vessel.api.createInstance(request);
      try {
        const running = await untilRunning(vessel, created.id, options.timeoutMs ?? 300_000);
        return new Sandbox(vessel, running, options.vessel === undefined);
      } catch (err) {
        await vessel.api.deleteInstance(created.id).catch(() => undefined);
        throw err;
      }
    } catch (err) {
      if (options.vessel === undefined) await vessel.close();
      throw err;
    }
  }

  /** An existing instance by id or name. */
  static async connect(idOrName: string, options: SandboxConnection = {}): Promise<Sandbox> {
    const vessel = options.vessel ?? new Vessel(options);
    try {
      return new Sandbox(
        vessel,
        await vessel.api.getInstance(idOrName),
        options.vessel === undefined,
      );
    } catch (err) {
      if (options.vessel === undefined) await vessel.close();
      throw err;
    }
  }

  /** Every instance the daemon knows. */
  static async list(options: SandboxConnection = {}): Promise<Instance[]> {
    const vessel = options.vessel ?? new Vessel(options);
    try {
      return await vessel.api.listInstances();
    } finally {
      if (options.vessel === undefined) await vessel.close();
    }
  }

  /** The instance as last seen (refreshed by every lifecycle call and {@link getInfo}). */
  get info(): Instance {
    return this.last;
  }

  get state(): InstanceState {
    return this.last.state;
  }

  async getInfo(): Promise<Instance> {
    return (this.last = await this.vessel.api.getInstance(this.id));
  }

  /** True while the instance is Running. */
  async isRunning(): Promise<boolean> {
    try {
      return (await this.getInfo()).state === 'Running';
    } catch (err) {
      if (isVesselError(err, 'not_found')) return false;
      throw err;
    }
  }

  /** ACPI power-off; forced after `timeoutSeconds` (the daemon's default when absent). */
  async stop(options: { timeoutSeconds?: number } = {}): Promise<Instance> {
    return (this.last = await this.vessel.api.stopInstance(this.id, options.timeoutSeconds));
  }

  /** Power off at once (no grace period). The instance stays, Stopped; `delete()` removes it. */
  kill(): Promise<Instance> {
    return this.stop({ timeoutSeconds: 0 });
  }

  /** Boot a Stopped instance again and wait until Running. */
  async start(options: { timeoutMs?: number } = {}): Promise<Instance> {
    await this.vessel.api.startInstance(this.id);
    return (this.last = await untilRunning(this.vessel, this.id, options.timeoutMs ?? 300_000));
  }

  /** Snapshot memory and disk, and stop the VMM (→ Standby). */
  async standby(): Promise<Instance> {
    return (this.last = await this.vessel.api.instanceAction(this.id, 'standby'));
  }

  /** Come back from Standby with memory intact (→ Running). */
  async restore(): Promise<Instance> {
    return (this.last = await this.vessel.api.instanceAction(this.id, 'restore'));
  }

  async pause(): Promise<Instance> {
    return (this.last = await this.vessel.api.instanceAction(this.id, 'pause'));
  }

  async resume(): Promise<Instance> {
    return (this.last = await this.vessel.api.instanceAction(this.id, 'resume'));
  }

  /** Kill the VM and remove the instance and its files. */
  async delete(): Promise<void> {
    await this.vessel.api.deleteInstance(this.id);
  }

  /** Wait (server side, no polling) until the instance is in `state`; rejects with `timeout`. */
  async waitFor(state: InstanceState, options: { timeoutMs?: number } = {}): Promise<Instance> {
    const timeoutMs = options.timeoutMs ?? 60_000;
    const r = await this.vessel.api.waitInstance(this.id, state, Math.ceil(timeoutMs / 1000));
    if (r.timed_out)
      throw new VesselError(
        'timeout',
        `sandbox "${this.name}" is ${r.state}, not ${state}, after ${timeoutMs} ms`,
      );
    return this.getInfo();
  }

  /**
   * Release the connection if this sandbox made it (`create`/`connect` without `vessel`).
   * The sandbox itself keeps running.
   */
  async close(): Promise<void> {
    if (this.ownsVessel) await this.vessel.close();
  }

  /** This sandbox's lifecycle events as an async iterator (see {@link Vessel.events}). */
  events(
    options: Omit<EventsOptions, 'instance'> = {},
  ): AsyncGenerator<LifecycleEvent, void, undefined> {
    return this.vessel.events({ ...options, instance: this.id });
  }
}
