/**
 * The whole API over a test image env, as the daemon wires it (ingresses
 * included, no listeners): for `app.inject()` tests and for reading the
 * generated `/openapi.json`.
 */
import type { FastifyInstance } from 'fastify';
import { buildApp, type ApiDeps } from '../../src/api/app.js';
import { silentLogger } from '../../src/core/logger.js';
import { IngressManager } from '../../src/ingress/index.js';
import type { InstanceManager } from '../../src/instances/index.js';
import { IngressesRepo } from '../../src/store/index.js';
import { Paths } from '../../src/core/paths.js';
import { VolumeManager } from '../../src/volumes/index.js';
import { BuildManager } from '../../src/builds/index.js';
import { defaultConfig } from '../../src/core/config.js';
import { BuildsRepo } from '../../src/store/index.js';
import { makeInstanceManager, type ImageEnv } from './image-env.js';

export function buildTestApp(
  env: ImageEnv,
  options: {
    instances?: InstanceManager;
    version?: string;
    probeHost?: ApiDeps['probeHost'];
  } = {},
): Promise<FastifyInstance> {
  const instances = options.instances ?? makeInstanceManager(env);
  const builds = defaultConfig(env.dir).builds;
  return buildApp({
    images: env.manager,
    instances,
    builds: {
      manager: new BuildManager({
        repo: new BuildsRepo(env.db),
        images: env.manager,
        instances,
        paths: new Paths(env.dir),
        logger: silentLogger(),
        config: builds,
      }),
      maxContextBytes: builds.max_context_bytes,
    },
    ingresses: new IngressManager({
      repo: new IngressesRepo(env.db),
      listenHost: '127.0.0.1',
      assertInstance: () => undefined,
      resolveBackend: () => undefined,
      logger: silentLogger(),
    }),
    volumes: new VolumeManager({ db: env.db, paths: new Paths(env.dir), logger: silentLogger() }),
    metrics: env.metrics,
    logger: silentLogger(),
    version: options.version ?? 'test',
    dataDir: env.dir,
    probeHost: options.probeHost ?? (() => Promise.reject(new Error('not probed'))),
  });
}
