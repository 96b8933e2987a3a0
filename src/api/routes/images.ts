import type { FastifyInstance } from 'fastify';
import type { Static } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import { VesselError } from '../../core/errors.js';
import { TERMINAL_STATUSES } from '../../images/index.js';
import { bodyStream, withBody } from '../body.js';
import {
  CreateImageRequestSchema,
  GcResultSchema,
  ImageNameParams,
  ImageSchema,
  ImportQuery,
  errorResponses,
  type CreateImageRequest,
  type ImageNameParamsT,
} from '../schemas.js';
import { openSse } from '../sse.js';
import { emptyObject, unsupportedFields, type Unsupported } from '../unsupported.js';
import type { ApiDeps } from '../app.js';
import { hostPlatform } from '../../core/platform.js';
import { matchTags } from '../../core/tags.js';
import { TagsSchema } from '../../core/wire.js';
import { foldTagsQuery } from './instances.js';

const TAR_TYPES = ['application/x-tar', 'application/octet-stream'];

const IMAGE_UNSUPPORTED: readonly Unsupported[] = [
  {
    field: 'credentials',
    reason:
      'per-request registry credentials are not supported; the daemon reads its credentials file',
    noop: emptyObject,
  },
];

/** `?tags[k]=v` filter (hypeman's deepObject Tags). */
export const TagsQuery = Type.Object(
  {
    tags: Type.Optional(
      Type.Unsafe<Record<string, string>>({
        ...TagsSchema,
        description: 'Only those with every one of these tags: ?tags[team]=backend',
      }),
    ),
  },
  { additionalProperties: false },
);

/** `/images`: pull, list, inspect, delete, import, gc, progress events. */
export function imageRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const images = deps.images;

  app.addContentTypeParser(TAR_TYPES, (_request, payload, done) => done(null, payload));

  const unsupported = unsupportedFields(IMAGE_UNSUPPORTED);
  app.post(
    '/images',
    {
      preValidation: unsupported.preValidation,
      schema: {
        operationId: 'createImage',
        summary: 'Pull an image from its registry (asynchronous)',
        description:
          "Returns at once with status pending; watch GET /images/{name}/events or poll GET /images/{name}. Pulling an image that is already being pulled returns the running pull. tags replace the image's tags. Registry credentials come from the daemon's credentials file, not the request.",
        tags: ['images'],
        body: CreateImageRequestSchema,
        'x-unsupported-fields': unsupported.doc,
        response: { 202: ImageSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const body = request.body as CreateImageRequest;
      const host = hostPlatform().platform;
      if (body.platform !== undefined && body.platform !== host) {
        throw new VesselError(
          'unsupported_field',
          `platform: ${body.platform} cannot run here: this daemon pulls ${host}`,
          { details: { field: 'platform' } },
        );
      }
      const pulled = images.pull(body.name);
      return reply
        .status(202)
        .send(body.tags === undefined ? pulled : images.setTags(pulled.name, body.tags));
    },
  );

  app.get(
    '/images',
    {
      preValidation: foldTagsQuery,
      schema: {
        operationId: 'listImages',
        summary: 'List images, optionally by tags',
        tags: ['images'],
        querystring: TagsQuery,
        response: { 200: Type.Array(ImageSchema), ...errorResponses },
      },
    },
    (request) => {
      const filter = (request.query as Static<typeof TagsQuery>).tags;
      return images.list().filter((i) => matchTags(i.tags, filter));
    },
  );

  app.post(
    '/images/import',
    {
      schema: {
        operationId: 'importImage',
        summary: 'Import a docker save tarball or an OCI layout packed as a tar (request body)',
        tags: ['images'],
        querystring: ImportQuery,
        'x-consumes': TAR_TYPES,
        response: { 202: ImageSchema, ...errorResponses },
      },
      bodyLimit: Number.MAX_SAFE_INTEGER,
    },
    async (request, reply) => {
      const body = bodyStream(request.body, 'the archive', TAR_TYPES);
      const q = request.query as Static<typeof ImportQuery>;
      return reply.status(202).send(await withBody(body, (own) => images.import(own, q.name)));
    },
  );

  app.post(
    '/images/gc',
    {
      schema: {
        operationId: 'collectImageGarbage',
        summary: 'Remove blobs and disks no image references',
        tags: ['images'],
        response: { 200: GcResultSchema, ...errorResponses },
      },
    },
    () => images.gc(),
  );

  app.get(
    '/images/:name',
    {
      schema: {
        operationId: 'getImage',
        summary: 'Get an image by reference or digest',
        tags: ['images'],
        params: ImageNameParams,
        response: { 200: ImageSchema, ...errorResponses },
      },
    },
    (request) => images.get((request.params as ImageNameParamsT).name),
  );

  app.delete(
    '/images/:name',
    {
      schema: {
        operationId: 'deleteImage',
        summary: 'Delete an image; its disk goes when nothing else uses it (blobs stay until gc)',
        tags: ['images'],
        params: ImageNameParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      await images.delete((request.params as ImageNameParamsT).name);
      return reply.status(204).send();
    },
  );

  app.get(
    '/images/:name/events',
    {
      // A stream has no HEAD: Fastify's automatic one would run the handler and never end.
      exposeHeadRoute: false,
      schema: {
        operationId: 'streamImageEvents',
        summary:
          'Server-Sent Events: status changes and per-layer download progress until the image is ready or failed',
        tags: ['images'],
        params: ImageNameParams,
        'x-produces': 'text/event-stream',
        response: {
          200: { type: 'string', description: 'event: status | progress | deleted; data: JSON' },
          ...errorResponses,
        },
      },
    },
    (request, reply) => {
      const name = images.resolveName((request.params as ImageNameParamsT).name);
      const sse = openSse(request, reply);
      // Subscribe first, then send the snapshot: nothing can fall in between.
      const unsubscribe = images.subscribe((e) => {
        if (e.name !== name) return;
        if (e.type === 'progress') sse.send('progress', e.layer);
        else if (e.type === 'deleted') {
          sse.send('deleted', { name });
          sse.close();
        } else {
          sse.send('status', e.image);
          if (TERMINAL_STATUSES.has(e.image.status)) sse.close();
        }
      });
      sse.onClose(unsubscribe);
      const current = images.get(name);
      sse.send('status', current);
      for (const p of images.layerProgress(name)) sse.send('progress', p);
      if (TERMINAL_STATUSES.has(current.status)) sse.close();
    },
  );
}
