import fs from 'node:fs/promises';
import path from 'node:path';
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../api/index.js';
import type { Config } from '../core/config.js';
import { VesselError, errnoCode, errorMessage, isVesselError } from '../core/errors.js';
import { ensureDir } from '../core/fs.js';
import { subsystemLogger, type Logger } from '../core/logger.js';
import { Paths } from '../core/paths.js';
import { run } from '../core/process.js';
import { hostNameservers } from '../core/resolv.js';
import { VERSION } from '../core/version.js';
import { guestBinaryPath, jailerBinaryPath } from '../core/assets.js';
import {
  confinementCheck,
  egressGuardCheck,
  hostTscKhz,
  probeHost,
  type ConfinementStatus,
  type EgressGuardStatus,
} from '../host/index.js';
import { ImageManager } from '../images/index.js';
import { IngressManager, backendFor } from '../ingress/index.js';
import { InstanceManager, type InstanceConfinement } from '../instances/index.js';
import { DnsServer, dnsAddressOf, parseEndpoint, resolveUpstream } from '../network/dns/index.js';
import { BridgeProvider, applyEgressGuard, hostRunner } from '../network/index.js';
import { KernelManager } from '../kernels/index.js';
import {
  BuildsRepo,
  ImagesRepo,
  IngressesRepo,
  InstancesRepo,
  SnapshotsRepo,
  openDatabase,
  type Db,
} from '../store/index.js';
import {
  QemuHypervisor,
  confinementBlocker,
  detectCgroups,
  type Confinement,
} from '../vmm/index.js';
import { VolumeManager } from '../volumes/index.js';
import { BuildManager } from '../builds/index.js';
import { acquirePidFile, socketAnswers } from './pidfile.js';

export interface DaemonOptions {
  readonly config: Config;
  readonly logger: Logger;
}

/**
 * The one place where Vessel is wired together: store, image manager, API,
 * listeners. `start()` returns once every listener accepts connections.
 */
export class Daemon {
  readonly paths: Paths;
  private readonly config: Config;
  private readonly log: Logger;
  private readonly root: Logger;
  private db: Db | undefined;
  private images: ImageManager | undefined;
  private instances: InstanceManager | undefined;
  private dns: DnsServer | undefined;
  /** Addresses asked for (bridge gateway) before the DNS server existed. */
  private readonly dnsPending: string[] = [];
  private bridge: BridgeProvider | undefined;
  private ingresses: IngressManager | undefined;
  private builds: BuildManager | undefined;
  private readonly apps: FastifyInstance[] = [];
  private releasePid: (() => void) | undefined;
  private stopping: Promise<void> | undefined;
  private ownsSocket = false;

  constructor(options: DaemonOptions) {
    this.config = options.config;
    this.root = options.logger;
    this.log = subsystemLogger(options.logger, 'daemon');
    this.paths = new Paths(options.config.data_dir);
  }

  /**
   * What confines the VMMs, or null when confinement is off (config) or impossible here
   * (not root, no jailer binary): then VMMs run as the daemon's user, and doctor warns.
   */
  private confined: ConfinementStatus = { enabled: false, cgroups: null };
  private egressGuard: EgressGuardStatus = { guard: false, passt: false };

  /**
   * Load the egress guard (network/egress-guard.ts): it matches the uids of confined VMMs
   * and their passt, so it needs confinement (and root, and nft). Without it, doctor warns.
   */
  private async loadEgressGuard(instances: InstanceConfinement | undefined): Promise<void> {
    const passt = await run('passt', ['--version'], { timeoutMs: 10_000, allowFailure: true })
      .then(() => true)
      .catch(() => false);
    if (!instances) {
      this.egressGuard = { guard: false, passt, reason: 'confinement is not active' };
      return;
    }
    try {
      await applyEgressGuard(hostRunner, {
        table: 'vessel_guard',
        uidFirst: instances.uidBase,
        uidLast: instances.uidBase + instances.uidCount - 1,
        resolvers: await hostNameservers(),
      });
      this.egressGuard = { guard: true, passt };
    } catch (err) {
      const reason = errorMessage(err);
      this.log.warn(
        { reason },
        'egress guard not loaded: user-mode guests may reach host addresses',
      );
      this.egressGuard = { guard: false, passt, reason };
    }
  }

