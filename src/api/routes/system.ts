import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import { CapabilitiesSchema } from '../../core/wire-ops.js';
import { HealthSchema, ResourcesQuery, ResourcesSchema, errorResponses } from '../schemas.js';
import type { ApiDeps } from '../app.js';
import { capabilities, resourceStatus } from '../host-view.js';

/** `/health`, `/resources`, `/metrics`. */
export function systemRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const started = Date.now();

  app.get(
    '/health',
    {
      schema: {
        operationId: 'getHealth',
        summary: 'Daemon liveness',
        tags: ['system'],
        response: { 200: HealthSchema, ...errorResponses },
      },
    },
    () => ({
      status: 'ok' as const,
      version: deps.version,
      uptime_seconds: (Date.now() - started) / 1000,
    }),
  );

  app.get(
    '/resources',
    {
      schema: {
        operationId: 'getResources',
        summary:
          'Host resources and what this host can run (hypervisors, accelerators, disk formats)',
        description:
          'Accelerator usability is decided by trying: the KVM probe boots a tiny guest. Results are cached; pass refresh=true to probe again.',
        tags: ['system'],
        querystring: ResourcesQuery,
        response: { 200: ResourcesSchema, ...errorResponses },
      },
    },
    async (request) => {
      const q = request.query as Static<typeof ResourcesQuery>;
      const report = await deps.probeHost({
        dataDir: deps.dataDir,
        refreshKvm: q.refresh === true,
      });
      return {
        ...resourceStatus(report, deps.instances.list()),
        host: report.resources,
        accelerators: report.accelerators,
        hypervisors: report.hypervisors,
        checks: report.checks,
        images: deps.images.summary(),
      };
    },
  );

  app.get(
    '/capabilities',
    {
      schema: {
        operationId: 'getCapabilities',
        summary: 'What this daemon can run: versions, host platform, runtimes and their features',
        description:
          'Runtime availability comes from the host probe (QEMU present, microvm board, KVM usable or TCG); the network model is bridge where the daemon can make TAP devices, else nat (user-mode networking).',
        tags: ['system'],
        response: { 200: CapabilitiesSchema, ...errorResponses },
      },
    },
    async () => capabilities(await deps.probeHost({ dataDir: deps.dataDir }), deps.version),
  );

  app.get(
    '/metrics',
    {
      schema: {
        operationId: 'getMetrics',
        summary: 'Prometheus metrics (text exposition format)',
        tags: ['system'],
        'x-produces': 'text/plain',
        response: { 200: { type: 'string' }, ...errorResponses },
      },
    },
    async (_request, reply) => {
      const text = await deps.metrics.metrics();
      return reply.type(deps.metrics.contentType).send(text);
    },
  );
}
