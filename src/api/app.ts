import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import { Ajv } from 'ajv';
import type { Registry } from 'prom-client';
import type { BuildManager } from '../builds/index.js';
import type { Logger } from '../core/logger.js';
import type { HostReport } from '../host/index.js';
import type { ImageManager } from '../images/index.js';
import type { IngressManager } from '../ingress/index.js';
import type { InstanceManager } from '../instances/index.js';
import type { KernelManager } from '../kernels/index.js';
import type { VolumeManager } from '../volumes/index.js';
import { bearerAuth } from './auth.js';
import {
  clientErrorHandler,
  errorHandler,
  notFoundHandler,
  upgradeErrorHandler,
} from './errors.js';
import { OpenApiCollector } from './openapi.js';
import { execStreamRoutes } from './routes/exec-stream.js';
import { fileRoutes } from './routes/files.js';
import { imageRoutes } from './routes/images.js';
import { ingressRoutes } from './routes/ingresses.js';
import { attachRoute } from './routes/attach.js';
import { buildRoutes } from './routes/builds.js';
import { instanceIoRoutes } from './routes/instance-io.js';
import { instanceRoutes } from './routes/instances.js';
import { kernelRoutes } from './routes/kernels.js';
import { lifecycleRoutes } from './routes/lifecycle.js';
import { snapshotRoutes } from './routes/snapshots.js';
import { sessionRoutes } from './routes/sessions.js';
import { systemRoutes } from './routes/system.js';
import { volumeRoutes } from './routes/volumes.js';

/** Everything the API needs, injected by the daemon (or a test). */
export interface ApiDeps {
  readonly images: ImageManager;
  readonly instances: InstanceManager;
  /**
   * Default: a manager over `dataDir` whose removal check reads `instances`.
   * The daemon passes one backed by the instance records in the store.
   */
  readonly kernels?: KernelManager;
  /** `/ingresses`; the routes exist only when given (the daemon always gives it). */
  readonly ingresses?: IngressManager;
  /** `/volumes`; the routes exist only when given (the daemon always gives it). */
  readonly volumes?: VolumeManager;
  /** `/builds`; the routes exist only when given (the daemon always gives it). */
  readonly builds?: { readonly manager: BuildManager; readonly maxContextBytes: number };
  readonly metrics: Registry;
  readonly logger: Logger;
  readonly version: string;
  readonly dataDir: string;
  readonly probeHost: (options: { dataDir: string; refreshKvm?: boolean }) => Promise<HostReport>;
}

export interface AppOptions {
  /** Bearer tokens required on every request (TCP listener); none for the unix socket. */
  readonly tokens?: readonly string[];
}

/**
 * Build the HTTP API without listening, so tests can use `app.inject()` and
 * the daemon can mount the same routes on a unix socket and on TCP.
 */
export async function buildApp(deps: ApiDeps, options: AppOptions = {}): Promise<FastifyInstance> {
  const logger: FastifyBaseLogger = deps.logger.child({ subsystem: 'api' });
  const app = Fastify({
    loggerInstance: logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
    forceCloseConnections: true,
    // Route schemas bound path params (ids ≤ 128, image names ≤ 512): let them, not the
    // router's default 100-character cap, give the error.
    maxParamLength: 1024,
    // Requests Node's parser refuses get the API's error body too.
    clientErrorHandler,
  });
  // JSON bodies are typed already: validate them strictly ({"name": 5} is an
  // error, not "5"). Query strings and path params are text: coerce them.
  const strict = new Ajv({
    coerceTypes: false,
    useDefaults: true,
    removeAdditional: false,
    strict: false,
  });
  const coercing = new Ajv({
    coerceTypes: 'array',
    useDefaults: true,
    removeAdditional: false,
    strict: false,
  });
  app.setValidatorCompiler(({ schema, httpPart }) =>
    (httpPart === 'body' ? strict : coercing).compile(schema),
  );
  const openapi = new OpenApiCollector();
  app.addHook('onRoute', (route) => openapi.add(route));
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);
  app.addHook('onResponse', (request, reply, done) => {
    request.log.debug(
      { method: request.method, url: request.url, status: reply.statusCode, ms: reply.elapsedTime },
      'request',
    );
    done();
  });
  // WebSocket upgrades go through the same routing and hooks (bearer auth) as every request.
  // Registered before the auth hook: its own onRequest hook must run first, or the socket of
  // a refused upgrade is never closed.
  await app.register(websocket, { options: { maxPayload: 1024 * 1024 } });
  app.websocketServer.on('wsClientError', upgradeErrorHandler);
  if (options.tokens && options.tokens.length > 0)
    app.addHook('onRequest', bearerAuth(options.tokens));

  systemRoutes(app, deps);
  imageRoutes(app, deps);
  instanceRoutes(app, deps);
  instanceIoRoutes(app, deps);
  fileRoutes(app, deps);
  attachRoute(app, deps);
  lifecycleRoutes(app, deps);
  snapshotRoutes(app, deps);
  sessionRoutes(app, deps);
  kernelRoutes(app, deps);
  execStreamRoutes(app, deps);
  if (deps.ingresses) ingressRoutes(app, deps.ingresses);
  if (deps.volumes) volumeRoutes(app, { volumes: deps.volumes, instances: deps.instances });
  if (deps.builds) buildRoutes(app, deps.builds.manager, deps.builds.maxContextBytes);

  const hidden: object = { hide: true };
  app.get('/openapi.json', { schema: hidden }, () =>
    openapi.document({ title: 'Vessel API', version: deps.version }),
  );
  await app.ready();
  return app;
}
