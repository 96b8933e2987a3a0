import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { InstanceSchema } from '../../core/wire.js';
import {
  AttachVolumeRequestSchema,
  CreateVolumeRequestSchema,
  VolumeSchema,
  VOLUME_NAME_PATTERN,
  type AttachVolumeRequest,
  type CreateVolumeRequest,
} from '../../core/wire-volumes.js';
import type { InstanceManager } from '../../instances/index.js';
import type { VolumeManager } from '../../volumes/index.js';
import { bodyStream, withBody } from '../body.js';
import { errorResponses } from '../schemas.js';
import { TagsQuery } from './images.js';
import { foldTagsQuery } from './instances.js';

/** Archive bodies are streamed through untouched (the volume manager sniffs the format). */
export const ARCHIVE_TYPES = [
  'application/octet-stream',
  'application/x-tar',
  'application/gzip',
  'application/x-gzip',
  'application/zstd',
  'application/x-zstd',
];

const VolumeIdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) });
const AttachParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128 }),
  volume_id: Type.String({ minLength: 1, maxLength: 128 }),
});
const FromArchiveQuery = Type.Object(
  {
    name: Type.String({ pattern: VOLUME_NAME_PATTERN }),
    size_gb: Type.Integer({ minimum: 1, maximum: 16384 }),
  },
  { additionalProperties: false },
);

/** `/volumes` and `/instances/{id}/volumes/{volume_id}` (hypeman's shapes). */
export function volumeRoutes(
  app: FastifyInstance,
  deps: { volumes: VolumeManager; instances: InstanceManager },
): void {
  const { volumes, instances } = deps;
  const tags = ['volumes'];
  for (const t of ARCHIVE_TYPES) {
    if (!app.hasContentTypeParser(t))
      app.addContentTypeParser(t, (_request, payload, done) => done(null, payload));
  }

  app.get(
    '/volumes',
    {
      preValidation: foldTagsQuery,
      schema: {
        operationId: 'listVolumes',
        summary: 'List volumes, optionally by tags',
        tags,
        querystring: TagsQuery,
        response: { 200: Type.Array(VolumeSchema), ...errorResponses },
      },
    },
    (request) => volumes.list({ tags: (request.query as Static<typeof TagsQuery>).tags }),
  );

  app.post(
    '/volumes',
    {
      schema: {
        operationId: 'createVolume',
        summary: 'Create an empty ext4 volume',
        tags,
        body: CreateVolumeRequestSchema,
        response: { 201: VolumeSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const body = request.body as CreateVolumeRequest;
      return reply.status(201).send(await volumes.create(body));
    },
  );

  app.post(
    '/volumes/from-archive',
    {
      schema: {
        operationId: 'createVolumeFromArchive',
        summary: 'Create a volume from a tar, tar.gz or tar.zst archive (streamed request body)',
        description:
          'The format is detected from the first bytes. Entries may not leave the volume; device nodes are skipped. Content larger than size_gb is refused (volume_too_small) and leaves nothing behind.',
        tags,
        querystring: FromArchiveQuery,
        'x-consumes': ARCHIVE_TYPES,
        response: { 201: VolumeSchema, ...errorResponses },
      },
      bodyLimit: Number.MAX_SAFE_INTEGER,
    },
    async (request, reply) => {
      const body = bodyStream(request.body, 'the archive', ARCHIVE_TYPES);
      const q = request.query as Static<typeof FromArchiveQuery>;
      const volume = await withBody(body, (own) =>
        volumes.createFromArchive(own, { name: q.name, size_gb: q.size_gb }),
      );
      return reply.status(201).send(volume);
    },
  );

  app.get(
    '/volumes/:id',
    {
      schema: {
        operationId: 'getVolume',
        summary: 'Get a volume by id or name',
        tags,
        params: VolumeIdParams,
        response: { 200: VolumeSchema, ...errorResponses },
      },
    },
    (request) => volumes.get((request.params as Static<typeof VolumeIdParams>).id),
  );

  app.delete(
    '/volumes/:id',
    {
      schema: {
        operationId: 'deleteVolume',
        summary: 'Delete a volume (409 volume_in_use while attached)',
        tags,
        params: VolumeIdParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      await volumes.delete((request.params as Static<typeof VolumeIdParams>).id);
      return reply.status(204).send();
    },
  );

  app.post(
    '/instances/:id/volumes/:volume_id',
    {
      schema: {
        operationId: 'attachVolume',
        summary: 'Attach a volume to a Stopped instance',
        description:
          'One read-write attachment per volume, or any number of read-only (and overlay) ones; 409 volume_in_use otherwise. The volume is mounted at the next boot.',
        tags,
        params: AttachParams,
        body: AttachVolumeRequestSchema,
        response: { 200: InstanceSchema, ...errorResponses },
      },
    },
    (request) => {
      const p = request.params as Static<typeof AttachParams>;
      const b = request.body as AttachVolumeRequest;
      return instances.attachVolume(p.id, {
        volume_id: p.volume_id,
        mount_path: b.mount_path,
        ...(b.readonly !== undefined ? { readonly: b.readonly } : {}),
        ...(b.overlay !== undefined ? { overlay: b.overlay } : {}),
        ...(b.overlay_size !== undefined ? { overlay_size: b.overlay_size } : {}),
      });
    },
  );

  app.delete(
    '/instances/:id/volumes/:volume_id',
    {
      schema: {
        operationId: 'detachVolume',
        summary: 'Detach a volume from a Stopped instance (its private overlay layer is removed)',
        tags,
        params: AttachParams,
        response: { 200: InstanceSchema, ...errorResponses },
      },
    },
    (request) => {
      const p = request.params as Static<typeof AttachParams>;
      return instances.detachVolume(p.id, p.volume_id);
    },
  );
}
