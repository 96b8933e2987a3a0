import { VesselError } from '../core/errors.js';

/** A parsed, normalised image reference such as `docker.io/library/alpine:3.20`. */
export interface ImageReference {
  /** Registry host as written by users (`docker.io`, `127.0.0.1:5000`). */
  readonly registry: string;
  /** Repository path inside the registry (`library/alpine`). */
  readonly repository: string;
  readonly tag: string | undefined;
  readonly digest: string | undefined;
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;

export function isDigest(value: string): boolean {
  return DIGEST.test(value);
}

/** The hex part of a validated sha256 digest. */
export function digestHex(digest: string): string {
  if (!DIGEST.test(digest))
    throw new VesselError('invalid_argument', `"${digest}" is not a sha256 digest`);
  return digest.slice('sha256:'.length);
}

function invalid(input: string, why: string): VesselError {
  return new VesselError('invalid_reference', `invalid image reference "${input}": ${why}`);
}

/**
 * Parse and normalise a reference the way `docker pull` does: `alpine` →
 * `docker.io/library/alpine:latest`; a first component containing `.` or `:`
 * or equal to `localhost` is a registry host.
 */
export function parseReference(input: string): ImageReference {
  const raw = input.trim();
  if (raw.length === 0) throw invalid(input, 'empty');
  if (raw.length > 512) throw invalid(input.slice(0, 40) + '…', 'longer than 512 characters');

  let rest = raw;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(input, `"${digest}" is not a sha256:<64 hex> digest`);
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(input, `"${tag}" is not a valid tag`);
  }

  const parts = rest.split('/');
  let registry = DOCKER_HUB;
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    registry = first;
    parts.shift();
    if (!HOST.test(registry)) throw invalid(input, `"${registry}" is not a valid registry host`);
  }
  if (registry === 'index.docker.io' || registry === DOCKER_HUB_API) registry = DOCKER_HUB;
  if (parts.length === 0 || parts.some((p) => p.length === 0))
    throw invalid(input, 'empty path component');
  for (const p of parts) {
    if (!COMPONENT.test(p)) {
      throw invalid(input, `"${p}" must be lowercase letters, digits and separators (. _ __ -)`);
    }
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (repository.length > 255) throw invalid(input, 'repository path longer than 255 characters');
  if (tag === undefined && digest === undefined) tag = 'latest';
  return { registry, repository, tag, digest };
}

/** The canonical string form, used as the image's name in Vessel. */
export function formatReference(ref: ImageReference): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

export function normaliseReference(input: string): string {
  return formatReference(parseReference(input));
}

/** The host to talk HTTP to (Docker Hub's API lives on another name). */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** What to ask the registry for: the digest when pinned, else the tag. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

/** True for registries on the loopback interface, which may use plain HTTP. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.startsWith('[')
    ? registry.slice(1, registry.indexOf(']'))
    : registry.split(':')[0]!;
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}
