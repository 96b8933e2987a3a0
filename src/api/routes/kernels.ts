import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import {
  KernelSchema,
  PullKernelRequestSchema,
  type PullKernelRequestWire,
} from '../../core/wire.js';
import { KernelManager } from '../../kernels/index.js';
import { errorResponses } from '../schemas.js';
import type { ApiDeps } from '../app.js';

const KernelNameParams = Type.Object({
  name: Type.String({ pattern: '^[a-z0-9][a-z0-9._-]{0,63}$', description: 'Catalog name' }),
});
const DeleteKernelQuery = Type.Object(
  {
    version: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 128,
        description: 'Remove only this version (default: every version of the name)',
      }),
    ),
  },
  { additionalProperties: false },
);

/** `/kernels`: list, pull (synchronous), remove (refused while an instance uses it). */
export function kernelRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const kernels =
    deps.kernels ??
    new KernelManager({ dataDir: deps.dataDir, users: () => deps.instances.list() });

  app.get(
    '/kernels',
    {
      schema: {
        operationId: 'listKernels',
        summary: 'List pulled kernels',
        tags: ['kernels'],
        response: { 200: Type.Array(KernelSchema), ...errorResponses },
      },
    },
    () => kernels.list(),
  );

  app.post(
    '/kernels',
    {
      schema: {
        operationId: 'pullKernel',
        summary: 'Pull a kernel from the catalog (returns when it is published)',
        description:
          'Pulls by catalog name; the source decides the version (apt: the current candidate). Pulling a version that is already published keeps the existing files. Concurrent pulls of one name share one run.',
        tags: ['kernels'],
        body: PullKernelRequestSchema,
        response: { 200: KernelSchema, ...errorResponses },
      },
    },
    (request) => kernels.pull((request.body as PullKernelRequestWire | undefined)?.name),
  );

  app.delete(
    '/kernels/:name',
    {
      schema: {
        operationId: 'deleteKernel',
        summary: 'Remove a kernel (one version or all); refused while an instance references it',
        tags: ['kernels'],
        params: KernelNameParams,
        querystring: DeleteKernelQuery,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      const { name } = request.params as Static<typeof KernelNameParams>;
      const { version } = request.query as Static<typeof DeleteKernelQuery>;
      await kernels.remove(name, version);
      return reply.status(204).send();
    },
  );
}
