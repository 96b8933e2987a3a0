import type { RouteOptions } from 'fastify';
import { ERROR_CODES } from '../core/errors.js';
import { STATUS_BY_KIND } from './errors.js';

type Json = Record<string, unknown>;

interface RouteSchema {
  summary?: string;
  description?: string;
  tags?: string[];
  operationId?: string;
  params?: Json;
  querystring?: Json;
  body?: Json;
  response?: Record<string, Json>;
  /** Non-JSON request body media types (e.g. application/x-tar). */
  'x-consumes'?: string[];
  /** Non-JSON response media type(s) of the 2xx response (e.g. text/event-stream). */
  'x-produces'?: string | string[];
  /** The JSON body may be left out (the route treats none as `{}`). */
  'x-body-optional'?: boolean;
  /** The parts of a multipart/form-data body, as an object schema. */
  'x-form'?: Json;
}

/** Route schema keys that shape the document rather than being copied into it. */
const HINTS = new Set(['x-consumes', 'x-produces', 'x-body-optional', 'x-form']);

/** Strip TypeBox's symbol keys and hoist titled schemas into components. */
function hoist(schema: unknown, components: Record<string, Json>): unknown {
  if (Array.isArray(schema)) return schema.map((s) => hoist(s, components));
  if (typeof schema !== 'object' || schema === null) return schema;
  const plain = JSON.parse(JSON.stringify(schema)) as Json;
  const out: Json = {};
  for (const [k, v] of Object.entries(plain)) out[k] = hoist(v, components);
  if (typeof out.title === 'string' && out.type === 'object') {
    components[out.title] = out;
    return { $ref: `#/components/schemas/${out.title}` };
  }
  return out;
}

function parameters(where: 'path' | 'query', schema: Json | undefined): Json[] {
  if (!schema || typeof schema.properties !== 'object' || schema.properties === null) return [];
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  return Object.entries(schema.properties as Record<string, Json>).map(([name, s]) => ({
    name,
    in: where,
    required: where === 'path' || required.has(name),
    ...(typeof s.description === 'string' ? { description: s.description } : {}),
    // An object in the query string is `name[key]=value` (e.g. `tags[team]=backend`).
    ...(s.type === 'object' ? { style: 'deepObject', explode: true } : {}),
    schema: JSON.parse(JSON.stringify(s)) as Json,
  }));
}

/**
 * Collects Fastify routes as they are registered and renders an OpenAPI 3.1
 * document from their schemas, so the document cannot drift from what the
 * server validates.
 */
export class OpenApiCollector {
  private readonly routes: RouteOptions[] = [];

  add(route: RouteOptions): void {
    if ((route.schema as { hide?: boolean } | undefined)?.hide) return;
    this.routes.push(route);
  }

  document(info: { title: string; version: string }): Json {
    const components: Record<string, Json> = {};
    const paths: Record<string, Record<string, Json>> = {};
    for (const route of this.routes) {
      const methods = (Array.isArray(route.method) ? route.method : [route.method]).filter(
        (m) => m !== 'HEAD',
      );
      const url = route.url.replace(/:([A-Za-z_]+)/g, '{$1}');
      const schema = (route.schema ?? {}) as RouteSchema;
      const responses: Json = {};
      for (const [status, s] of Object.entries(schema.response ?? {})) {
        const produces = status.startsWith('2') ? schema['x-produces'] : undefined;
        const media = produces === undefined ? ['application/json'] : [produces].flat();
        const content = Object.fromEntries(media.map((m) => [m, { schema: hoist(s, components) }]));
        responses[status] = {
          description:
            (s.description as string | undefined) ?? (status.startsWith('2') ? 'Success' : 'Error'),
          ...(s.type === 'null' ? {} : { content }),
        };
      }
      if (Object.keys(responses).length === 0) responses['200'] = { description: 'Success' };
      let requestBody: Json | undefined;
      if (schema.body) {
        requestBody = {
          required: schema['x-body-optional'] !== true,
          content: { 'application/json': { schema: hoist(schema.body, components) } },
        };
      } else if (schema['x-consumes']) {
        requestBody = {
          required: true,
          content: Object.fromEntries(
            schema['x-consumes'].map((m) => [
              m,
              m === 'multipart/form-data' && schema['x-form']
                ? { schema: hoist(schema['x-form'], components) }
                : { schema: { type: 'string', contentMediaType: m } },
            ]),
          ),
        };
      }
      // Extensions (`x-...`) other than the media-type hints go into the document as they are.
      const extensions = Object.fromEntries(
        Object.entries(schema).filter(([k]) => k.startsWith('x-') && !HINTS.has(k)),
      );
      for (const method of methods) {
        paths[url] ??= {};
        paths[url][method.toLowerCase()] = {
          ...extensions,
          ...(schema.operationId ? { operationId: schema.operationId } : {}),
          ...(schema.summary ? { summary: schema.summary } : {}),
          ...(schema.description ? { description: schema.description } : {}),
          ...(schema.tags ? { tags: schema.tags } : {}),
          parameters: [
            ...parameters('path', schema.params),
            ...parameters('query', schema.querystring),
          ],
          ...(requestBody ? { requestBody } : {}),
          responses,
        };
      }
    }
    return {
      openapi: '3.1.0',
      info: {
        ...info,
        description:
          'Vessel runs OCI images as microVMs. Errors are `{code, message}`; the codes and their HTTP statuses are listed in `x-error-codes`.',
      },
      components: {
        schemas: components,
        securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } },
      },
      security: [{}, { bearerAuth: [] }],
      paths,
      'x-error-codes': Object.fromEntries(
        Object.entries(ERROR_CODES).map(([code, spec]) => [
          code,
          { kind: spec.kind, status: STATUS_BY_KIND[spec.kind], description: spec.description },
        ]),
      ),
    };
  }
}
