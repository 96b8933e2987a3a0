import type { Db } from './db.js';

/** A named snapshot's record (see src/instances/README.md, "Named snapshots"). */
export interface SnapshotRow {
  readonly id: string;
  readonly name: string | null;
  /** `Standby`: memory + disk; `Stopped`: disk only (hypeman's kinds). */
  readonly kind: 'Standby' | 'Stopped';
  /** The source instance while it exists; null once it is deleted. */
  readonly instance_id: string | null;
  readonly source_instance_id: string;
  readonly source_instance_name: string;
  /** The source's instance record at snapshot time: what a fork is made from. */
  readonly source: Record<string, unknown>;
  readonly hypervisor: string;
  readonly vmm_version: string | null;
  readonly kernel: string;
  readonly size_bytes: number;
  readonly compression: 'zstd' | 'lz4' | null;
  readonly compression_level: number | null;
  /** `compressing`: queued or running. */
  readonly compression_state: 'none' | 'compressing' | 'compressed' | 'error';
  readonly compression_error: string | null;
  readonly compressed_size_bytes: number | null;
  readonly uncompressed_size_bytes: number | null;
  readonly tags?: Readonly<Record<string, string>>;
  readonly created_at: string;
}

type Raw = Omit<SnapshotRow, 'source' | 'tags'> & { source_json: string; tags_json: string | null };

function fromRaw({ source_json, tags_json, ...rest }: Raw): SnapshotRow {
  return {
    ...rest,
    source: JSON.parse(source_json) as Record<string, unknown>,
    ...(tags_json ? { tags: JSON.parse(tags_json) as Record<string, string> } : {}),
  };
}

const COLUMNS = [
  'id',
  'name',
  'kind',
  'instance_id',
  'source_instance_id',
  'source_instance_name',
  'source_json',
  'hypervisor',
  'vmm_version',
  'kernel',
  'size_bytes',
  'compression',
  'compression_level',
  'compression_state',
  'compression_error',
  'compressed_size_bytes',
  'uncompressed_size_bytes',
  'tags_json',
  'created_at',
] as const;

function toRaw(row: SnapshotRow): Record<(typeof COLUMNS)[number], unknown> {
  const { source, tags, ...rest } = row;
  return {
    ...rest,
    source_json: JSON.stringify(source),
    tags_json: tags && Object.keys(tags).length > 0 ? JSON.stringify(tags) : null,
  };
}

/** Persistence of named snapshots. */
export class SnapshotsRepo {
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
  }

  list(): SnapshotRow[] {
    return (this.db.prepare('SELECT * FROM snapshots ORDER BY created_at, id').all() as Raw[]).map(
      fromRaw,
    );
  }

  get(id: string): SnapshotRow | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE id = ?').get(id) as Raw | undefined;
    return r ? fromRaw(r) : undefined;
  }

  /** Snapshots named `name`, of any source. */
  byName(name: string): SnapshotRow[] {
    return (
      this.db
        .prepare('SELECT * FROM snapshots WHERE name = ? ORDER BY created_at')
        .all(name) as Raw[]
    ).map(fromRaw);
  }

  /** The snapshot of source instance `sourceId` named `name`. */
  bySourceName(sourceId: string, name: string): SnapshotRow | undefined {
    const r = this.db
      .prepare('SELECT * FROM snapshots WHERE source_instance_id = ? AND name = ?')
      .get(sourceId, name) as Raw | undefined;
    return r ? fromRaw(r) : undefined;
  }

  insert(row: SnapshotRow): void {
    this.db
      .prepare(
        `INSERT INTO snapshots (${COLUMNS.join(', ')}) VALUES (${COLUMNS.map((c) => `@${c}`).join(', ')})`,
      )
      .run(toRaw(row));
  }

  update(row: SnapshotRow): void {
    this.db
      .prepare(
        `UPDATE snapshots SET ${COLUMNS.filter((c) => c !== 'id')
          .map((c) => `${c} = @${c}`)
          .join(', ')} WHERE id = @id`,
      )
      .run(toRaw(row));
  }

  /** The source instance is gone: its snapshots stay, no longer linked to it. */
  unlinkInstance(instanceId: string): void {
    this.db
      .prepare('UPDATE snapshots SET instance_id = NULL WHERE instance_id = ?')
      .run(instanceId);
  }

  /** Image digests the snapshots' sources booted from (a fork needs the image disk). */
  imageDigests(): Set<string> {
    const rows = this.db
      .prepare("SELECT DISTINCT json_extract(source_json, '$.image_digest') AS d FROM snapshots")
      .all() as { d: string | null }[];
    return new Set(rows.flatMap((r) => (r.d ? [r.d] : [])));
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(id).changes > 0;
  }
}
