import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import {
  CreateInstanceRequestSchema,
  InstanceSchema,
  type CreateInstanceRequestWire,
} from '../../core/wire.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import type { ApiDeps } from '../app.js';

const StopQuery = Type.Object(
  {
    timeout: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 600, description: 'Seconds before the stop is forced' }),
    ),
  },
  { additionalProperties: false },
);
/** `/instances`: create, list, get, delete, start, stop (exec and logs: instance-io.ts). */
export function instanceRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const instances = deps.instances;
  const tags = ['instances'];

  app.post(
    '/instances',
    {
      schema: {
        operationId: 'createInstance',
        summary: 'Create and boot an instance (pulls the image and kernel when missing)',
        description:
          'Returns once the VM is booting (Initializing); it becomes Running after the guest is ready.',
        tags,
        body: CreateInstanceRequestSchema,
        response: { 201: InstanceSchema, ...errorResponses },
      },
    },
    async (request, reply) =>
      reply.status(201).send(await instances.create(request.body as CreateInstanceRequestWire)),
  );

  app.get(
    '/instances',
    {
      schema: {
        operationId: 'listInstances',
        summary: 'List instances',
        tags,
        response: { 200: Type.Array(InstanceSchema), ...errorResponses },
      },
    },
    () => instances.list(),
  );

  app.get(
    '/instances/:id',
    {
      schema: {
        operationId: 'getInstance',
        summary: 'Get an instance by id or name',
        tags,
        params: InstanceIdParams,
        response: { 200: InstanceSchema, ...errorResponses },
      },
    },
    (request) => instances.get((request.params as InstanceIdParamsT).id),
  );

  app.delete(
    '/instances/:id',
    {
      schema: {
        operationId: 'deleteInstance',
        summary: 'Delete an instance (its VM is killed) and its files',
        tags,
        params: InstanceIdParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      await instances.delete((request.params as InstanceIdParamsT).id);
      return reply.status(204).send();
    },
  );

  app.post(
    '/instances/:id/start',
    {
      schema: {
        operationId: 'startInstance',
        summary: 'Boot a stopped instance',
        tags,
        params: InstanceIdParams,
        response: { 200: InstanceSchema, ...errorResponses },
      },
    },
    (request) => instances.start((request.params as InstanceIdParamsT).id),
  );

  app.post(
    '/instances/:id/stop',
    {
      schema: {
        operationId: 'stopInstance',
        summary: 'Stop an instance: ACPI power-off, forced after the timeout',
        tags,
        params: InstanceIdParams,
        querystring: StopQuery,
        response: { 200: InstanceSchema, ...errorResponses },
      },
    },
    (request) => {
      const q = request.query as Static<typeof StopQuery>;
      return instances.stop(
        (request.params as InstanceIdParamsT).id,
        q.timeout === undefined ? {} : { timeoutMs: q.timeout * 1000 },
      );
    },
  );
}
