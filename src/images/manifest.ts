import { VesselError } from '../core/errors.js';
import { INDEX_TYPES, LAYER_TYPES, MANIFEST_TYPES } from './media-types.js';
import { isDigest } from './reference.js';

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: Platform;
  readonly annotations?: Record<string, string>;
}

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export interface ImageManifest {
  readonly kind: 'manifest';
  readonly mediaType: string;
  readonly config: Descriptor;
  readonly layers: Descriptor[];
}

export interface ImageIndex {
  readonly kind: 'index';
  readonly mediaType: string;
  readonly manifests: Descriptor[];
}

function protocol(what: string, why: string): VesselError {
  return new VesselError('registry_protocol', `${what}: ${why}`);
}

function descriptor(value: unknown, what: string): Descriptor {
  if (typeof value !== 'object' || value === null)
    throw protocol(what, 'descriptor is not an object');
  const d = value as Record<string, unknown>;
  if (typeof d.digest !== 'string' || !isDigest(d.digest)) {
    throw protocol(what, `descriptor digest ${JSON.stringify(d.digest)} is not a sha256 digest`);
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw protocol(what, `descriptor ${d.digest} has an invalid size`);
  }
  if (typeof d.mediaType !== 'string')
    throw protocol(what, `descriptor ${d.digest} has no mediaType`);
  const out: { -readonly [K in keyof Descriptor]: Descriptor[K] } = {
    mediaType: d.mediaType,
    digest: d.digest,
    size: d.size,
  };
  if (typeof d.platform === 'object' && d.platform !== null) {
    const p = d.platform as Record<string, unknown>;
    if (typeof p.os === 'string' && typeof p.architecture === 'string') {
      out.platform = {
        os: p.os,
        architecture: p.architecture,
        ...(typeof p.variant === 'string' ? { variant: p.variant } : {}),
      };
    }
  }
  if (typeof d.annotations === 'object' && d.annotations !== null) {
    out.annotations = d.annotations as Record<string, string>;
  }
  return out;
}

/**
 * Parse a manifest or index body. `contentType` is the registry's
 * Content-Type; the body's own `mediaType` wins when present.
 */
export function parseManifest(
  body: Buffer,
  contentType: string | undefined,
  what: string,
): ImageManifest | ImageIndex {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw protocol(what, 'manifest is not valid JSON');
  }
  if (typeof json !== 'object' || json === null)
    throw protocol(what, 'manifest is not a JSON object');
  const declared =
    typeof json.mediaType === 'string' ? json.mediaType : contentType?.split(';')[0]?.trim();
  if (json.schemaVersion !== 2) {
    throw new VesselError(
      'unsupported_media_type',
      `${what}: manifest schemaVersion ${String(json.schemaVersion)} is not supported (only 2)`,
    );
  }
  const mediaType =
    declared ?? (Array.isArray(json.manifests) ? INDEX_TYPES.values().next().value! : '');
  if (INDEX_TYPES.has(mediaType) || (!declared && Array.isArray(json.manifests))) {
    if (!Array.isArray(json.manifests)) throw protocol(what, 'index has no manifests array');
    return {
      kind: 'index',
      mediaType,
      manifests: json.manifests.map((m, i) => descriptor(m, `${what} manifests[${i}]`)),
    };
  }
  if (MANIFEST_TYPES.has(mediaType) || (!declared && json.config !== undefined)) {
    if (!Array.isArray(json.layers)) throw protocol(what, 'manifest has no layers array');
    const config = descriptor(json.config, `${what} config`);
    const layers = json.layers.map((l, i) => descriptor(l, `${what} layers[${i}]`));
    for (const l of layers) {
      if (!LAYER_TYPES.has(l.mediaType)) {
        throw new VesselError(
          'unsupported_media_type',
          `${what}: layer ${l.digest} has media type ${l.mediaType}, which Vessel does not unpack`,
        );
      }
    }
    return { kind: 'manifest', mediaType, config, layers };
  }
  throw new VesselError(
    'unsupported_media_type',
    `${what}: media type "${mediaType}" is not an image manifest or index`,
  );
}

/** The platform of this host in OCI terms. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
  };
  return {
    os: 'linux',
    architecture: arch[process.arch] ?? process.arch,
    ...(process.arch === 'arm64' ? { variant: 'v8' } : {}),
  };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Pick the index entry for `platform`; a missing variant on either side matches. */
export function selectPlatform(index: ImageIndex, platform: Platform, what: string): Descriptor {
  const candidates = index.manifests.filter(
    (m) =>
      m.platform &&
      m.platform.os === platform.os &&
      m.platform.architecture === platform.architecture,
  );
  const exact = candidates.find(
    (m) => !platform.variant || !m.platform?.variant || m.platform.variant === platform.variant,
  );
  if (exact) return exact;
  const available = index.manifests
    .filter((m) => m.platform)
    .map((m) => formatPlatform(m.platform!));
  throw new VesselError(
    'platform_not_found',
    `${what} has no image for ${formatPlatform(platform)} (available: ${available.join(', ') || 'none'})`,
  );
}
