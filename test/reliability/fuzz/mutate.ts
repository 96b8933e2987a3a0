/**
 * Mutations of a valid-ish draft: each names one way a client (or an attacker) gets a
 * request wrong. A fuzz request is a draft with one to three of them applied.
 */
import type { Rng } from './prng.js';
import type { Draft } from './request.js';

type Mutation = (d: Draft, rng: Rng) => void;

const MIB = 1024 * 1024;
/** Percent-encode every UTF-8 byte (lone surrogates become U+FFFD; encodeURIComponent throws). */
const pct = (s: string): string =>
  [...Buffer.from(s)].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');

/** Values of every JSON type; a "wrong type" is one whose type differs from the original. */
const ANY_VALUES: readonly unknown[] = [
  0,
  -1,
  1.5,
  'fz',
  '',
  true,
  false,
  null,
  [],
  ['x'],
  {},
  { a: 1 },
];
const NUMBERS = [-1, 0, -0, 0.5, 2 ** 31, 2 ** 53 + 2, 1e308, -1e308, Number.MAX_SAFE_INTEGER];
const NASTY_STRINGS = [
  'fz\u0000x',
  '\u0000',
  '☃\u202e𝕏',
  '\ud800',
  '\uffff',
  '..',
  '../../../../etc/passwd',
  '/etc/passwd',
  'a/../../b',
  ' ',
  '-rf',
  '$(id)',
  '%s%n',
  'e\u0301',
];
/** Path parameter texts as they go into the URL: traversal, encoded slashes, NUL, bad escapes. */
const NASTY_SEGMENTS = [
  '..',
  '.',
  '%2E%2E',
  '..%2F..%2Fetc%2Fpasswd',
  'a%2Fb',
  '%2F',
  '%00',
  'a%00b',
  '%zz',
  '%',
  '%C0%AE%C0%AE',
  '%FF%FE',
  '%252F',
  '%20',
  'a;b',
  '*',
  pct('☃\u202e'),
  pct('\ud83d\ude00'),
  pct('\ud800'),
  '-1',
  '9'.repeat(40),
];
const BAD_JSON = [
  '{',
  '{"a":',
  "{'a':1}",
  '{"a":1,}',
  '[1,2',
  'nul',
  'undefined',
  '\u0000',
  '{"a":"\\ud800"}',
  '{"a":1}{"b":2}',
  '{"a":01}',
  '{"a":NaN}',
  '{"a":1e999999}',
  '\ufeff{}',
  '{"__proto__":{"polluted":1},"constructor":{"prototype":{"polluted":1}}}',
];
const CONTENT_TYPES = [
  'text/plain',
  'application/xml',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=fz',
  'application/json; charset=utf-16',
  'application/jsonx',
  'application/octet-stream',
  'application/x-tar',
  '*/*',
  'application/json, text/plain',
  ';;;',
  'application/json; charset=',
];
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD'];

function hugeString(rng: Rng): string {
  return 'A'.repeat(rng.pick([4096, 64 * 1024, MIB]));
}

/** Every [container, key] of objects and arrays inside a JSON value (the body's fields). */
function fields(value: unknown, out: Array<[Record<string, unknown>, string]> = []) {
  if (value && typeof value === 'object') {
    for (const key of Object.keys(value)) {
      const container = value as Record<string, unknown>;
      out.push([container, key]);
      fields(container[key], out);
    }
  }
  return out;
}

/** Replace one body field (or the whole body when it has none) with `make(old)`. */
function setField(d: Draft, rng: Rng, make: (old: unknown) => unknown): void {
  const all = fields(d.json);
  if (d.json === undefined || all.length === 0) {
    d.json = make(d.json);
    d.raw = undefined;
    d.headers['content-type'] ??= 'application/json';
    return;
  }
  const [container, key] = rng.pick(all);
  container[key] = make(container[key]);
}

function setPathParam(d: Draft, rng: Rng, value: string): boolean {
  const names = [...d.pathParams.keys()];
  if (names.length === 0) return false;
  d.pathParams.set(rng.pick(names), value);
  return true;
}

function setQueryValue(d: Draft, rng: Rng, value: string): void {
  if (d.query.length > 0 && rng.chance(0.7)) rng.pick(d.query)[1] = value;
  else d.query.push([rng.pick(['path', 'timeout', 'tags', 'state', 'fz_extra']), value]);
}

function setRaw(d: Draft, text: string | Buffer, type = 'application/json'): void {
  d.json = undefined;
  d.raw = Buffer.isBuffer(text) ? text : Buffer.from(text);
  d.headers['content-type'] = type;
}

