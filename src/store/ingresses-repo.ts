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
}

/** Persistence of ingress routes. */
export class IngressesRepo {
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
  }

  list(): IngressRow[] {
    return this.db
      .prepare('SELECT * FROM ingresses ORDER BY created_at, name')
      .all() as IngressRow[];
  }

  /** By id or by name. */
  get(idOrName: string): IngressRow | undefined {
    return this.db
      .prepare('SELECT * FROM ingresses WHERE id = ? OR name = ? ORDER BY id = ? DESC LIMIT 1')
      .get(idOrName, idOrName, idOrName) as IngressRow | undefined;
  }

  insert(row: IngressRow): void {
    this.db
      .prepare(
        `INSERT INTO ingresses (id, name, instance, hostname, guest_port, host_port, created_at)
         VALUES (@id, @name, @instance, @hostname, @guest_port, @host_port, @created_at)`,
      )
      .run(row);
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM ingresses WHERE id = ?').run(id).changes > 0;
  }
}
