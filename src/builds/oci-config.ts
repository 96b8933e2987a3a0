/**
 * The OCI image config a build edits step by step (image-spec config.md):
 * the runtime part (`config`), the layer chain (`rootfs.diff_ids`) and the
 * history, one entry per instruction.
 */
import { VesselError } from '../core/errors.js';

export interface RuntimeConfig {
  User?: string;
  ExposedPorts?: Record<string, Record<string, never>>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  [other: string]: unknown;
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface OciConfig {
  architecture: string;
  os: string;
  created?: string;
  config: RuntimeConfig;
  rootfs: { type: 'layers'; diff_ids: string[] };
  history: HistoryEntry[];
  [other: string]: unknown;
}

/** Parse a base image's config blob, keeping every field a build does not touch. */
export function readOciConfig(blob: Buffer, what: string): OciConfig {
  let json: unknown;
  try {
    json = JSON.parse(blob.toString('utf8'));
  } catch {
    throw new VesselError('internal', `${what}: config is not JSON`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw new VesselError('internal', `${what}: config is not an object`);
  const c = json as Record<string, unknown>;
  const rootfs = (c.rootfs ?? {}) as { diff_ids?: unknown };
  const diffIds = Array.isArray(rootfs.diff_ids) ? rootfs.diff_ids.map(String) : [];
  return {
    ...c,
    architecture: typeof c.architecture === 'string' ? c.architecture : 'amd64',
    os: typeof c.os === 'string' ? c.os : 'linux',
    config: (typeof c.config === 'object' && c.config !== null ? c.config : {}) as RuntimeConfig,
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: Array.isArray(c.history) ? (c.history as HistoryEntry[]) : [],
  };
}

/** A deep copy: stages fork their state from another stage's. */
export function cloneConfig(c: OciConfig): OciConfig {
  return JSON.parse(JSON.stringify(c)) as OciConfig;
}

/** `KEY=VALUE` env entries as a map (later entries win, as in Docker). */
export function envMap(c: OciConfig): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of c.config.Env ?? []) {
    const eq = kv.indexOf('=');
    if (eq > 0) m.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return m;
}

export function setEnv(c: OciConfig, pairs: readonly (readonly [string, string])[]): void {
  const m = envMap(c);
  for (const [k, v] of pairs) m.set(k, v);
  c.config.Env = [...m].map(([k, v]) => `${k}=${v}`);
}
