/**
 * Ingress resources: validated, persisted routes (`/ingresses`), and the proxy listeners
 * they need — one per distinct host port, started with the first route on that port and
 * stopped with the last.
 */
import { randomBytes } from 'node:crypto';
import { VesselError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { CreateIngressRequestWire, WireIngress } from '../core/wire.js';
import type { IngressRow, IngressesRepo } from '../store/index.js';
import { INSTANCE_PLACEHOLDER, parseHostname } from './hostname.js';
import { IngressProxy, type ResolveBackend } from './proxy.js';

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
export const DEFAULT_INGRESS_PORT = 80;

export interface IngressManagerOptions {
  readonly repo: IngressesRepo;
  /** Address every ingress listener binds (default 127.0.0.1). */
  readonly listenHost: string;
  /** Throws a `not_found` VesselError when no instance has this id or name. */
  readonly assertInstance: (idOrName: string) => void;
  readonly resolveBackend: ResolveBackend;
  readonly logger: Logger;
}

export class IngressManager {
  private readonly options: IngressManagerOptions;
  private readonly repo: IngressesRepo;
  private readonly log: Logger;
  readonly proxy: IngressProxy;
  /** Listener starts and stops, one at a time, so two creates on a new port bind it once. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: IngressManagerOptions) {
    this.options = options;
    this.repo = options.repo;
    this.log = options.logger;
    this.proxy = new IngressProxy({
      routes: (port) => this.repo.list().filter((r) => r.host_port === port),
      resolveBackend: options.resolveBackend,
      logger: options.logger,
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Start the listeners of the stored routes. A port that cannot be bound is logged, not fatal. */
  async init(): Promise<void> {
    const ports = new Set(this.repo.list().map((r) => r.host_port));
    for (const port of ports) {
      try {
        await this.serial(() => this.listen(port));
      } catch (err) {
        this.log.error({ err, port }, 'ingress listener could not start; its routes are down');
      }
    }
  }

  private listen(hostPort: number): Promise<void> {
    return this.proxy.listen(this.options.listenHost, hostPort);
  }

  list(): WireIngress[] {
    return this.repo.list().map((r) => this.view(r));
  }

  get(idOrName: string): WireIngress {
    return this.view(this.row(idOrName));
  }

  private row(idOrName: string): IngressRow {
    const r = this.repo.get(idOrName);
    if (!r) throw new VesselError('not_found', `ingress "${idOrName}" not found`);
    return r;
  }

  private view(r: IngressRow): WireIngress {
    // `rules`: the same route in the hypeman API's shape.
    const rule = {
      match: { hostname: r.hostname, port: r.host_port },
      target: { instance: r.instance, port: r.guest_port },
      tls: false,
      redirect_http: false,
    };
    return { ...r, tags: r.tags ?? {}, rules: [rule], listen_address: this.options.listenHost };
  }

  /**
   * Validate and store a route, binding its host port first when it is new (a taken
   * port is `port_in_use` and nothing is stored).
   */
  async create(req: CreateIngressRequestWire): Promise<WireIngress> {
    const row = this.validate(req);
    return this.serial(async () => {
      if (this.repo.get(row.name)) {
        throw new VesselError('already_exists', `ingress "${row.name}" already exists`);
      }
      const clash = this.repo
        .list()
        .find((r) => r.hostname === row.hostname && r.host_port === row.host_port);
      if (clash) {
        throw new VesselError(
          'already_exists',
          `hostname "${row.hostname}" on port ${row.host_port} is already routed by ingress "${clash.name}"`,
          { details: { ingress: clash.name } },
        );
      }
      const fresh = !this.proxy.has(row.host_port);
      if (fresh) await this.listen(row.host_port);
      try {
        this.repo.insert(row);
      } catch (err) {
        if (fresh) await this.proxy.unlisten(row.host_port);
        throw err;
      }
      this.log.info(
        { ingress: row.name, hostname: row.hostname, port: row.host_port },
        'ingress created',
      );
      return this.view(row);
    });
  }

  private validate(req: CreateIngressRequestWire): IngressRow {
    const invalid = (message: string): VesselError =>
      new VesselError('invalid_argument', message, { details: { name: req.name } });
    if (!NAME.test(req.name)) throw invalid(`ingress name "${req.name}" must match ${NAME.source}`);
    const { hostname, placeholder } = parseHostname(req.hostname);
    const hostPort = req.host_port ?? DEFAULT_INGRESS_PORT;
    for (const [field, v] of [
      ['guest_port', req.guest_port],
      ['host_port', hostPort],
    ] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 65535)
        throw invalid(`ingress ${field} ${v} must be an integer in 1..65535`);
    }
    let instance = req.instance?.trim();
    if (placeholder !== undefined) {
      instance ??= INSTANCE_PLACEHOLDER;
      if (instance !== INSTANCE_PLACEHOLDER) {
        throw invalid(
          `ingress hostname "${hostname}" is a pattern: instance must be ${INSTANCE_PLACEHOLDER} (the matched label names the instance), not "${instance}"`,
        );
      }
    } else {
      if (instance === undefined || instance === '')
        throw invalid(
          `ingress "${req.name}" needs an instance (id or name) for hostname "${hostname}"`,
        );
      if (instance === INSTANCE_PLACEHOLDER)
        throw invalid(
          `ingress instance ${INSTANCE_PLACEHOLDER} needs a pattern hostname such as ${INSTANCE_PLACEHOLDER}.example.com`,
        );
      this.options.assertInstance(instance);
    }
    return {
      id: randomBytes(8).toString('hex'),
      name: req.name,
      instance,
      hostname,
      guest_port: req.guest_port,
      host_port: hostPort,
      created_at: new Date().toISOString(),
      tags: req.tags ?? {},
    };
  }

  /** Remove a route; the last route of a port stops that port's listener. */
  delete(idOrName: string): Promise<void> {
    return this.serial(async () => {
      const row = this.row(idOrName);
      this.repo.delete(row.id);
      if (!this.repo.list().some((r) => r.host_port === row.host_port))
        await this.proxy.unlisten(row.host_port);
      this.log.info({ ingress: row.name }, 'ingress deleted');
    });
  }

  close(): Promise<void> {
    return this.serial(() => this.proxy.close());
  }
}