  private async confinement(): Promise<{
    vmm: Confinement;
    instances: InstanceConfinement;
  } | null> {
    const c = this.config.confinement;
    if (!c.enabled) {
      this.log.warn('confinement is off (config): VMMs run as the daemon user, unjailed');
      this.confined = { enabled: false, cgroups: null };
      return null;
    }
    const why = await confinementBlocker();
    if (why) {
      this.log.warn({ reason: why }, 'confinement is not possible here: VMMs run unjailed');
      this.confined = { enabled: true, blocker: why, cgroups: null };
      return null;
    }
    const rootDir = path.join(this.paths.dataDir, 'jail');
    await ensureDir(rootDir, 0o755);
    const cgroups = await detectCgroups();
    this.confined = {
      enabled: true,
      cgroups: cgroups ? `${cgroups.version} (${cgroups.controllers.join(', ')})` : null,
    };
    return {
      vmm: { jailer: jailerBinaryPath(), rootDir, cgroups },
      instances: {
        uidBase: c.uid_base,
        uidCount: c.uid_count,
        memoryOverheadMiB: c.memory_overhead_mib,
        pidsMax: c.pids_max,
      },
    };
  }

  async start(): Promise<void> {
    const p = this.paths;
    await ensureDir(p.dataDir, 0o711);
    await ensureDir(p.logsDir, 0o700);
    this.releasePid = await acquirePidFile(p.pidFile, p.socket);
    try {
      this.db = openDatabase(p.database);
      const metrics = new Registry();
      collectDefaultMetrics({ register: metrics, prefix: 'vessel_process_' });
      const instancesRepo = new InstancesRepo(this.db);
      const snapshotsRepo = new SnapshotsRepo(this.db);
      this.images = new ImageManager({
        paths: p,
        repo: new ImagesRepo(this.db),
        // Instances boot from image disks: an image in use keeps its disk through rm and gc.
        inUse: () => new Set([...instancesRepo.imageDigests(), ...snapshotsRepo.imageDigests()]),
        logger: subsystemLogger(this.root, 'images'),
        config: this.config.images,
        metrics,
      });
      await this.images.init();
      const dataDir = p.dataDir;
      const net = this.config.network;
      this.bridge = await BridgeProvider.probe({
        bridge: net.bridge,
        subnet: net.subnet,
        tapPoolSize: net.tap_pool_size,
        defaultMode: net.default_mode,
        log: subsystemLogger(this.root, 'network'),
        // Guests resolve through the gateway; the firewall lets only port 53 through.
        onReady: (n) => this.serveDns(`${n.subnet.gateway}:53`),
      });
      const confinement = await this.confinement();
      await this.loadEgressGuard(confinement?.instances);
      const volumes = new VolumeManager({
        db: this.db,
        paths: p,
        logger: subsystemLogger(this.root, 'volumes'),
      });
      await volumes.init();
      this.instances = new InstanceManager({
        paths: p,
        repo: instancesRepo,
        images: this.images,
        hypervisor: new QemuHypervisor({
          ...(confinement ? { confinement: confinement.vmm } : {}),
          egressGuard: this.egressGuard.guard,
        }),
        logger: subsystemLogger(this.root, 'instances'),
        guestBinary: guestBinaryPath(),
        accel: async () => ((await probeHost({ dataDir })).accelerators.kvm.usable ? 'kvm' : 'tcg'),
        metrics,
        lifecycleBufferSize: this.config.instances.lifecycle_event_buffer_size,
        bootTimeoutMs: this.config.instances.boot_timeout_seconds * 1000,
        network: this.bridge,
        snapshots: snapshotsRepo,
        volumes,
        ...(confinement ? { confinement: confinement.instances } : {}),
        ...(await hostTscKhz().then((k) => (k ? { tscKhz: k } : {}))),
      });
      await this.instances.init();
      await this.startDns(this.instances);
      this.ingresses = this.startIngress(this.instances, this.db);
      await this.ingresses.init();
      this.builds = new BuildManager({
        repo: new BuildsRepo(this.db),
        images: this.images,
        instances: this.instances,
        paths: p,
        logger: subsystemLogger(this.root, 'builds'),
        config: this.config.builds,
      });
      await this.builds.init();
      const deps = {
        builds: { manager: this.builds, maxContextBytes: this.config.builds.max_context_bytes },
        ingresses: this.ingresses,
        volumes,
        images: this.images,
        instances: this.instances,
        // A kernel version an instance record references cannot be removed.
        kernels: new KernelManager({ dataDir, users: () => instancesRepo.list() }),
        metrics,
        logger: this.root,
        version: VERSION,
        dataDir: p.dataDir,
        // Doctor's checks plus how this daemon confines its VMMs.
        probeHost: async (o: { dataDir: string; refreshKvm?: boolean }) => {
          const report = await probeHost(o);
          return {
            ...report,
            checks: [
              ...report.checks,
              confinementCheck(this.confined),
              egressGuardCheck(this.egressGuard),
            ],
          };
        },
      };
      await this.listenUnix(await buildApp(deps));
      const tcp = this.config.api.tcp;
      if (tcp) {
        const app = await buildApp(deps, { tokens: this.config.api.tokens });
        this.apps.push(app);
        await app.listen({ host: tcp.host, port: tcp.port });
        this.log.info({ address: app.addresses() }, 'listening on TCP (bearer tokens required)');
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /**
   * The DNS server for `<name>.<suffix>`: on each `dns.listen` address (bridge networking
   * adds the gateway on port 53 through {@link serveDns}). An address that cannot be bound
   * is logged and skipped: name service is not worth refusing to start over.
   */
  private async startDns(instances: InstanceManager): Promise<void> {
    const cfg = this.config.dns;
    if (!cfg.enabled) return;
    const log = subsystemLogger(this.root, 'dns');
    const upstream = await resolveUpstream(cfg.upstream);
    if (!upstream) log.warn('no upstream resolver (dns.upstream unset, none in /etc/resolv.conf)');
    this.dns = new DnsServer({
      suffix: cfg.suffix,
      upstream,
      timeoutMs: cfg.timeout_ms,
      logger: log,
      lookup: (name) => {
        try {
          return dnsAddressOf(instances.get(name).network);
        } catch (err) {
          if (isVesselError(err, 'not_found')) return undefined;
          throw err;
        }
      },
    });
    for (const addr of [...cfg.listen, ...this.dnsPending.splice(0)]) await this.serveDns(addr);
  }

  /** Serve DNS on one more `host:port` (e.g. the bridge gateway, port 53); failures are logged. */
  async serveDns(address: string): Promise<void> {
    if (!this.config.dns.enabled) return;
    if (!this.dns) {
      this.dnsPending.push(address);
      return;
    }
    try {
      await this.dns.listen(parseEndpoint(address));
    } catch (err) {
      subsystemLogger(this.root, 'dns').error(
        { err, address },
        'DNS server not serving this address',
      );
    }
  }

  /** Addresses the DNS server answers on (tests listen on port 0). */
  dnsAddresses(): { host: string; port: number }[] {
    return this.dns?.addresses() ?? [];
  }

  private startIngress(instances: InstanceManager, db: Db): IngressManager {
    return new IngressManager({
      repo: new IngressesRepo(db),
      listenHost: this.config.ingress.listen_host,
      assertInstance: (idOrName) => void instances.get(idOrName),
      resolveBackend: (idOrName, guestPort) => backendFor(instances.get(idOrName), guestPort),
      logger: subsystemLogger(this.root, 'ingress'),
    });
  }

  private async listenUnix(app: FastifyInstance): Promise<void> {
    const socket = this.paths.socket;
    if (await socketAnswers(socket)) {
      throw new VesselError('daemon_running', `another process already serves ${socket}`);
    }
    await fs.rm(socket, { force: true });
    this.apps.push(app);
    await app.listen({ path: socket });
    this.ownsSocket = true;
    await fs.chmod(socket, 0o660);
    const group = this.config.api.socket_group;
    if (group !== undefined) {
      const gid = typeof group === 'number' ? group : await lookupGroup(group);
      await fs.chown(socket, process.getuid?.() ?? 0, gid);
    }
    this.log.info({ socket }, 'listening on unix socket');
  }

  /** Address of the TCP listener, when configured (tests listen on port 0). */
  tcpAddress(): { host: string; port: number } | undefined {
    for (const app of this.apps.slice(1)) {
      const a = app.addresses().find((x) => typeof x !== 'string');
      if (a && typeof a !== 'string') return { host: a.address, port: a.port };
    }
    return undefined;
  }

  /** Graceful shutdown: stop accepting, finish in-flight requests, close the store. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const app of this.apps) {
        try {
          await app.close();
        } catch (err) {
          this.log.warn({ err }, 'closing listener failed');
        }
      }
      if (this.ownsSocket) await fs.rm(this.paths.socket, { force: true }).catch(() => undefined);
      await this.ingresses?.close();
      await this.dns?.close();
      // A running build's builder VM is removed; the build is marked failed.
      await this.builds?.shutdown();
      // VMs keep running: the next daemon re-adopts them.
      await this.instances?.shutdown();
      await this.bridge
        ?.close()
        .catch((err: unknown) => this.log.warn({ err }, 'closing the bridge network failed'));
      this.images?.close();
      this.db?.close();
      this.releasePid?.();
      this.log.info('stopped');
    })();
    return this.stopping;
  }
}

async function lookupGroup(name: string): Promise<number> {
  try {
    const r = await run('getent', ['group', name]);
    const gid = Number(r.stdout.split(':')[2]);
    if (Number.isInteger(gid)) return gid;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw err;
  }
  throw new VesselError('invalid_config', `api.socket_group: group "${name}" does not exist`);
}
