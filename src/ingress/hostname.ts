/**
 * Host matching for the ingress: normalising a request's Host header, validating an
 * ingress hostname (exact, or a pattern with one `{instance}` label), and choosing the
 * route for a host — exact hostnames first, then patterns. Pure functions.
 */
import { VesselError } from '../core/errors.js';

/** The placeholder that stands for one DNS label, which names the instance. */
export const INSTANCE_PLACEHOLDER = '{instance}';

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * The host of a `Host` header, lower case, without port and trailing dot:
 * `Web.Example.COM:8080` → `web.example.com`, `[::1]:80` → `::1`. Undefined when empty.
 */
export function normalizeHost(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  let h = header.trim().toLowerCase();
  if (h.startsWith('[')) {
    const close = h.indexOf(']');
    h = close < 0 ? h.slice(1) : h.slice(1, close);
  } else {
    const colon = h.lastIndexOf(':');
    if (colon >= 0) h = h.slice(0, colon);
  }
  h = h.replace(/\.$/, '');
  return h === '' ? undefined : h;
}

export interface ParsedHostname {
  /** Lower-cased hostname or pattern, as stored. */
  readonly hostname: string;
  /** Pattern: the index of the `{instance}` label; undefined for an exact hostname. */
  readonly placeholder: number | undefined;
}

/**
 * Validate an ingress hostname: DNS labels, at most 253 characters; a pattern has exactly
 * one label that is exactly `{instance}` (`{instance}.example.com`).
 */
export function parseHostname(input: string): ParsedHostname {
  const hostname = input.trim().toLowerCase().replace(/\.$/, '');
  const bad = (why: string): VesselError =>
    new VesselError('invalid_argument', `ingress hostname "${input}" ${why}`, {
      details: { hostname: input },
    });
  if (hostname.length === 0 || hostname.length > 253) throw bad('must be 1..253 characters');
  const labels = hostname.split('.');
  let placeholder: number | undefined;
  labels.forEach((label, i) => {
    if (label === INSTANCE_PLACEHOLDER) {
      if (placeholder !== undefined) throw bad(`may hold ${INSTANCE_PLACEHOLDER} only once`);
      placeholder = i;
      return;
    }
    if (label.includes('{') || label.includes('}'))
      throw bad(`may only use ${INSTANCE_PLACEHOLDER} as a whole label`);
    if (!LABEL.test(label)) throw bad(`has an invalid label "${label}"`);
  });
  if (placeholder !== undefined && labels.length < 2)
    throw bad(`must have a fixed part besides ${INSTANCE_PLACEHOLDER}`);
  return { hostname, placeholder };
}

/** A route as the matcher sees it. */
export interface HostRoute {
  readonly hostname: string;
}

/**
 * The route for `host` among `routes` (all on one listener port), and the instance label
 * when a pattern matched. Exact hostnames win over patterns; among patterns, the one with
 * the longest fixed part wins, then the first in order (stable).
 */
export function matchHost<R extends HostRoute>(
  routes: readonly R[],
  host: string,
): { route: R; label: string | undefined } | undefined {
  const exact = routes.find((r) => r.hostname === host);
  if (exact) return { route: exact, label: undefined };
  const labels = host.split('.');
  let best: { route: R; label: string; fixed: number } | undefined;
  for (const route of routes) {
    const pattern = route.hostname.split('.');
    const at = pattern.indexOf(INSTANCE_PLACEHOLDER);
    if (at < 0 || pattern.length !== labels.length) continue;
    if (!pattern.every((p, i) => i === at || p === labels[i])) continue;
    const label = labels[at]!;
    if (label === '') continue;
    const fixed = route.hostname.length;
    if (!best || fixed > best.fixed) best = { route, label, fixed };
  }
  return best && { route: best.route, label: best.label };
}
