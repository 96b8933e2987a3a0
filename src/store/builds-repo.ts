import type { Db } from './db.js';

export type BuildStatus = 'queued' | 'building' | 'pushing' | 'ready' | 'failed' | 'cancelled';

/** One Dockerfile step as the build record shows it. */
export interface BuildStepRecord {
  readonly stage: number;
  readonly line: number;
  readonly text: string;
  status: 'pending' | 'running' | 'cached' | 'done' | 'failed' | 'skipped';
  duration_ms: number | null;
}

/** A build job's record (src/builds/README.md). */
export interface BuildRow {
  readonly id: string;
  readonly status: BuildStatus;
  /** The image the build makes (normalised reference). */
  readonly image_ref: string;
  readonly image_digest: string | null;
  readonly error: string | null;
  readonly error_code: string | null;
  readonly exit_code: number | null;
  readonly request: Record<string, unknown>;
  readonly steps: BuildStepRecord[];
  readonly provenance: Record<string, unknown> | null;
  readonly tags: Readonly<Record<string, string>>;
  readonly builder_instance_id: string | null;
  readonly created_at: string;
  readonly started_at: string | null;
  readonly completed_at: string | null;
  readonly duration_ms: number | null;
}

const COLUMNS = [
  'id',
  'status',
  'image_ref',
  'image_digest',
  'error',
  'error_code',
  'exit_code',
  'request_json',
  'steps_json',
  'provenance_json',
  'tags_json',
  'builder_instance_id',
  'created_at',
  'started_at',
  'completed_at',
  'duration_ms',
] as const;

type Raw = Omit<BuildRow, 'request' | 'steps' | 'provenance' | 'tags'> & {
  request_json: string;
  steps_json: string;
  provenance_json: string | null;
  tags_json: string | null;
};

function fromRaw({ request_json, steps_json, provenance_json, tags_json, ...rest }: Raw): BuildRow {
  return {
    ...rest,
    request: JSON.parse(request_json) as Record<string, unknown>,
    steps: JSON.parse(steps_json) as BuildStepRecord[],
    provenance: provenance_json ? (JSON.parse(provenance_json) as Record<string, unknown>) : null,
    tags: tags_json ? (JSON.parse(tags_json) as Record<string, string>) : {},
  };
}

function toRaw(row: BuildRow): Record<(typeof COLUMNS)[number], unknown> {
  const { request, steps, provenance, tags, ...rest } = row;
  return {
    ...rest,
    request_json: JSON.stringify(request),
    steps_json: JSON.stringify(steps),
    provenance_json: provenance ? JSON.stringify(provenance) : null,
    tags_json: Object.keys(tags).length > 0 ? JSON.stringify(tags) : null,
  };
}

/** A cached step result: the layer it made, or none when it changed no file. */
export interface BuildCacheEntry {
  readonly key: string;
  readonly layer_digest: string | null;
  readonly layer_size: number | null;
  /** When the step first ran (cached steps keep it: a cached rebuild makes the same image). */
  readonly created_at?: string;
}

/** Persistence of build records and the step cache. */
export class BuildsRepo {
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
  }

  list(): BuildRow[] {
    return (this.db.prepare('SELECT * FROM builds ORDER BY created_at, id').all() as Raw[]).map(
      fromRaw,
    );
  }

  get(id: string): BuildRow | undefined {
    const r = this.db.prepare('SELECT * FROM builds WHERE id = ?').get(id) as Raw | undefined;
    return r ? fromRaw(r) : undefined;
  }

  upsert(row: BuildRow): void {
    this.db
      .prepare(
        `INSERT OR REPLACE INTO builds (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map((c) => `@${c}`).join(', ')})`,
      )
      .run(toRaw(row));
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM builds WHERE id = ?').run(id).changes > 0;
  }

  cacheGet(key: string): BuildCacheEntry | undefined {
    const r = this.db
      .prepare('SELECT key, layer_digest, layer_size, created_at FROM build_cache WHERE key = ?')
      .get(key) as BuildCacheEntry | undefined;
    if (r)
      this.db
        .prepare('UPDATE build_cache SET used_at = ? WHERE key = ?')
        .run(new Date().toISOString(), key);
    return r;
  }

  cachePut(entry: BuildCacheEntry): void {
    const now = new Date().toISOString();
    this.db
      .prepare(
        `INSERT OR REPLACE INTO build_cache (key, layer_digest, layer_size, created_at, used_at)
         VALUES (?, ?, ?, ?, ?)`,
      )
      .run(entry.key, entry.layer_digest, entry.layer_size, entry.created_at ?? now, now);
  }

  /** Forget cache entries whose layer blob is gone. */
  cacheDrop(key: string): void {
    this.db.prepare('DELETE FROM build_cache WHERE key = ?').run(key);
  }

  /** Layer digests the cache refers to: kept by image garbage collection. */
  cacheLayers(): Set<string> {
    const rows = this.db
      .prepare('SELECT DISTINCT layer_digest AS d FROM build_cache WHERE layer_digest IS NOT NULL')
      .all() as { d: string }[];
    return new Set(rows.map((r) => r.d));
  }
}
