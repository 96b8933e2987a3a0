/** SQLite rows of volumes and their attachments (migration 7). */
import type { Db } from '../store/index.js';

export interface VolumeRow {
  readonly id: string;
  readonly name: string;
  readonly size_gb: number;
  readonly tags?: Readonly<Record<string, string>>;
  readonly created_at: string;
}

export interface AttachmentRow {
  readonly volume_id: string;
  readonly instance_id: string;
  readonly mount_path: string;
  readonly readonly: boolean;
  readonly overlay: boolean;
  /** Bytes of the private upper disk (overlay attachments). */
  readonly overlay_size: number | null;
}

type RawVolume = Omit<VolumeRow, 'tags'> & { tags_json: string | null };
type RawAttachment = Omit<AttachmentRow, 'readonly' | 'overlay'> & {
  readonly: number;
  overlay: number;
};

function volumeFromRaw({ tags_json, ...rest }: RawVolume): VolumeRow {
  return {
    ...rest,
    ...(tags_json ? { tags: JSON.parse(tags_json) as Record<string, string> } : {}),
  };
}

function attachmentFromRaw(r: RawAttachment): AttachmentRow {
  return { ...r, readonly: r.readonly !== 0, overlay: r.overlay !== 0 };
}

export class VolumesRepo {
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
  }

  list(): VolumeRow[] {
    return (
      this.db.prepare('SELECT * FROM volumes ORDER BY created_at, name').all() as RawVolume[]
    ).map(volumeFromRaw);
  }

  /** By id, else by name. */
  get(idOrName: string): VolumeRow | undefined {
    const r = this.db
      .prepare('SELECT * FROM volumes WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1')
      .get(idOrName, idOrName, idOrName) as RawVolume | undefined;
    return r ? volumeFromRaw(r) : undefined;
  }

  insert(row: VolumeRow): void {
    this.db
      .prepare(
        `INSERT INTO volumes (id, name, size_gb, tags_json, created_at)
         VALUES (@id, @name, @size_gb, @tags_json, @created_at)`,
      )
      .run({
        id: row.id,
        name: row.name,
        size_gb: row.size_gb,
        created_at: row.created_at,
        tags_json: row.tags && Object.keys(row.tags).length > 0 ? JSON.stringify(row.tags) : null,
      });
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM volumes WHERE id = ?').run(id).changes > 0;
  }

  /** Every attachment, or those of one volume or one instance; by mount path. */
  attachments(filter: { volume_id?: string; instance_id?: string } = {}): AttachmentRow[] {
    const where: string[] = [];
    const args: string[] = [];
    if (filter.volume_id !== undefined) {
      where.push('volume_id = ?');
      args.push(filter.volume_id);
    }
    if (filter.instance_id !== undefined) {
      where.push('instance_id = ?');
      args.push(filter.instance_id);
    }
    const sql = `SELECT * FROM volume_attachments${
      where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''
    } ORDER BY instance_id, mount_path`;
    return (this.db.prepare(sql).all(...args) as RawAttachment[]).map(attachmentFromRaw);
  }

  /** Insert several attachments in one transaction. */
  attach(rows: readonly AttachmentRow[]): void {
    const stmt = this.db.prepare(
      `INSERT INTO volume_attachments (volume_id, instance_id, mount_path, readonly, overlay, overlay_size)
       VALUES (@volume_id, @instance_id, @mount_path, @readonly, @overlay, @overlay_size)`,
    );
    this.db.transaction(() => {
      for (const r of rows)
        stmt.run({ ...r, readonly: r.readonly ? 1 : 0, overlay: r.overlay ? 1 : 0 });
    })();
  }

  detach(volumeId: string, instanceId: string): boolean {
    return (
      this.db
        .prepare('DELETE FROM volume_attachments WHERE volume_id = ? AND instance_id = ?')
        .run(volumeId, instanceId).changes > 0
    );
  }
}
