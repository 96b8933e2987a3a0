import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { parseDurationOrSeconds } from '../../core/duration.js';
import { VesselError } from '../../core/errors.js';
import { foldDeepTags } from '../../core/tags.js';
import {
  CreateInstanceRequestSchema,
  InstanceSchema,
  InstanceStateSchema,
  TagsSchema,
  type CreateInstanceRequestWire,
} from '../../core/wire.js';
import {
  StartInstanceRequestSchema,
  UpdateInstanceRequestSchema,
  type StartInstanceRequestWire,
  type UpdateInstanceRequestWire,
} from '../../core/wire-ops.js';
import {
  CREATE_UNSUPPORTED,
  POLICY_UNSUPPORTED,
  toCreateRequest,
  toPatch,
} from '../instance-request.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import { unsupportedFields } from '../unsupported.js';
import type { ApiDeps } from '../app.js';
import { instanceInspectRoutes } from './instance-inspect.js';

const StopQuery = Type.Object(
  {
    timeout: Type.Optional(
      Type.String({
        maxLength: 32,
        description:
          'How long the guest gets to power off before the stop is forced: a Go duration ("30s") or seconds (default 10s, at most 10m)',
      }),
    ),
  },
  { additionalProperties: false },
);

const ListQuery = Type.Object(
  {
    state: Type.Optional(InstanceStateSchema),
    tags: Type.Optional(
      Type.Unsafe<Record<string, string>>({
        ...TagsSchema,
        description:
          'Only instances with every one of these tags: ?tags[team]=backend&tags[env]=dev',
      }),
    ),
  },
  { additionalProperties: false },
);

/** `?tags[k]=v` (deepObject) → `{tags: {k: v}}`, before validation. */
export function foldTagsQuery(request: FastifyRequest): Promise<void> {
  request.query = foldDeepTags(request.query as Record<string, unknown>);
  return Promise.resolve();
}

/** A body that may be absent (Vessel's clients send none) counts as `{}`. */
export function optionalBody(request: FastifyRequest): Promise<void> {
  request.body ??= {};
  return Promise.resolve();
}

const MAX_STOP_MS = 600_000;

const DeleteInstanceQuery = Type.Object(
  {
    delete_snapshots: Type.Optional(
      Type.Boolean({ description: "Vessel: delete the instance's named snapshots too" }),
    ),
  },
  { additionalProperties: false },
);

/** `/instances`: create, list, get, update, delete, start, stop (+ stat and stats). */
export function instanceRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const instances = deps.instances;
  const tags = ['instances'];
  const unsupported = unsupportedFields(CREATE_UNSUPPORTED);
  const patchUnsupported = unsupportedFields(POLICY_UNSUPPORTED);

  app.post(
    '/instances',
    {
      preValidation: unsupported.preValidation,
      schema: {
        operationId: 'createInstance',
        summary: 'Create and boot an instance (pulls the image and kernel when missing)',
        description:
          'Returns once the VM is booting (Initializing); it becomes Running after the guest is ready. Accepts the hypeman API body (env as a map, size/overlay_size strings, ttl/expires_at, tags); fields Vessel cannot honour are listed in x-unsupported-fields and refused with 400 unsupported_field.',
        tags,
        body: CreateInstanceRequestSchema,
        'x-unsupported-fields': unsupported.doc,
        response: { 201: InstanceSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const req = toCreateRequest(request.body as CreateInstanceRequestWire);
      return reply.status(201).send(await instances.create(req));
    },
  );

  app.get(
    '/instances',
    {
      preValidation: foldTagsQuery,
      schema: {
        operationId: 'listInstances',
        summary: 'List instances, optionally by state and tags',
        tags,
        querystring: ListQuery,
        response: { 200: Type.Array(InstanceSchema), ...errorResponses },
      },
    },
    (request) => instances.list(request.query as Static<typeof ListQuery>),
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

  app.patch(
    '/instances/:id',
    {
      preValidation: patchUnsupported.preValidation,
      schema: {
        operationId: 'updateInstance',
        summary: 'Change env, tags or expiry',
        description:
          'env is merged by key: new execs see it at once, the main command at its next boot. tags replace the tags. ttl is relative to now ("0s": never expire); expires_at is absolute. 409 once the instance has expired.',
        tags,
        params: InstanceIdParams,
        body: UpdateInstanceRequestSchema,
        'x-unsupported-fields': patchUnsupported.doc,
        response: { 200: InstanceSchema, ...errorResponses },
      },
    },
    (request) =>
      instances.update(
        (request.params as InstanceIdParamsT).id,
        toPatch(request.body as UpdateInstanceRequestWire),
      ),
  );

  app.delete(
    '/instances/:id',
    {
      schema: {
        operationId: 'deleteInstance',
        summary: 'Delete an instance (its VM is killed) and its files',
        description:
          'Its named snapshots stay (they can still be forked) unless delete_snapshots=true.',
        tags,
        params: InstanceIdParams,
        querystring: DeleteInstanceQuery,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      const q = request.query as Static<typeof DeleteInstanceQuery>;
      await instances.delete((request.params as InstanceIdParamsT).id, {
        deleteSnapshots: q.delete_snapshots ?? false,
      });
      return reply.status(204).send();
    },
  );

  app.post(
    '/instances/:id/start',
    {
      preValidation: optionalBody,
      schema: {
        operationId: 'startInstance',
        summary: 'Boot a stopped instance',
        description:
          'The optional body replaces the entrypoint and/or cmd for this boot and later ones.',
        tags,
        params: InstanceIdParams,
        body: StartInstanceRequestSchema,
        'x-body-optional': true,
        response: { 200: InstanceSchema, ...errorResponses },
      },
    },
    (request) =>
      instances.start(
        (request.params as InstanceIdParamsT).id,
        request.body as StartInstanceRequestWire,
      ),
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
      const timeoutMs =
        q.timeout === undefined ? undefined : parseDurationOrSeconds(q.timeout, 'timeout');
      if (timeoutMs !== undefined && timeoutMs > MAX_STOP_MS) {
        throw new VesselError('invalid_argument', `timeout ${q.timeout} is longer than 10m`, {
          details: { field: 'timeout' },
        });
      }
      return instances.stop(
        (request.params as InstanceIdParamsT).id,
        timeoutMs === undefined ? {} : { timeoutMs },
      );
    },
  );

  instanceInspectRoutes(app, deps);
}
