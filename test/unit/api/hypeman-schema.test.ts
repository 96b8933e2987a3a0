// Vessel's /openapi.json against the hypeman API (test/fixtures/hypeman-api.json, extracted
// from kernel/hypeman's openapi.yaml): for every in-scope operation the same path, method and
// operationId; every parameter and request field hypeman clients send is accepted (or listed in
// x-unsupported-fields and refused by name); nothing is required that hypeman does not require;
// every field hypeman requires in a response is required here too, with a compatible type and
// an enum no wider than hypeman's. The few known differences are listed and must stay true.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildTestApp } from '../../helpers/test-app.js';
import { makeImageEnv, makeInstanceManager, type ImageEnv } from '../../helpers/image-env.js';

type Json = Record<string, unknown>;
type Dir = 'request' | 'response';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'hypeman-api.json');

/**
 * Differences that are deliberate or owned elsewhere, each with its reason. The test checks
 * each is still there: when one is fixed, take it off the list.
 */
const KNOWN: Record<string, string> = {
  'getImage 200 digest: nullable': 'null until the manifest is resolved (pending pulls)',
  'listImages 200 [].digest: nullable': 'as getImage',
  'createImage 202 digest: nullable': 'as getImage',
  'getImage 200 platform: nullable': 'null until the manifest is resolved',
  'listImages 200 [].platform: nullable': 'as getImage',
  'createImage 202 platform: nullable': 'as getImage',
  'getInstanceStats 200 cpu_seconds: nullable': 'null with a reason when unknowable',
  'getInstanceStats 200 memory_rss_bytes: nullable': 'as cpu_seconds',
  'getInstanceStats 200 memory_vms_bytes: nullable': 'as cpu_seconds',
  'getInstanceStats 200 network_rx_bytes: nullable': 'user-mode networking has no counters',
  'getInstanceStats 200 network_tx_bytes: nullable': 'as network_rx_bytes',
  'createInstance body volumes[].volume_id: required here, optional in hypeman':
    "hypeman's VolumeMount requires it too; the fixture reduces volumes to plain objects",
  'createInstance body volumes[].mount_path: required here, optional in hypeman': 'as volume_id',
  'getBuildEvents 200 type: enum adds step':
    "Vessel's step events carry each Dockerfile step's state (a client ignores unknown types)",
};

/** Error statuses hypeman documents that Vessel never returns. */
const NEVER_RETURNED = new Set(['429', '501']);

class Checker {
  readonly problems: string[] = [];
  readonly omitted: string[] = [];
  constructor(
    private readonly fixture: { schemas: Record<string, Json> },
    private readonly doc: Json,
  ) {}

  private hres(s: Json): Json {
    return typeof s.$ref === 'string'
      ? { ...this.hres(this.fixture.schemas[s.$ref]!), ...omit(s, '$ref') }
      : s;
  }

  private vres(s: Json): Json {
    if (typeof s.$ref !== 'string') return s;
    const name = s.$ref.replace('#/components/schemas/', '');
    return this.vres(((this.doc.components as Json).schemas as Record<string, Json>)[name]!);
  }

  /** Vessel alternatives of a schema (anyOf flattened), the null one apart. */
  private alts(s: Json): { alts: Json[]; nullable: boolean } {
    const r = this.vres(s);
    if (Array.isArray(r.anyOf)) {
      const parts = (r.anyOf as Json[]).map((a) => this.alts(a));
      return { alts: parts.flatMap((p) => p.alts), nullable: parts.some((p) => p.nullable) };
    }
    if (r.type === 'null') return { alts: [], nullable: true };
    return { alts: [r], nullable: false };
  }

  private typeOf(s: Json): string | undefined {
    if (s.type !== undefined) return s.type as string;
    if (s.const !== undefined) return typeof s.const;
    if (s.properties || s.patternProperties || s.additionalProperties) return 'object';
    return undefined;
  }

