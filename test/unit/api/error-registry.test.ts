// One registry of error codes, three views that must agree: ERROR_CODES (with
// STATUS_BY_KIND), docs/errors.md, and the OpenAPI document's x-error-codes.
import { buildTestApp } from '../../helpers/test-app.js';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { STATUS_BY_KIND } from '../../../src/api/errors.js';
import { exitCodeForKind } from '../../../src/cli/exit-codes.js';
import { ERROR_CODES } from '../../../src/core/errors.js';
import { makeImageEnv, type ImageEnv } from '../../helpers/image-env.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const DOC = path.join(ROOT, 'docs', 'errors.md');

interface Row {
  kind: string;
  status: number;
  description: string;
}

function registry(): Map<string, Row> {
  return new Map(
    Object.entries(ERROR_CODES).map(([code, spec]) => [
      code,
      { kind: spec.kind, status: STATUS_BY_KIND[spec.kind], description: spec.description },
    ]),
  );
}

/** The rows of the "Codes" table: | `code` | Kind | HTTP | CLI exit | Description | */
function parseDoc(text: string): { rows: Map<string, Row & { exit: number }>; dupes: string[] } {
  const rows = new Map<string, Row & { exit: number }>();
  const dupes: string[] = [];
  const re = /^\|\s*`([a-z_]+)`\s*\|\s*(\w+)\s*\|\s*(\d{3})\s*\|\s*(\d)\s*\|\s*(.*?)\s*\|\s*$/;
  for (const line of text.split('\n')) {
    const m = re.exec(line);
    if (!m) continue;
    const [, code, kind, status, exit, description] = m;
    if (rows.has(code!)) dupes.push(code!);
    rows.set(code!, {
      kind: kind!,
      status: Number(status),
      exit: Number(exit),
      description: description!,
    });
  }
  return { rows, dupes };
}

function diff(name: string, want: Map<string, Row>, got: Map<string, Row>): string[] {
  const problems: string[] = [];
  for (const [code, w] of want) {
    const g = got.get(code);
    if (!g) problems.push(`${code} is in ERROR_CODES but missing from ${name}`);
    else {
      if (g.kind !== w.kind)
        problems.push(`${code}: ${name} says kind ${g.kind}, registry ${w.kind}`);
      if (g.status !== w.status)
        problems.push(`${code}: ${name} says HTTP ${g.status}, registry ${w.status}`);
      if (g.description !== w.description)
        problems.push(`${code}: ${name} description differs from the registry`);
    }
  }
  for (const code of got.keys()) {
    if (!want.has(code)) problems.push(`${code} is in ${name} but not in ERROR_CODES`);
  }
  return problems;
}

describe('error registry', () => {
  let doc: ReturnType<typeof parseDoc>;
  let env: ImageEnv;
  let app: FastifyInstance;

  before(async () => {
    doc = parseDoc(await fs.readFile(DOC, 'utf8'));
    env = await makeImageEnv();
    app = await buildTestApp(env);
  });
  after(async () => {
    await app?.close();
    await env?.close();
  });

  test('the diff finds drift in both directions (self-check)', () => {
    const want = registry();
    const got = new Map(want);
    got.delete('internal');
    got.set('made_up', { kind: 'Internal', status: 500, description: 'x' });
    got.set('timeout', { ...want.get('timeout')!, status: 504 });
    assert.deepEqual(diff('doc', want, got).sort(), [
      'internal is in ERROR_CODES but missing from doc',
      'made_up is in doc but not in ERROR_CODES',
      'timeout: doc says HTTP 504, registry 503',
    ]);
  });

  test('docs/errors.md lists exactly the codes of ERROR_CODES with their kind, status and description', () => {
    assert.ok(doc.rows.size > 0, `no code rows parsed from ${DOC}`);
    assert.deepEqual(doc.dupes, [], 'codes listed twice');
    assert.deepEqual(diff('docs/errors.md', registry(), doc.rows), []);
  });

  test('docs/errors.md gives the CLI exit code of each kind', () => {
    for (const [code, row] of doc.rows) {
      const spec = ERROR_CODES[code as keyof typeof ERROR_CODES];
      if (!spec) continue; // reported by the test above
      assert.equal(row.exit, exitCodeForKind(spec.kind), `${code}: exit code`);
    }
  });

  test('every kind has an HTTP status and every status in the registry is an error status', () => {
    for (const [kind, status] of Object.entries(STATUS_BY_KIND)) {
      assert.ok(status >= 400 && status < 600, `${kind} → ${status}`);
    }
  });

  test('the OpenAPI x-error-codes equals the registry', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    assert.equal(res.statusCode, 200);
    const published = res.json<{ 'x-error-codes': Record<string, Row> }>()['x-error-codes'];
    assert.deepEqual(diff('x-error-codes', registry(), new Map(Object.entries(published))), []);
    assert.deepEqual(Object.keys(published), [...registry().keys()]);
  });

  test('the OpenAPI Error schema enumerates the same codes', async () => {
    const res = await app.inject({ method: 'GET', url: '/openapi.json' });
    const spec = res.json<{
      components: { schemas: { Error: { properties: { code: { enum: string[] } } } } };
    }>();
    assert.deepEqual(
      [...spec.components.schemas.Error.properties.code.enum].sort(),
      Object.keys(ERROR_CODES).sort(),
    );
  });
});
