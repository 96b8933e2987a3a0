/**
 * The daemon's own `/openapi.json` as a list of operations the fuzzer can walk, with
 * `$ref`s into `components.schemas` resolved on demand.
 */

/** A JSON Schema node as the document has it (TypeBox output, OpenAPI 3.1). */
export type Schema = { readonly [key: string]: unknown };

export interface Parameter {
  readonly name: string;
  readonly in: 'path' | 'query' | 'header';
  readonly required: boolean;
  readonly style?: string;
  readonly schema: Schema;
}

export interface Operation {
  readonly method: string;
  /** The templated path, e.g. `/instances/{id}/files`. */
  readonly path: string;
  readonly operationId: string;
  readonly parameters: readonly Parameter[];
  /** Content type → body schema; empty when the operation takes no body. */
  readonly bodies: ReadonlyMap<string, Schema>;
  readonly bodyRequired: boolean;
}

export interface Spec {
  readonly operations: readonly Operation[];
  /** Follow `$ref: '#/components/schemas/X'` (once; nested refs are followed by the caller). */
  resolve(schema: Schema): Schema;
}

interface RawOperation {
  operationId?: string;
  parameters?: Parameter[];
  requestBody?: { required?: boolean; content?: Record<string, { schema?: Schema }> };
}

/** Parse the document the daemon serves; throws when it has no operations. */
export function parseSpec(doc: unknown): Spec {
  const d = doc as {
    paths?: Record<string, Record<string, RawOperation>>;
    components?: { schemas?: Record<string, Schema> };
  };
  const components = d.components?.schemas ?? {};
  const operations: Operation[] = [];
  for (const [path, ops] of Object.entries(d.paths ?? {})) {
    for (const [method, op] of Object.entries(ops)) {
      const content = op.requestBody?.content ?? {};
      operations.push({
        method: method.toUpperCase(),
        path,
        operationId: op.operationId ?? `${method} ${path}`,
        parameters: op.parameters ?? [],
        bodies: new Map(Object.entries(content).map(([type, c]) => [type, c.schema ?? {}])),
        bodyRequired: op.requestBody?.required ?? false,
      });
    }
  }
  if (operations.length === 0) throw new Error('/openapi.json lists no operations');
  return {
    operations,
    resolve(schema) {
      const ref = schema.$ref;
      if (typeof ref !== 'string') return schema;
      const name = ref.replace('#/components/schemas/', '');
      const target = components[name];
      if (!target) throw new Error(`/openapi.json: unresolved $ref ${ref}`);
      return target;
    },
  };
}

/** `GET /openapi.json` itself: hidden from the document it serves, but on TCP just as guarded. */
export const OPENAPI_OPERATION: Operation = {
  method: 'GET',
  path: '/openapi.json',
  operationId: 'openapi',
  parameters: [],
  bodies: new Map(),
  bodyRequired: false,
};