  private enumOf(alts: Json[]): string[] | undefined {
    if (alts.length > 0 && alts.every((a) => a.const !== undefined))
      return alts.map((a) => String(a.const));
    const withEnum = alts.filter((a) => Array.isArray(a.enum));
    return withEnum.length === alts.length && alts.length > 0
      ? withEnum.flatMap((a) => (a.enum as unknown[]).map(String))
      : undefined;
  }

  private mapValue(v: Json): Json | undefined {
    if (typeof v.additionalProperties === 'object') return v.additionalProperties as Json;
    const pp = v.patternProperties as Record<string, Json> | undefined;
    return pp ? Object.values(pp)[0] : undefined;
  }

  compare(h0: Json, v0: Json, dir: Dir, at: string, unsupported: Set<string>): void {
    const h = this.hres(h0);
    const { alts, nullable } = this.alts(v0);
    const ht = this.typeOf(h);
    const fits = (t: string | undefined): boolean =>
      ht === undefined ||
      t === undefined ||
      t === ht ||
      (dir === 'request' ? t === 'number' && ht === 'integer' : t === 'integer' && ht === 'number');
    const matching = alts.filter((a) => fits(this.typeOf(a)));
    if (dir === 'request' && matching.length === 0) {
      this.problems.push(`${at}: type ${ht} not accepted`);
      return;
    }
    if (dir === 'response') {
      if (matching.length !== alts.length) this.problems.push(`${at}: type differs from ${ht}`);
      if (nullable && h.nullable !== true) this.problems.push(`${at}: nullable`);
    }
    const hEnum = Array.isArray(h.enum) ? (h.enum as unknown[]).map(String) : undefined;
    const vEnum = this.enumOf(matching);
    if (hEnum && dir === 'request' && vEnum) {
      const lacking = hEnum.filter((e) => !vEnum.includes(e));
      if (lacking.length) this.problems.push(`${at}: enum lacks ${lacking.join(', ')}`);
    }
    if (hEnum && dir === 'response') {
      if (!vEnum) this.problems.push(`${at}: no enum (hypeman: ${hEnum.join(', ')})`);
      else {
        const extra = vEnum.filter((e) => !hEnum.includes(e));
        if (extra.length) this.problems.push(`${at}: enum adds ${extra.join(', ')}`);
      }
    }
    const v = matching.find((a) => this.typeOf(a) === ht) ?? matching[0];
    if (!v) return;
    if (ht === 'array' && h.items && v.items) {
      this.compare(h.items as Json, v.items as Json, dir, `${at}[]`, unsupported);
    }
    if (ht === 'object') this.compareObject(h, v, dir, at, unsupported);
  }

  private compareObject(h: Json, v0: Json, dir: Dir, at: string, unsupported: Set<string>) {
    const v = this.vres(v0);
    const join = (k: string): string => (at.endsWith(' ') ? `${at}${k}` : `${at}.${k}`);
    if (typeof h.additionalProperties === 'object') {
      const vv = this.mapValue(v);
      if (!vv) this.problems.push(`${at}: not a map`);
      else this.compare(h.additionalProperties as Json, vv, dir, `${join('*')}`, unsupported);
    }
    const hp = (h.properties ?? {}) as Record<string, Json>;
    const vp = (v.properties ?? {}) as Record<string, Json>;
    const hreq = new Set((h.required ?? []) as string[]);
    const vreq = new Set((v.required ?? []) as string[]);
    const field = (k: string): string => join(k).replace(/^.* /, '');
    for (const [k, hs] of Object.entries(hp)) {
      const vs = vp[k];
      if (vs === undefined) {
        if (dir === 'request' && !unsupported.has(field(k)))
          this.problems.push(`${join(k)}: not accepted and not in x-unsupported-fields`);
        else if (dir === 'response' && hreq.has(k)) this.problems.push(`${join(k)}: missing`);
        else if (dir === 'response') this.omitted.push(join(k));
        continue;
      }
      if (dir === 'response' && hreq.has(k) && !vreq.has(k))
        this.problems.push(`${join(k)}: not required`);
      this.compare(hs, vs, dir, join(k), unsupported);
    }
    if (dir === 'request') {
      for (const k of vreq)
        if (!hreq.has(k)) this.problems.push(`${join(k)}: required here, optional in hypeman`);
    }
  }
}

