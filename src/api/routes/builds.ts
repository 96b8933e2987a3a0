import multipart from '@fastify/multipart';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import fs from 'node:fs/promises';
import type { BuildManager, CreateBuildInput } from '../../builds/index.js';
import { VesselError } from '../../core/errors.js';
import { BuildEventSchema, BuildSchema, CatalogEntrySchema } from '../../core/wire-builds.js';
import { errorResponses } from '../schemas.js';
import { matchTags } from '../../core/tags.js';
import { TagsQuery } from './images.js';
import { foldTagsQuery } from './instances.js';
import { checkUnsupported, type Unsupported } from '../unsupported.js';
import { openSse } from '../sse.js';

const BuildIdParams = Type.Object({ id: Type.String() }, { additionalProperties: false });
const EventsQuery = Type.Object(
  {
    follow: Type.Optional(
      Type.Boolean({ default: false, description: 'Keep streaming until the build ends' }),
    ),
  },
  { additionalProperties: false },
);
const CatalogParams = Type.Object({ name: Type.String() }, { additionalProperties: false });

/** POST /builds's form: hypeman's CreateBuildRequest plus Vessel's fields. */
export const BuildFormSchema = Type.Object(
  {
    source: Type.String({
      format: 'binary',
      description: 'A tar of the build context (plain, gzip or zstd)',
    }),
    image_name: Type.Optional(
      Type.String({
        description: 'name[:tag] of the image to make (default localhost/builds/<build id>)',
      }),
    ),
    image: Type.Optional(Type.String({ description: 'Vessel: the same as image_name' })),
    dockerfile: Type.Optional(
      Type.String({ description: "The Dockerfile's text (default: the context's Dockerfile)" }),
    ),
    dockerfile_path: Type.Optional(
      Type.String({ description: 'Vessel: the Dockerfile inside the context' }),
    ),
    build_args: Type.Optional(Type.String({ description: 'Vessel: JSON object of build args' })),
    target: Type.Optional(Type.String({ description: 'Vessel: the stage to build' })),
    no_cache: Type.Optional(Type.String({ description: 'Vessel: true to ignore the step cache' })),
    network: Type.Optional(
      Type.String({ description: 'Vessel: none (default), isolated or egress for RUN steps' }),
    ),
    cpus: Type.Optional(Type.Integer({ minimum: 1, description: 'vCPUs of each builder VM' })),
    memory_mb: Type.Optional(
      Type.Integer({ minimum: 128, description: 'Memory of each builder VM (MiB)' }),
    ),
    tags: Type.Optional(Type.String({ description: 'JSON object of tags' })),
  },
  { title: 'CreateBuildRequest' },
);

const FIELDS = new Set([...Object.keys(BuildFormSchema.properties), 'network_mode']);

/** A form field that asks for nothing when empty (or one of `off`): dropped, else refused. */
const formField = (field: string, reason: string, ...off: string[]): Unsupported => ({
  field,
  reason,
  noop: (v) => v === '' || off.includes(v as string),
});

