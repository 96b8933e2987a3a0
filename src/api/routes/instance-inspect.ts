import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { InstanceStatsSchema, PathInfoSchema } from '../../core/wire-ops.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import type { ApiDeps } from '../app.js';

const StatQuery = Type.Object(
  {
    path: Type.String({
      minLength: 1,
      maxLength: 4096,
      description: 'Absolute path in the guest filesystem',
    }),
    follow_links: Type.Optional(
      Type.Boolean({ default: false, description: 'Follow symbolic links (stat, not lstat)' }),
    ),
  },
  { additionalProperties: false },
);

/** What is in an instance: a guest path (`stat`) and its resource use (`stats`). */
export function instanceInspectRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const instances = deps.instances;
  const tags = ['instances'];

  app.get(
    '/instances/:id/stat',
    {
      schema: {
        operationId: 'statInstancePath',
        summary: 'Information about a path in the guest filesystem (the instance must be Running)',
        description:
          'exists is false (with error null) for a missing path; error says why when the stat failed otherwise (e.g. permission denied). 409 when the instance is not Running.',
        tags,
        params: InstanceIdParams,
        querystring: StatQuery,
        response: { 200: PathInfoSchema, ...errorResponses },
      },
    },
    (request) => {
      const q = request.query as Static<typeof StatQuery>;
      return instances.stat(
        (request.params as InstanceIdParamsT).id,
        q.path,
        q.follow_links ?? false,
      );
    },
  );

  app.get(
    '/instances/:id/stats',
    {
      schema: {
        operationId: 'getInstanceStats',
        summary: 'Resource use of the instance: CPU, memory, network and disk',
        description:
          'CPU time and memory (RSS, virtual size) of the hypervisor process from /proc; network bytes from the TAP device in bridge mode (from the VM’s point of view: rx is what it received); disk bytes from QMP query-blockstats. A value that cannot be known is null, with the reason under unavailable (e.g. user-mode networking keeps no byte counters; a Stopped instance has no process).',
        tags,
        params: InstanceIdParams,
        response: { 200: InstanceStatsSchema, ...errorResponses },
      },
    },
    (request) => instances.stats((request.params as InstanceIdParamsT).id),
  );
}
