import { VesselError } from '../core/errors.js';
import type { ImageRuntimeConfig } from '../store/index.js';
import { isDigest } from './reference.js';

export interface ParsedImageConfig {
  readonly runtime: ImageRuntimeConfig;
  /** Digests of the uncompressed layers, in order (OCI `rootfs.diff_ids`). */
  readonly diffIds: string[];
  readonly os: string | undefined;
  readonly architecture: string | undefined;
}

function strings(value: unknown): string[] | null {
  return Array.isArray(value) && value.every((v) => typeof v === 'string') ? value : null;
}

/** `["A=1", "B=x=y"]` → `{A: "1", B: "x=y"}`; entries without `=` get an empty value. */
export function parseEnv(list: readonly string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq === 0) continue;
    if (eq < 0) env[item] = '';
    else env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return env;
}

/** Extract what Vessel needs from an image config blob (OCI or Docker). */
export function parseImageConfig(body: Buffer, what: string): ParsedImageConfig {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new VesselError('registry_protocol', `${what}: image config is not valid JSON`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new VesselError('registry_protocol', `${what}: image config is not a JSON object`);
  }
  const cfg = (
    typeof json.config === 'object' && json.config !== null ? json.config : {}
  ) as Record<string, unknown>;
  const rootfs = (
    typeof json.rootfs === 'object' && json.rootfs !== null ? json.rootfs : {}
  ) as Record<string, unknown>;
  const diffIds = strings(rootfs.diff_ids) ?? [];
  for (const d of diffIds) {
    if (!isDigest(d))
      throw new VesselError('registry_protocol', `${what}: diff_id "${d}" is not a sha256 digest`);
  }
  const ports =
    typeof cfg.ExposedPorts === 'object' && cfg.ExposedPorts !== null
      ? Object.keys(cfg.ExposedPorts)
      : [];
  return {
    runtime: {
      entrypoint: strings(cfg.Entrypoint),
      cmd: strings(cfg.Cmd),
      env: parseEnv(strings(cfg.Env) ?? []),
      working_dir:
        typeof cfg.WorkingDir === 'string' && cfg.WorkingDir !== '' ? cfg.WorkingDir : null,
      user: typeof cfg.User === 'string' && cfg.User !== '' ? cfg.User : null,
      exposed_ports: ports.sort(),
    },
    diffIds,
    os: typeof json.os === 'string' ? json.os : undefined,
    architecture: typeof json.architecture === 'string' ? json.architecture : undefined,
  };
}