/** The catalogue: name → mutation. */
export const MUTATIONS: Readonly<Record<string, Mutation>> = {
  wrongType(d, rng) {
    setField(d, rng, (old) => rng.pick(ANY_VALUES.filter((v) => typeof v !== typeof old)));
  },
  missingRequired(d, rng) {
    const all = fields(d.json);
    if (all.length === 0) d.json = {};
    else {
      const [container, key] = rng.pick(all);
      delete container[key];
    }
  },
  extraField(d, rng) {
    setField(d, rng, (old) =>
      old && typeof old === 'object' && !Array.isArray(old) ? { ...old, fz_extra: 1 } : old,
    );
    if (d.json && typeof d.json === 'object' && !Array.isArray(d.json))
      d.json = { ...d.json, [`fz_${rng.word(3)}`]: rng.pick(ANY_VALUES) };
  },
  hugeString(d, rng) {
    const where = rng.int(0, 2);
    if (where === 0) setField(d, rng, () => hugeString(rng));
    else if (where === 1 && setPathParam(d, rng, 'A'.repeat(rng.pick([200, 2000, 20_000])))) return;
    else setQueryValue(d, rng, 'A'.repeat(rng.pick([200, 2000, 20_000])));
  },
  nastyString(d, rng) {
    const s = rng.pick(NASTY_STRINGS);
    if (rng.chance(0.5)) setField(d, rng, () => s);
    else setQueryValue(d, rng, pct(s));
  },
  nastyPathParam(d, rng) {
    if (!setPathParam(d, rng, rng.pick(NASTY_SEGMENTS))) setQueryValue(d, rng, '%00');
  },
  nastyNumber(d, rng) {
    const n = rng.pick(NUMBERS);
    if (rng.chance(0.5)) setField(d, rng, () => n);
    else setQueryValue(d, rng, rng.pick([String(n), 'NaN', 'Infinity', '1e999', '0x10', '']));
  },
  badJson(d, rng) {
    setRaw(d, rng.pick(BAD_JSON));
  },
  deepNesting(d, rng) {
    const n = rng.pick([1000, 100_000]);
    setRaw(d, `${'['.repeat(n)}${']'.repeat(n)}`);
  },
  wrongContentType(d, rng) {
    d.raw ??= Buffer.from(JSON.stringify(d.json ?? {}));
    d.json = undefined;
    const type = rng.pick([...CONTENT_TYPES, '']);
    if (type) d.headers['content-type'] = type;
    else delete d.headers['content-type'];
  },
  emptyBody(d) {
    setRaw(d, '');
  },
  notAnObject(d, rng) {
    d.raw = undefined;
    d.json = rng.pick([[d.json ?? {}], 'fz', 1, null, true, []]);
    d.headers['content-type'] = 'application/json';
  },
  tooLargeBody(d) {
    setRaw(d, JSON.stringify({ fz: 'A'.repeat(MIB + 16) }));
  },
  wrongMethod(d, rng) {
    d.method = rng.pick(METHODS.filter((m) => m !== d.method));
  },
  nastyQuery(d, rng) {
    const pairs: Array<[string, string]> = [
      ['tags', 'x'],
      ['tags[a][b]', 'c'],
      ['tags[__proto__]', '1'],
      ['tags[constructor][prototype]', '1'],
      ['%zz', '%zz'],
      ['path', ''],
      ['timeout', '-1'],
      ['follow', 'maybe'],
      ['state', 'Nope'],
    ];
    const [k, v] = rng.pick(pairs);
    d.query.push([k, v]);
    if (rng.chance(0.3)) d.query.push([k, v]); // repeated parameter
  },
  manyParams(d, rng) {
    for (let i = 0; i < rng.pick([100, 1000]); i++) d.query.push([`tags[k${i}]`, 'v']);
  },
  badUpgrade(d, rng) {
    d.headers.connection = 'upgrade';
    d.headers.upgrade = rng.pick(['websocket', 'h2c', 'fz']);
    d.headers['sec-websocket-key'] = rng.pick(['x', '', 'AAAAAAAAAAAAAAAAAAAAAA==']);
    d.headers['sec-websocket-version'] = rng.pick(['13', '99', 'x']);
  },
  streamAccept(d) {
    d.headers.accept = 'application/vnd.vessel.stream';
  },
};

const NAMES = Object.keys(MUTATIONS);

/** Apply one mutation (most of the time) or a stack of two or three. */
export function mutate(d: Draft, rng: Rng): Draft {
  const count = rng.chance(0.75) ? 1 : rng.int(2, 3);
  for (let i = 0; i < count; i++) {
    const name = rng.pick(NAMES);
    MUTATIONS[name]!(d, rng);
    d.mutations.push(name);
  }
  return d;
}
