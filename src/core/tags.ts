/**
 * User-defined key-value tags on instances, images and ingresses (the
 * hypeman API's `Tags`), and the `?tags[key]=value` list filter.
 */

export type Tags = Readonly<Record<string, string>>;

/** True when every key-value pair of `filter` is in `tags` (an empty filter matches all). */
export function matchTags(tags: Tags | undefined, filter: Tags | undefined): boolean {
  if (!filter) return true;
  return Object.entries(filter).every(([k, v]) => tags !== undefined && tags[k] === v);
}

const DEEP_KEY = /^tags\[(.+)\]$/;

/**
 * Fold deepObject query keys (`tags[team]=backend&tags[env]=staging`, as
 * OpenAPI clients send them) into one `tags` object. Other keys stay.
 */
export function foldDeepTags(query: Record<string, unknown>): Record<string, unknown> {
  const tags: Record<string, unknown> = {};
  const out: Record<string, unknown> = {};
  let found = false;
  for (const [k, v] of Object.entries(query)) {
    const m = DEEP_KEY.exec(k);
    if (m) {
      tags[m[1]!] = Array.isArray(v) ? v.at(-1) : v;
      found = true;
    } else out[k] = v;
  }
  if (found) out.tags = { ...(out.tags as Record<string, unknown> | undefined), ...tags };
  return out;
}
