/**
 * A fuzz request in two forms: a draft (path params, query pairs, JSON body) that mutations
 * edit field by field, and the rendered bytes-on-the-wire form that is sent and, when a check
 * fails, printed exactly.
 */
import { generate } from './generate.js';
import type { Rng } from './prng.js';
import type { Operation, Parameter, Spec } from './spec.js';

export interface Draft {
  readonly op: Operation;
  method: string;
  /** Path parameter → its text as it goes into the URL (already percent-encoded). */
  pathParams: Map<string, string>;
  /** Query pairs as they go into the URL (already percent-encoded). */
  query: Array<[string, string]>;
  /** Extra request headers (content-type, accept, ...). */
  headers: Record<string, string>;
  /** A JSON body still open to field mutations; rendered with JSON.stringify. */
  json?: unknown;
  /** Raw body bytes (bad JSON, tar, octet-stream); wins over `json`. */
  raw?: Buffer | undefined;
  /** Names of the mutations applied, for the report. */
  mutations: string[];
}

export interface FuzzRequest {
  readonly operationId: string;
  readonly mutations: readonly string[];
  readonly method: string;
  readonly path: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Buffer;
}

function queryPairs(p: Parameter, value: unknown): Array<[string, string]> {
  const enc = encodeURIComponent;
  if (p.style === 'deepObject' && value && typeof value === 'object') {
    return Object.entries(value).map(([k, v]) => [`${enc(p.name)}[${enc(k)}]`, enc(String(v))]);
  }
  if (Array.isArray(value)) return value.map((v) => [enc(p.name), enc(String(v))]);
  return [[enc(p.name), enc(String(value))]];
}

/** A request a well-behaved client could send for `op` (before any mutation). */
export function draftFor(op: Operation, spec: Spec, rng: Rng): Draft {
  const draft: Draft = {
    op,
    method: op.method,
    pathParams: new Map(),
    query: [],
    headers: {},
    mutations: [],
  };
  for (const p of op.parameters) {
    if (p.in === 'path') {
      draft.pathParams.set(p.name, encodeURIComponent(String(generate(p.schema, spec, rng))));
    } else if (p.in === 'query' && (p.required || rng.chance(0.4))) {
      draft.query.push(...queryPairs(p, generate(p.schema, spec, rng)));
    }
  }
  const types = [...op.bodies.keys()];
  if (types.length > 0 && (op.bodyRequired || rng.chance(0.7))) {
    const type = rng.pick(types);
    draft.headers['content-type'] = type;
    if (type === 'application/json') draft.json = generate(op.bodies.get(type)!, spec, rng);
    else draft.raw = Buffer.from(`fuzz ${rng.word(8)}\n`); // not a tar: refused, creates nothing
  }
  return draft;
}

/** The request exactly as it goes on the wire (minus the transport's own headers). */
export function render(draft: Draft, auth?: string): FuzzRequest {
  let path = draft.op.path;
  for (const [name, value] of draft.pathParams) path = path.replace(`{${name}}`, value);
  if (draft.query.length > 0) path += `?${draft.query.map(([k, v]) => `${k}=${v}`).join('&')}`;
  const body =
    draft.raw ?? (draft.json === undefined ? undefined : Buffer.from(JSON.stringify(draft.json)));
  const headers: Record<string, string> = { ...draft.headers };
  if (auth !== undefined) headers.authorization = auth;
  return {
    operationId: draft.op.operationId,
    mutations: draft.mutations.length > 0 ? draft.mutations : ['none'],
    method: draft.method,
    path,
    headers,
    ...(body ? { body } : {}),
  };
}

/** A printable prefix of some bytes: text with escapes, and the total length. */
export function preview(bytes: Buffer | undefined, max = 300): string {
  if (!bytes || bytes.length === 0) return '(empty)';
  const text = JSON.stringify(bytes.subarray(0, max).toString('latin1'));
  return bytes.length > max ? `${text}… (${bytes.length} bytes)` : text;
}

/** The request as a failure message shows it. */
export function describeRequest(r: FuzzRequest): string {
  const path = r.path.length > 300 ? `${r.path.slice(0, 300)}… (${r.path.length} chars)` : r.path;
  const headers = Object.entries(r.headers)
    .map(([k, v]) => `${k}: ${v.length > 200 ? `${v.slice(0, 200)}…` : v}`)
    .join('; ');
  return `${r.method} ${path} [${r.operationId}; ${r.mutations.join('+')}] headers {${headers}} body ${preview(r.body)}`;
}
