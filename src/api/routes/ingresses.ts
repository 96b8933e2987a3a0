import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import {
  CreateIngressRequestSchema,
  IngressSchema,
  type CreateIngressRequestWire,
} from '../../core/wire.js';
import type { IngressManager } from '../../ingress/index.js';
import { errorResponses } from '../schemas.js';

const IdParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128, description: 'Ingress id or name' }),
});

/**
 * `/ingresses` (hypeman-shaped): HTTP routes from a Host header on a host port to an
 * instance's guest port. Creating the first route on a port starts its listener.
 */
export function ingressRoutes(app: FastifyInstance, ingresses: IngressManager): void {
  const tags = ['ingresses'];

  app.post(
    '/ingresses',
    {
      schema: {
        operationId: 'createIngress',
        summary: 'Create an ingress route',
        description:
          'Routes HTTP requests whose Host header (port stripped, case-insensitive) is `hostname` and that arrive on `host_port` to `guest_port` of `instance`. A hostname pattern such as `{instance}.example.com` takes the instance name from the matching label (instance must then be `{instance}`, the default). Exact hostnames win over patterns. The backend is the guest address on the bridge, or in user-mode networking a published host port that maps `guest_port`; when there is neither, requests get 502. Unknown hosts get 404.',
        tags,
        body: CreateIngressRequestSchema,
        response: { 201: IngressSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const created = await ingresses.create(request.body as CreateIngressRequestWire);
      return reply.status(201).send(created);
    },
  );

  app.get(
    '/ingresses',
    {
      schema: {
        operationId: 'listIngresses',
        summary: 'List ingress routes',
        tags,
        response: { 200: Type.Array(IngressSchema), ...errorResponses },
      },
    },
    () => ingresses.list(),
  );

  app.get(
    '/ingresses/:id',
    {
      schema: {
        operationId: 'getIngress',
        summary: 'Get an ingress route by id or name',
        tags,
        params: IdParams,
        response: { 200: IngressSchema, ...errorResponses },
      },
    },
    (request) => ingresses.get((request.params as Static<typeof IdParams>).id),
  );

  app.delete(
    '/ingresses/:id',
    {
      schema: {
        operationId: 'deleteIngress',
        summary: 'Delete an ingress route; the last route of a host port closes its listener',
        tags,
        params: IdParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      await ingresses.delete((request.params as Static<typeof IdParams>).id);
      return reply.status(204).send();
    },
  );
}