/** hypeman's build fields Vessel cannot honour: refused by name, never ignored. */
const BUILD_UNSUPPORTED: readonly Unsupported[] = [
  formField('base_image_digest', 'pin the base in the Dockerfile instead (FROM image@sha256:...)'),
  formField(
    'builder_id',
    'Vessel has no persistent builders: every RUN gets a fresh builder microVM',
  ),
  formField('cache_scope', 'Vessel has one local step cache per daemon (no registry cache scopes)'),
  formField(
    'global_cache_key',
    'Vessel has one local step cache per daemon (no registry cache scopes)',
  ),
  formField('secrets', 'build secrets (RUN --mount=type=secret) are not supported yet', '[]'),
  formField(
    'is_admin_build',
    'Vessel builds never push to a registry, so there are no admin builds',
    'false',
  ),
  formField(
    'timeout_seconds',
    'cancel a build with DELETE /builds/{id}; per-build timeouts are not supported yet',
    '0',
  ),
];

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
  checkUnsupported(fields, BUILD_UNSUPPORTED);
  for (const k of Object.keys(fields))
    if (!FIELDS.has(k)) throw bad(`unknown field "${k}"; known: ${[...FIELDS].join(', ')}`);
  const image = fields.image ?? fields.image_name;
  const int = (field: string, min: number, max: number): number | undefined => {
    const text = fields[field];
    if (text === undefined || text === '') return undefined;
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max)
      throw bad(`${field} must be an integer from ${min} to ${max}`);
    return n;
  };
  const vcpus = int('cpus', 1, 64);
  const memoryMib = int('memory_mb', 128, 1024 * 1024);
  const network = fields.network ?? fields.network_mode ?? 'none';
  if (!['none', 'isolated', 'egress'].includes(network))
    throw bad(`network must be none, isolated or egress, not "${network}"`);
  const noCache = fields.no_cache ?? 'false';
  if (noCache !== 'true' && noCache !== 'false') throw bad('no_cache must be true or false');
  return {
    contextDir: context.dir,
    sourceHash: context.sourceHash,
    ...(image ? { image } : {}),
    ...(vcpus === undefined ? {} : { vcpus }),
    ...(memoryMib === undefined ? {} : { memoryMib }),
    ...(fields.dockerfile !== undefined ? { dockerfile: fields.dockerfile } : {}),
    ...(fields.dockerfile_path ? { dockerfileName: fields.dockerfile_path } : {}),
    ...(fields.build_args ? { buildArgs: jsonObject('build_args', fields.build_args) } : {}),
    ...(fields.target ? { target: fields.target } : {}),
    noCache: noCache === 'true',
    network: network === 'egress' ? 'egress' : 'none',
    ...(fields.tags ? { tags: jsonObject('tags', fields.tags) } : {}),
  };
}

/**
 * The multipart parser's own errors (no boundary, a truncated part, too many
 * fields) are the request's fault: 400, never 500.
 */
async function* malformedAsBadRequest<T>(parts: AsyncIterable<T>): AsyncGenerator<T> {
  const it = parts[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<T>;
    try {
      next = await it.next();
    } catch (err) {
      if (err instanceof VesselError) throw err;
      throw bad(`malformed multipart/form-data body: ${(err as Error).message}`);
    }
    if (next.done) return;
    yield next.value;
  }
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
          'multipart/form-data: a file part "source" (a tar of the build context, optionally gzip- or zstd-compressed) and the fields of CreateBuildRequest. Returns at once with status queued; follow GET /builds/{id}/events.',
        tags: ['builds'],
        'x-consumes': ['multipart/form-data'],
        'x-form': BuildFormSchema,
        'x-unsupported-fields': Object.fromEntries(
          BUILD_UNSUPPORTED.map((u) => [u.field, u.reason]),
        ),
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
        for await (const part of malformedAsBadRequest(request.parts())) {
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
        summary: 'List builds, optionally by tags',
        tags: ['builds'],
        querystring: TagsQuery,
        response: { 200: Type.Array(BuildSchema), ...errorResponses },
      },
      preValidation: foldTagsQuery,
    },
    (request) => {
      const filter = (request.query as Static<typeof TagsQuery>).tags;
      return builds.list().filter((b) => matchTags(b.tags, filter));
    },
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
        description:
          'Answers once the build is cancelled (GET /builds/{id} then says cancelled). Vessel: a finished build is deleted with its record and events instead of 409.',
        tags: ['builds'],
        params: BuildIdParams,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      await builds.delete((request.params as { id: string }).id);
      return reply.status(204).send();
    },
  );

  app.get(
    '/builds/:id/events',
    {
      exposeHeadRoute: false,
      schema: {
        operationId: 'getBuildEvents',
        summary:
          "Server-Sent Events: the build's events from the first (status, step, log lines); with follow=true, live until it ends",
        tags: ['builds'],
        params: BuildIdParams,
        querystring: EventsQuery,
        'x-produces': 'text/event-stream',
        response: {
          200: { ...BuildEventSchema, description: 'data: BuildEvent' },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const id = (request.params as { id: string }).id;
      const follow = (request.query as Static<typeof EventsQuery>).follow === true;
      builds.get(id); // 404 before the stream opens
      const sse = openSse(request, reply);
      const unsubscribe = await builds.follow(
        id,
        (e) => sse.data(e),
        () => sse.close(),
        { live: follow },
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
