/**
 * Fields of a hypeman API request that Vessel cannot honour. A request that
 * sets one gets a 400 `unsupported_field` naming it and saying why — never a
 * silent ignore. A value that asks for nothing (`devices: []`,
 * `restart_policy: {policy: "never"}`) is accepted and dropped. The list is
 * published per operation in the OpenAPI document as `x-unsupported-fields`.
 */
import type { FastifyRequest } from 'fastify';
import { VesselError } from '../core/errors.js';

export interface Unsupported {
  /** Dotted path; `[]` steps into every element of an array: `rules[].tls`. */
  readonly field: string;
  readonly reason: string;
  /** True for a value that asks for nothing: it is dropped instead of refused. */
  readonly noop?: (value: unknown) => boolean;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export const emptyArray = (v: unknown): boolean => Array.isArray(v) && v.length === 0;
export const emptyObject = (v: unknown): boolean =>
  v === null || (isObj(v) && Object.keys(v).length === 0);
export const isFalse = (v: unknown): boolean => v === false;
/** `{key: one of allowed}` or `{}`: a policy object that is switched off. */
export const offWhen =
  (key: string, ...allowed: unknown[]) =>
  (v: unknown): boolean =>
    emptyObject(v) ||
    (isObj(v) && Object.keys(v).every((k) => k === key) && allowed.includes(v[key]));

/** Every (parent, key) the dotted path reaches in `body`. */
function locate(body: unknown, path: string): { parent: Obj; key: string; at: string }[] {
  let frontier: { value: unknown; at: string }[] = [{ value: body, at: '' }];
  const steps = path.split('.');
  const out: { parent: Obj; key: string; at: string }[] = [];
  steps.forEach((step, i) => {
    const each = step.endsWith('[]');
    const key = each ? step.slice(0, -2) : step;
    const last = i === steps.length - 1;
    const next: { value: unknown; at: string }[] = [];
    for (const f of frontier) {
      if (!isObj(f.value) || !(key in f.value)) continue;
      const at = f.at ? `${f.at}.${key}` : key;
      if (last && !each) out.push({ parent: f.value, key, at });
      else if (each && Array.isArray(f.value[key]))
        (f.value[key] as unknown[]).forEach((v, n) => next.push({ value: v, at: `${at}[${n}]` }));
      else next.push({ value: f.value[key], at });
    }
    frontier = next;
  });
  return out;
}

/** Refuse (or drop, when it asks for nothing) every listed field the body sets. */
export function checkUnsupported(body: unknown, list: readonly Unsupported[]): void {
  for (const u of list) {
    for (const { parent, key, at } of locate(body, u.field)) {
      const value = parent[key];
      if (value === undefined || u.noop?.(value)) {
        delete parent[key];
        continue;
      }
      throw new VesselError('unsupported_field', `${at}: ${u.reason}`, {
        details: { field: at },
      });
    }
  }
}

/**
 * The route options for a body with unsupported fields: a preValidation hook
 * (it runs before schema validation, which would only say "unknown field")
 * and the OpenAPI extension listing them.
 */
export function unsupportedFields(list: readonly Unsupported[]): {
  preValidation: (request: FastifyRequest) => Promise<void>;
  doc: Record<string, string>;
} {
  return {
    preValidation: (request) => {
      checkUnsupported(request.body, list);
      return Promise.resolve();
    },
    doc: Object.fromEntries(list.map((u) => [u.field, u.reason])),
  };
}