/** Whether a schema of the document (its $ref followed) is an object with properties. */
function isObject(s: Json | undefined, doc: Json): boolean {
  const name =
    typeof s?.$ref === 'string' ? s.$ref.replace('#/components/schemas/', '') : undefined;
  const r = name ? ((doc.components as Json).schemas as Record<string, Json>)[name] : s;
  return r?.type === 'object' && typeof r.properties === 'object';
}

function omit(o: Json, key: string): Json {
  const { [key]: _drop, ...rest } = o;
  return rest;
}

interface FixtureParam {
  name: string;
  in: string;
  required: boolean;
  schema: Json;
  style?: string;
}
interface FixtureOp {
  operationId: string;
  method: string;
  path: string;
  parameters?: FixtureParam[];
  /** contentType: the body's media type when not application/json (multipart/form-data). */
  requestBody?: { schema: string; required: boolean; contentType?: string };
  responses: Record<string, string | [string] | null>;
  /** The schema of each event's data of a text/event-stream response. */
  eventData?: string;
}

describe('the OpenAPI document against the hypeman API', () => {
  let env: ImageEnv;
  let app: FastifyInstance;
  let doc: Json;
  let fixture: { operations: FixtureOp[]; schemas: Record<string, Json> };
  const seen = new Set<string>();

  before(async () => {
    fixture = JSON.parse(await fs.readFile(FIXTURE, 'utf8')) as typeof fixture;
    env = await makeImageEnv();
    const instances = makeInstanceManager(env);
    app = await buildTestApp(env, {
      instances: instances,
      version: '0.0.0-test',
      probeHost: () => Promise.reject(new Error('not probed')),
    });
    doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json<Json>();
  });
  after(async () => {
    await app?.close();
    await env?.close();
  });

  /** Problems of one operation (known ones marked as seen and dropped). */
  function check(op: FixtureOp): { problems: string[]; omitted: string[] } {
    const c = new Checker(fixture, doc);
    const vop = (doc.paths as Record<string, Record<string, Json>>)[op.path]?.[op.method];
    if (!vop)
      return {
        problems: [`${op.method.toUpperCase()} ${op.path}: no such operation`],
        omitted: [],
      };
    const id = op.operationId;
    if (vop.operationId !== id) c.problems.push(`${id} operationId: ${String(vop.operationId)}`);
    const unsupported = new Set(Object.keys(vop['x-unsupported-fields'] ?? {}));
    const vparams = (vop.parameters ?? []) as (FixtureParam & { schema: Json })[];
    for (const hp of op.parameters ?? []) {
      const vp = vparams.find((p) => p.name === hp.name && p.in === hp.in);
      if (!vp) {
        c.problems.push(`${id} param ${hp.name}: missing`);
        continue;
      }
      if (hp.required !== vp.required) c.problems.push(`${id} param ${hp.name}: required differs`);
      if (hp.style === 'deepObject' && (vp as { style?: string }).style !== 'deepObject')
        c.problems.push(`${id} param ${hp.name}: not deepObject`);
      c.compare(hp.schema, vp.schema, 'request', `${id} param ${hp.name}`, new Set());
    }
    for (const vp of vparams)
      if (vp.required && !(op.parameters ?? []).some((p) => p.name === vp.name))
        c.problems.push(`${id} param ${vp.name}: required here, unknown to hypeman`);
    const vbody = vop.requestBody as Json | undefined;
    if (op.requestBody) {
      const media = op.requestBody.contentType ?? 'application/json';
      const schema = (vbody?.content as Json | undefined)?.[media] as Json | undefined;
      if (!schema)
        c.problems.push(
          `${id} body: not accepted${media === 'application/json' ? '' : ` as ${media}`}`,
        );
      else if (media === 'multipart/form-data' && !isObject(schema.schema as Json, doc))
        // A form is checked part by part, as an object: an opaque body says nothing of its parts.
        c.problems.push(`${id} body: ${media} parts not described`);
      else {
        if (vbody!.required === true && !op.requestBody.required)
          c.problems.push(`${id} body: required here, optional in hypeman`);
        c.compare(
          { $ref: op.requestBody.schema },
          schema.schema as Json,
          'request',
          `${id} body `,
          unsupported,
        );
      }
    } else if (vbody?.required === true)
      c.problems.push(`${id} body: required here, none in hypeman`);
    const vres = (vop.responses ?? {}) as Record<string, Json>;
    for (const [status, shape] of Object.entries(op.responses)) {
      const vr = vres[status];
      if (!vr) {
        if (!(status !== '200' && !status.startsWith('2') && NEVER_RETURNED.has(status)))
          c.problems.push(`${id} ${status}: not a documented response`);
        continue;
      }
      const content = vr.content as Record<string, { schema: Json }> | undefined;
      if (shape === null || shape === 'text/event-stream') {
        if (shape === null && content) c.problems.push(`${id} ${status}: has a body`);
        if (shape !== null && !content?.[shape]) c.problems.push(`${id} ${status}: not ${shape}`);
        if (shape === null || !content?.[shape] || !op.eventData) continue;
      }
      // An event stream's schema is that of each event's data.
      const sse = shape === 'text/event-stream';
      const schema = content?.[sse ? shape : 'application/json']?.schema;
      if (!schema) {
        c.problems.push(`${id} ${status}: no JSON body`);
        continue;
      }
      if (sse && !isObject(schema, doc)) {
        c.problems.push(`${id} ${status}: event data not described (hypeman: ${op.eventData})`);
        continue;
      }
      const name = sse ? op.eventData! : Array.isArray(shape) ? shape[0] : shape;
      const h = Array.isArray(shape) ? { type: 'array', items: { $ref: name } } : { $ref: name };
      const before = c.omitted.length;
      c.compare(h, schema, 'response', `${id} ${status} `, new Set());
      // Omissions by schema (`Instance.gpu`), not by operation.
      for (let i = before; i < c.omitted.length; i++)
        c.omitted[i] = c.omitted[i]!.replace(/^\S+ \d+ (\[\]\.)?/, `${name}.`);
    }
    const known = c.problems.filter((p) => p in KNOWN);
    for (const k of known) seen.add(k);
    return { problems: c.problems.filter((p) => !(p in KNOWN)), omitted: c.omitted };
  }

  test('the fixture lists the operations in scope', () => {
    // 25 of issue 9, 6 named-snapshot operations, 5 build operations
    assert.equal(fixture.operations.length, 36);
  });

  test('every in-scope operation is compatible', () => {
    const all: string[] = [];
    for (const op of fixture.operations) all.push(...check(op).problems);
    assert.deepEqual(all, []);
  });

  test('optional hypeman response fields Vessel does not send are the expected ones', () => {
    const omitted = new Set(fixture.operations.flatMap((op) => check(op).omitted));
    // hypeman features Vessel does not have (GPUs, volumes, policies, bandwidth and I/O limits,
    // persistent builders, BuildKit and lockfile provenance).
    assert.deepEqual([...omitted].sort(), [
      'Build.builder_id',
      'Build.provenance.buildkit_version',
      'Build.provenance.lockfile_hashes',
      'Ingress.rules[].request_header_auth',
      'Instance.auto_standby',
      'Instance.gpu',
      'Instance.health_check',
      'Instance.health_status',
      'Instance.hotplug_size',
      'Instance.network.bandwidth_download',
      'Instance.network.bandwidth_upload',
      'Instance.restart_policy',
      'Instance.restart_status',
      'Instance.snapshot_policy',
      'Instance.volumes',
      'Resources.allocations[].disk_io_bps',
      'Resources.allocations[].network_download_bps',
      'Resources.allocations[].network_upload_bps',
      'Resources.disk_breakdown',
      'Resources.disk_io',
      'Resources.gpu',
    ]);
  });

  test('the known differences are still there (remove fixed ones from KNOWN)', () => {
    for (const op of fixture.operations) check(op);
    assert.deepEqual([...seen].sort(), Object.keys(KNOWN).sort());
  });
});
