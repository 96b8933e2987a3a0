import type { Db } from './db.js';

/** One HTTP ingress route (see src/ingress/README.md). */
export interface IngressRow {
  readonly id: string;
  readonly name: string;
  /** Instance id or name, or `{instance}` for a pattern hostname. */
  readonly instance: string;
  /** Lower case; exact, or a pattern with one `{instance}` label. */
  readonly hostname: string;
  readonly guest_port: number;
  readonly host_port: number;
  readonly created_at: string;
  /** User key-value tags. */
  readonly tags?: Readonly<Record<string, string>>;
}

type Raw = Omit<IngressRow, 'tags'> & { tags_json: string | null };

function fromRaw({ tags_json, ...rest }: Raw): IngressRow {
  return {
    ...rest,
    ...(tags_json ? { tags: JSON.parse(tags_json) as Record<string, string> } : {}),
  };
}

/** Persistence of ingress routes. */
export class IngressesRepo {
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
  }

  list(): IngressRow[] {
    return (
      this.db.prepare('SELECT * FROM ingresses ORDER BY created_at, name').all() as Raw[]
    ).map(fromRaw);
  }

  /** By id or by name. */
  get(idOrName: string): IngressRow | undefined {
    const r = this.db
      .prepare('SELECT * FROM ingresses WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1')
      .get(idOrName, idOrName, idOrName) as Raw | undefined;
    return r ? fromRaw(r) : undefined;
  }

  insert(row: IngressRow): void {
    this.db
      .prepare(
        `INSERT INTO ingresses (id, name, instance, hostname, guest_port, host_port, created_at, tags_json)
         VALUES (@id, @name, @instance, @hostname, @guest_port, @host_port, @created_at, @tags_json)`,
      )
      .run({
        id: row.id,
        name: row.name,
        instance: row.instance,
        hostname: row.hostname,
        guest_port: row.guest_port,
        host_port: row.host_port,
        created_at: row.created_at,
        tags_json: row.tags && Object.keys(row.tags).length > 0 ? JSON.stringify(row.tags) : null,
      });
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM ingresses WHERE id = ?').run(id).changes > 0;
  }
}
