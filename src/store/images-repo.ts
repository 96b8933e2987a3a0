import type { Db } from './db.js';

export type ImageStatus = 'pending' | 'pulling' | 'converting' | 'ready' | 'failed';
export type ImageFormat = 'erofs' | 'ext4';
export type ImageSource = 'registry' | 'import' | 'build';

/** Metadata taken from the image config blob. */
export interface ImageRuntimeConfig {
  readonly entrypoint: string[] | null;
  readonly cmd: string[] | null;
  readonly env: Record<string, string>;
  readonly working_dir: string | null;
  readonly user: string | null;
  readonly exposed_ports: string[];
}

export interface ImageRow {
  readonly name: string;
  readonly digest: string | null;
  readonly status: ImageStatus;
  readonly error: string | null;
  readonly error_code: string | null;
  readonly source: ImageSource;
  readonly platform: string | null;
  readonly format: ImageFormat | null;
  readonly size_bytes: number | null;
  readonly config: ImageRuntimeConfig | null;
  readonly layers: string[];
  readonly config_digest: string | null;
  readonly created_at: string;
  readonly updated_at: string;
  /** User key-value tags. */
  readonly tags?: Readonly<Record<string, string>>;
}

interface RawRow {
  name: string;
  digest: string | null;
  status: ImageStatus;
  error: string | null;
  error_code: string | null;
  source: ImageSource;
  platform: string | null;
  format: ImageFormat | null;
  size_bytes: number | null;
  config_json: string | null;
  layers_json: string | null;
  config_digest: string | null;
  created_at: string;
  updated_at: string;
  tags_json: string | null;
}

function fromRaw(r: RawRow): ImageRow {
  return {
    name: r.name,
    digest: r.digest,
    status: r.status,
    error: r.error,
    error_code: r.error_code,
    source: r.source,
    platform: r.platform,
    format: r.format,
    size_bytes: r.size_bytes,
    config: r.config_json ? (JSON.parse(r.config_json) as ImageRuntimeConfig) : null,
    layers: r.layers_json ? (JSON.parse(r.layers_json) as string[]) : [],
    config_digest: r.config_digest,
    created_at: r.created_at,
    updated_at: r.updated_at,
    ...(r.tags_json ? { tags: JSON.parse(r.tags_json) as Record<string, string> } : {}),
  };
}

/** Persistence of image records. Synchronous: better-sqlite3 calls take microseconds. */
export class ImagesRepo {
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
  }

  get(name: string): ImageRow | undefined {
    const r = this.db.prepare('SELECT * FROM images WHERE name = ?').get(name) as
      RawRow | undefined;
    return r ? fromRaw(r) : undefined;
  }

  list(): ImageRow[] {
    const rows = this.db
      .prepare('SELECT * FROM images ORDER BY created_at, name')
      .all() as RawRow[];
    return rows.map(fromRaw);
  }

  byDigest(digest: string): ImageRow[] {
    const rows = this.db.prepare('SELECT * FROM images WHERE digest = ?').all(digest) as RawRow[];
    return rows.map(fromRaw);
  }

  /** Insert or replace the whole record. */
  upsert(row: ImageRow): void {
    this.db
      .prepare(
        `INSERT INTO images (name, digest, status, error, error_code, source, platform, format, size_bytes,
           config_json, layers_json, config_digest, created_at, updated_at, tags_json)
         VALUES (@name, @digest, @status, @error, @error_code, @source, @platform, @format, @size_bytes,
           @config_json, @layers_json, @config_digest, @created_at, @updated_at, @tags_json)
         ON CONFLICT(name) DO UPDATE SET digest=excluded.digest, status=excluded.status, error=excluded.error,
           error_code=excluded.error_code, source=excluded.source, platform=excluded.platform,
           format=excluded.format, size_bytes=excluded.size_bytes, config_json=excluded.config_json,
           layers_json=excluded.layers_json, config_digest=excluded.config_digest,
           updated_at=excluded.updated_at, tags_json=excluded.tags_json`,
      )
      .run({
        name: row.name,
        digest: row.digest,
        status: row.status,
        error: row.error,
        error_code: row.error_code,
        source: row.source,
        platform: row.platform,
        format: row.format,
        size_bytes: row.size_bytes,
        config_json: row.config ? JSON.stringify(row.config) : null,
        layers_json: JSON.stringify(row.layers),
        config_digest: row.config_digest,
        created_at: row.created_at,
        updated_at: row.updated_at,
        tags_json: row.tags && Object.keys(row.tags).length > 0 ? JSON.stringify(row.tags) : null,
      });
  }

  delete(name: string): boolean {
    return this.db.prepare('DELETE FROM images WHERE name = ?').run(name).changes > 0;
  }

  /** Every digest some image record points at. */
  referencedDigests(): Set<string> {
    const rows = this.db
      .prepare('SELECT DISTINCT digest FROM images WHERE digest IS NOT NULL')
      .all() as {
      digest: string;
    }[];
    return new Set(rows.map((r) => r.digest));
  }
}
