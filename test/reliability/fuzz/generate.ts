/**
 * Valid-ish values from a JSON Schema: what a well-behaved client would send, with small
 * numbers and short, made-up names, so a request that passes validation refers to nothing
 * that exists (no VM boots, no real image is pulled) and whatever it creates is small.
 */
import type { Rng } from './prng.js';
import type { Schema, Spec } from './spec.js';

const MAX_DEPTH = 6;

/** Strings tried (after a random word) against a `pattern`: ids, names, digests, tags. */
const PATTERN_CANDIDATES = [
  'a',
  'fz.1',
  'fz-1_a',
  'Fz',
  '1',
  `sha256:${'a'.repeat(64)}`,
  'registry.invalid/fz/img:1',
];

function patternString(pattern: string, rng: Rng): string {
  const re = new RegExp(pattern, 'u');
  const word = `fz${rng.word(6)}`;
  if (re.test(word)) return word;
  return PATTERN_CANDIDATES.find((c) => re.test(c)) ?? word;
}

function stringFor(schema: Schema, rng: Rng): string {
  if (schema.format === 'date-time') return new Date(Date.UTC(2030, 0, 1)).toISOString();
  if (typeof schema.pattern === 'string') return patternString(schema.pattern, rng);
  const min = typeof schema.minLength === 'number' ? schema.minLength : 0;
  const max = typeof schema.maxLength === 'number' ? schema.maxLength : min + 12;
  const length = rng.int(Math.max(min, 1), Math.max(Math.min(max, min + 10), 1));
  return `fz${rng.word(length)}`.slice(0, length);
}

function numberFor(schema: Schema, rng: Rng): number {
  const min = typeof schema.minimum === 'number' ? schema.minimum : 0;
  const max = typeof schema.maximum === 'number' ? schema.maximum : min + 16;
  // The low end of the range: a created volume or a TTL stays small.
  return rng.int(min, Math.min(max, min + 4));
}

function objectFor(schema: Schema, spec: Spec, rng: Rng, depth: number): Record<string, unknown> {
  const props = (schema.properties ?? {}) as Record<string, Schema>;
  const required = new Set((schema.required ?? []) as string[]);
  const out: Record<string, unknown> = {};
  for (const [key, sub] of Object.entries(props)) {
    if (required.has(key) || rng.chance(0.3)) out[key] = generate(sub, spec, rng, depth + 1);
  }
  const patterns = Object.entries((schema.patternProperties ?? {}) as Record<string, Schema>);
  if (patterns.length > 0 && rng.chance(0.3)) {
    const [keyPattern, sub] = rng.pick(patterns);
    out[patternString(keyPattern, rng)] = generate(sub, spec, rng, depth + 1);
  }
  return out;
}

/** One value that (mostly) validates against `schema`. */
export function generate(input: Schema, spec: Spec, rng: Rng, depth = 0): unknown {
  const schema = spec.resolve(input);
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum)) return rng.pick(schema.enum as unknown[]);
  const branches = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (branches) return generate(rng.pick(branches), spec, rng, depth);
  const type = Array.isArray(schema.type) ? rng.pick(schema.type as string[]) : schema.type;
  switch (type) {
    case 'object':
      return depth > MAX_DEPTH ? {} : objectFor(schema, spec, rng, depth);
    case 'array': {
      const min = typeof schema.minItems === 'number' ? schema.minItems : 0;
      const n = depth > MAX_DEPTH ? min : rng.int(min, min + 2);
      const items = (schema.items ?? {}) as Schema;
      return Array.from({ length: n }, () => generate(items, spec, rng, depth + 1));
    }
    case 'string':
      return stringFor(schema, rng);
    case 'integer':
    case 'number':
      return numberFor(schema, rng);
    case 'boolean':
      return rng.chance(0.5);
    case 'null':
      return null;
    default:
      return stringFor(schema, rng);
  }
}
