import multipart from '@fastify/multipart';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import fs from 'node:fs/promises';
import type { BuildManager, CreateBuildInput } from '../../builds/index.js';
import { VesselError } from '../../core/errors.js';
import { BuildEventSchema, BuildSchema, CatalogEntrySchema } from '../../core/wire-builds.js';
import { errorResponses } from '../schemas.js';
import { openSse } from '../sse.js';

const BuildIdParams = Type.Object({ id: Type.String() }, { additionalProperties: false });
const CatalogParams = Type.Object({ name: Type.String() }, { additionalProperties: false });

const FIELDS = new Set([
  'image',
  'dockerfile',
  'dockerfile_path',
  'build_args',
  'target',
  'no_cache',
  'network',
  'network_mode',
  'tags',
]);

function bad(message: string): VesselError {
  return new VesselError('invalid_argument', message);
}

function jsonObject(field: string, text: string): Record<string, string> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw bad(`${field} must be a JSON object of strings`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw bad(`${field} must be a JSON object of strings`);
  for (const [k, x] of Object.entries(v))
    if (typeof x !== 'string') throw bad(`${field}.${k} must be a string`);
  return v as Record<string, string>;
}

/** The multipart fields of POST /builds as a build request. */
export function buildInputOf(
  fields: Readonly<Record<string, string>>,
  context: { dir: string; sourceHash: string },
): CreateBuildInput {
  for (const k of Object.keys(fields))
    if (!FIELDS.has(k)) throw bad(`unknown field "${k}"; known: source, ${[...FIELDS].join(', ')}`);
  const image = fields.image;
  if (!image) throw bad('field "image" (the name[:tag] to build) is required');
  const network = fields.network ?? fields.network_mode ?? 'none';
  if (!['none', 'isolated', 'egress'].includes(network))
    throw bad(`network must be none, isolated or egress, not "${network}"`);
  const noCache = fields.no_cache ?? 'false';
  if (noCache !== 'true' && noCache !== 'false') throw bad('no_cache must be true or false');
  return {
    contextDir: context.dir,
    sourceHash: context.sourceHash,
    image,
    ...(fields.dockerfile !== undefined ? { dockerfile: fields.dockerfile } : {}),
    ...(fields.dockerfile_path ? { dockerfileName: fields.dockerfile_path } : {}),
    ...(fields.build_args ? { buildArgs: jsonObject('build_args', fields.build_args) } : {}),
    ...(fields.target ? { target: fields.target } : {}),
    noCache: noCache === 'true',
    network: network === 'egress' ? 'egress' : 'none',
    ...(fields.tags ? { tags: jsonObject('tags', fields.tags) } : {}),
  };
}

/** `/builds`: build an image from a Dockerfile and a context, in builder microVMs. */
export function buildRoutes(
  app: FastifyInstance,
  builds: BuildManager,
  maxContextBytes: number,
): void {
  void app.register(multipart, {
    limits: { files: 1, fields: 32, fieldSize: 4 * 1024 * 1024, fileSize: maxContextBytes },
  });

  app.post(
    '/builds',
    {
      schema: {
        operationId: 'createBuild',
        summary: 'Start a build',
        description:
          'multipart/form-data: a file part "source" (a tar of the build context, optionally gzip- or zstd-compressed) and fields: image (name[:tag], required), dockerfile (its text; default: the context\'s Dockerfile), dockerfile_path, build_args (JSON object), target (stage), no_cache (true|false), network (none|isolated|egress; default none), tags (JSON object). Returns at once with status queued; follow GET /builds/{id}/events.',
        tags: ['builds'],
        'x-consumes': ['multipart/form-data'],
        response: { 202: BuildSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      if (!request.isMultipart())
        throw bad(
          'POST /builds takes multipart/form-data with a "source" file part (a tar of the context)',
        );
      const fields: Record<string, string> = {};
      let context: { dir: string; sourceHash: string } | undefined;
      try {
        for await (const part of request.parts()) {
          if (part.type === 'file') {
            if (part.fieldname !== 'source' || context) {
              part.file.resume();
              throw bad('one file part, named "source" (a tar of the build context), is allowed');
            }
            context = await builds.receiveContext(part.file);
            if (part.file.truncated)
              throw bad(`the build context is larger than ${maxContextBytes} bytes`);
          } else {
            fields[part.fieldname] = String(part.value);
          }
        }
        if (!context) throw bad('no "source" file part (a tar of the build context)');
        const view = await builds.create(buildInputOf(fields, context));
        return reply.status(202).send(view);
      } catch (err) {
        if (context) await fs.rm(context.dir, { recursive: true, force: true });
        throw err;
      }
    },
  );

  app.get(
    '/builds',
    {
      schema: {
        operationId: 'listBuilds',
        summary: 'List builds',
        tags: ['builds'],
        response: { 200: Type.Array(BuildSchema), ...errorResponses },
      },
    },
    () => builds.list(),
  );

  app.get(
    '/builds/:id',
    {
      schema: {
        operationId: 'getBuild',
        summary: 'Get a build',
        tags: ['builds'],
        params: BuildIdParams,
        response: { 200: BuildSchema, ...errorResponses },
      },
    },
    (request) => builds.get((request.params as { id: string }).id),
  );

  app.delete(
    '/builds/:id',
    {
      schema: {
        operationId: 'cancelBuild',
        summary:
          'Cancel a queued or running build (its builder VM is stopped), or delete a finished one',
        tags: ['builds'],
        params: BuildIdParams,
        response: { 200: BuildSchema, ...errorResponses },
      },
    },
    (request) => builds.delete((request.params as { id: string }).id),
  );

  app.get(
    '/builds/:id/events',
    {
      exposeHeadRoute: false,
      schema: {
        operationId: 'getBuildEvents',
        summary:
          "Server-Sent Events: the build's events from the first (status, step, log lines), live until it ends",
        tags: ['builds'],
        params: BuildIdParams,
        'x-produces': 'text/event-stream',
        response: {
          200: {
            type: 'string',
            description: `data: BuildEvent (${JSON.stringify(BuildEventSchema.required)})`,
          },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const id = (request.params as { id: string }).id;
      builds.get(id); // 404 before the stream opens
      const sse = openSse(request, reply);
      const unsubscribe = await builds.follow(
        id,
        (e) => sse.data(e),
        () => sse.close(),
      );
      sse.onClose(unsubscribe);
    },
  );

  app.get(
    '/catalog',
    {
      schema: {
        operationId: 'listCatalog',
        summary: 'The image catalog: golden images Vessel builds locally, and which are local',
        tags: ['builds'],
        response: { 200: Type.Array(CatalogEntrySchema), ...errorResponses },
      },
    },
    () => builds.catalog(),
  );

  app.post(
    '/catalog/:name/build',
    {
      schema: {
        operationId: 'buildCatalogImage',
        summary:
          'Build (or rebuild) a golden image of the catalog; while one is building, returns that build',
        tags: ['builds'],
        params: CatalogParams,
        response: { 202: BuildSchema, ...errorResponses },
      },
    },
    async (request, reply) =>
      reply.status(202).send(await builds.createGolden((request.params as { name: string }).name)),
  );
}
