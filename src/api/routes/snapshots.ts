import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { VesselError } from '../../core/errors.js';
import { TagsSchema } from '../../core/wire.js';
import { InstanceSchema } from '../../core/wire.js';
import {
  CreateSnapshotRequestSchema,
  ForkSnapshotRequestSchema,
  RestoreSnapshotRequestSchema,
  SnapshotKindSchema,
  SnapshotSchema,
  type CreateSnapshotRequest,
  type ForkSnapshotRequest,
  type RestoreSnapshotRequest,
} from '../../core/wire-snapshots.js';
import type { ApiDeps } from '../app.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import { foldTagsQuery, optionalBody } from './instances.js';

const SnapshotIdParams = Type.Object({
  snapshotId: Type.String({
    minLength: 1,
    maxLength: 128,
    description: 'Snapshot id (or its name, when only one snapshot has it)',
  }),
});
type SnapshotIdParamsT = Static<typeof SnapshotIdParams>;

const InstanceSnapshotParams = Type.Object({
  id: InstanceIdParams.properties.id,
  snapshotId: SnapshotIdParams.properties.snapshotId,
});
type InstanceSnapshotParamsT = Static<typeof InstanceSnapshotParams>;

const ListQuery = Type.Object(
  {
    source_instance_id: Type.Optional(
      Type.String({ minLength: 1, maxLength: 128, description: 'Source instance (id or name)' }),
    ),
    kind: Type.Optional(SnapshotKindSchema),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 63 })),
    tags: Type.Optional(
      Type.Unsafe<Record<string, string>>({
        ...TagsSchema,
        description: 'Only those with every one of these tags: ?tags[team]=backend',
      }),
    ),
  },
  { additionalProperties: false },
);

/** A snapshot restores and forks on the hypervisor it was taken with: qemu is the only one. */
function checkHypervisor(body: { target_hypervisor?: string }): void {
  const h = body.target_hypervisor;
  if (h !== undefined && h !== 'qemu') {
    throw new VesselError(
      'unsupported_field',
      `target_hypervisor: Vessel runs only qemu (asked for ${JSON.stringify(h)})`,
      { details: { field: 'target_hypervisor' } },
    );
  }
}

/** Named snapshots (hypeman's `/instances/{id}/snapshots`, `/snapshots`). */
export function snapshotRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const snapshots = deps.instances.snapshots;
  const tags = ['snapshots'];

  app.post(
    '/instances/:id/snapshots',
    {
      schema: {
        operationId: 'createInstanceSnapshot',
        summary: 'Take a named snapshot of an instance',
        description:
          'kind Stopped: the writable disk of a Stopped instance. kind Standby: memory and disk of a Running, Paused or Standby instance; a Running instance is paused for the save and the disk copy, then runs on. compression (zstd or lz4) of the memory state happens after the answer (compression_state).',
        tags,
        params: InstanceIdParams,
        body: CreateSnapshotRequestSchema,
        response: { 201: SnapshotSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const created = await snapshots.create(
        (request.params as InstanceIdParamsT).id,
        request.body as CreateSnapshotRequest,
      );
      return reply.status(201).send(created);
    },
  );

  app.get(
    '/snapshots',
    {
      schema: {
        operationId: 'listSnapshots',
        summary: 'List snapshots, optionally by source instance, kind, name and tags',
        tags,
        querystring: ListQuery,
        response: { 200: Type.Array(SnapshotSchema), ...errorResponses },
      },
      preValidation: foldTagsQuery,
    },
    (request) => {
      const q = request.query as Static<typeof ListQuery>;
      return snapshots.list({
        ...(q.source_instance_id !== undefined ? { instance: q.source_instance_id } : {}),
        ...(q.kind !== undefined ? { kind: q.kind } : {}),
        ...(q.name !== undefined ? { name: q.name } : {}),
        ...(q.tags !== undefined ? { tags: q.tags } : {}),
      });
    },
  );

  app.get(
    '/snapshots/:snapshotId',
    {
      schema: {
        operationId: 'getSnapshot',
        summary: 'Get a snapshot',
        tags,
        params: SnapshotIdParams,
        response: { 200: SnapshotSchema, ...errorResponses },
      },
    },
    (request) => snapshots.get((request.params as SnapshotIdParamsT).snapshotId),
  );

  app.delete(
    '/snapshots/:snapshotId',
    {
      schema: {
        operationId: 'deleteSnapshot',
        summary: 'Delete a snapshot and its files',
        tags,
        params: SnapshotIdParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      await snapshots.delete((request.params as SnapshotIdParamsT).snapshotId);
      return reply.status(204).send();
    },
  );

  app.post(
    '/instances/:id/snapshots/:snapshotId/restore',
    {
      schema: {
        operationId: 'restoreInstanceSnapshot',
        summary: 'Roll an instance back to one of its snapshots',
        description:
          'The instance is stopped if needed (its current state is lost), its disk (and for a Standby snapshot its memory) replaced; then it goes to target_state (default: Running for Standby snapshots, Stopped for Stopped ones). Refused, with nothing changed, when the VMM version, kernel or VM shape differ from the snapshot.',
        tags,
        params: InstanceSnapshotParams,
        body: RestoreSnapshotRequestSchema,
        'x-body-optional': true,
        response: { 200: InstanceSchema, ...errorResponses },
      },
      preValidation: optionalBody,
    },
    (request) => {
      const params = request.params as InstanceSnapshotParamsT;
      const body = request.body as RestoreSnapshotRequest;
      checkHypervisor(body);
      return snapshots.restore(params.id, params.snapshotId, body.target_state);
    },
  );

  app.post(
    '/snapshots/:snapshotId/fork',
    {
      schema: {
        operationId: 'forkSnapshot',
        summary: 'Make a new instance from a snapshot',
        description:
          'The fork gets its own id, name, hostname, MAC and (bridge mode) address; a Standby snapshot resumes with its memory and is told its new identity. target_state defaults to Running for Standby snapshots, Stopped for Stopped ones.',
        tags,
        params: SnapshotIdParams,
        body: ForkSnapshotRequestSchema,
        'x-body-optional': true,
        response: { 201: InstanceSchema, ...errorResponses },
      },
      preValidation: optionalBody,
    },
    async (request, reply) => {
      checkHypervisor(request.body as ForkSnapshotRequest);
      const forked = await snapshots.fork(
        (request.params as SnapshotIdParamsT).snapshotId,
        request.body as ForkSnapshotRequest,
      );
      return reply.status(201).send(forked);
    },
  );
}
