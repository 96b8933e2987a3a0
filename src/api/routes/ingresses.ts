import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { VesselError } from '../../core/errors.js';
import { matchTags } from '../../core/tags.js';
import { IngressSchema, type CreateIngressRequestWire } from '../../core/wire.js';
import { CreateIngressBodySchema, type CreateIngressBodyWire } from '../../core/wire-ops.js';
import type { IngressManager } from '../../ingress/index.js';
import { errorResponses } from '../schemas.js';
import { isFalse, unsupportedFields, type Unsupported } from '../unsupported.js';
import { TagsQuery } from './images.js';
import { foldTagsQuery } from './instances.js';

const INGRESS_UNSUPPORTED: readonly Unsupported[] = [
  { field: 'rules[].tls', reason: 'TLS termination is not supported', noop: isFalse },
  { field: 'rules[].redirect_http', reason: 'HTTPS redirects are not supported', noop: isFalse },
  {
    field: 'rules[].request_header_auth',
    reason: 'request header authentication is not supported',
  },
];

/** hypeman's `rules` (exactly one) or Vessel's flat fields → one route. */
export function toIngressRoute(body: CreateIngressBodyWire): CreateIngressRequestWire {
  const flat = body.hostname !== undefined || body.guest_port !== undefined;
  const tags = body.tags === undefined ? {} : { tags: body.tags };
  if (body.rules !== undefined) {
    if (flat || body.instance !== undefined || body.host_port !== undefined) {
      throw new VesselError(
        'invalid_argument',
        'give rules, or hostname/guest_port/instance/host_port, not both',
        { details: { field: 'rules' } },
      );
    }
    if (body.rules.length !== 1) {
      throw new VesselError(
        'unsupported_field',
        `rules: an ingress has exactly one rule here (got ${body.rules.length}); create one ingress per rule`,
        { details: { field: 'rules' } },
      );
    }
    const [rule] = body.rules as [NonNullable<CreateIngressBodyWire['rules']>[number]];
    return {
      name: body.name,
      instance: rule.target.instance,
      hostname: rule.match.hostname,
      guest_port: rule.target.port,
      ...(rule.match.port === undefined ? {} : { host_port: rule.match.port }),
      ...tags,
    };
  }
  if (body.hostname === undefined || body.guest_port === undefined) {
    throw new VesselError('invalid_argument', 'give rules (or hostname and guest_port)', {
      details: { field: 'rules' },
    });
  }
  return {
    name: body.name,
    hostname: body.hostname,
    guest_port: body.guest_port,
    ...(body.instance === undefined ? {} : { instance: body.instance }),
    ...(body.host_port === undefined ? {} : { host_port: body.host_port }),
    ...tags,
  };
}

const IdParams = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128, description: 'Ingress id or name' }),
});

/**
 * `/ingresses` (hypeman-shaped): HTTP routes from a Host header on a host port to an
 * instance's guest port. Creating the first route on a port starts its listener.
 */
export function ingressRoutes(app: FastifyInstance, ingresses: IngressManager): void {
  const tags = ['ingresses'];
  const unsupported = unsupportedFields(INGRESS_UNSUPPORTED);

  app.post(
    '/ingresses',
    {
      preValidation: unsupported.preValidation,
      schema: {
        operationId: 'createIngress',
        summary: 'Create an ingress route',
        description:
          "Takes hypeman's body (`name`, one rule in `rules`: `match.hostname`, `match.port` = the host port, `target.instance`, `target.port` = the guest port; `tags`) or the flat fields. Routes HTTP requests whose Host header (port stripped, case-insensitive) is `hostname` and that arrive on `host_port` to `guest_port` of `instance`. A hostname pattern such as `{instance}.example.com` takes the instance name from the matching label (instance must then be `{instance}`, the default). Exact hostnames win over patterns. The backend is the guest address on the bridge, or in user-mode networking a published host port that maps `guest_port`; when there is neither, requests get 502. Unknown hosts get 404.",
        tags,
        body: CreateIngressBodySchema,
        'x-unsupported-fields': unsupported.doc,
        response: { 201: IngressSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const route = toIngressRoute(request.body as CreateIngressBodyWire);
      return reply.status(201).send(await ingresses.create(route));
    },
  );

  app.get(
    '/ingresses',
    {
      schema: {
        operationId: 'listIngresses',
        summary: 'List ingress routes, optionally by tags',
        tags,
        querystring: TagsQuery,
        response: { 200: Type.Array(IngressSchema), ...errorResponses },
      },
      preValidation: foldTagsQuery,
    },
    (request) => {
      const filter = (request.query as Static<typeof TagsQuery>).tags;
      return ingresses.list().filter((i) => matchTags(i.tags, filter));
    },
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
