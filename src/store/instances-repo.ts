import type { Db } from './db.js';

export interface InstanceRow {
  readonly id: string;
  readonly name: string;
  readonly image: string;
  readonly image_digest: string;
  readonly state: string;
  readonly state_error: string | null;
  readonly kernel: string;
  readonly hypervisor: string;
  readonly accel: string | null;
  readonly vcpus: number;
  readonly memory_mib: number;
  readonly disk_bytes: number;
  readonly guest: Record<string, unknown>;
  readonly pid: number | null;
  readonly sockets: Record<string, string> | null;
  readonly exit_code: number | null;
  readonly created_at: string;
  readonly started_at: string | null;
  readonly stopped_at: string | null;
  /** Guest context id (vsock CID), allocated in the create reservation; ≥ 3, unique. */
  readonly cid: number | null;
  /** Fork: the instance this one was forked from. */
  readonly source_id: string | null;
  /** Bridge mode: the guest's IPv4 address, allocated in the create reservation; unique. */
  readonly guest_ip?: string | null;
}

type Raw = Omit<InstanceRow, 'guest' | 'sockets'> & {
  guest_json: string;
  sockets_json: string | null;
};

function fromRaw(r: Raw): InstanceRow {
  const { guest_json, sockets_json, ...rest } = r;
  return {
    ...rest,
    guest: JSON.parse(guest_json) as Record<string, unknown>,
    sockets: sockets_json ? (JSON.parse(sockets_json) as Record<string, string>) : null,
  };
}

/** Persistence of instance records. */
export class InstancesRepo {
  private readonly db: Db;

  constructor(db: Db) {
    this.db = db;
  }

  get(id: string): InstanceRow | undefined {
    const r = this.db.prepare('SELECT * FROM instances WHERE id = ?').get(id) as Raw | undefined;
    return r ? fromRaw(r) : undefined;
  }

  byName(name: string): InstanceRow | undefined {
    const r = this.db.prepare('SELECT * FROM instances WHERE name = ?').get(name) as
      Raw | undefined;
    return r ? fromRaw(r) : undefined;
  }

  list(): InstanceRow[] {
    return (
      this.db.prepare('SELECT * FROM instances ORDER BY created_at, name').all() as Raw[]
    ).map(fromRaw);
  }

  insert(row: InstanceRow): void {
    this.db
      .prepare(
        `INSERT INTO instances (id, name, image, image_digest, state, state_error, kernel, hypervisor, accel, vcpus,
           memory_mib, disk_bytes, guest_json, pid, sockets_json, exit_code, created_at, started_at, stopped_at, cid, source_id, guest_ip)
         VALUES (@id, @name, @image, @image_digest, @state, @state_error, @kernel, @hypervisor, @accel, @vcpus,
           @memory_mib, @disk_bytes, @guest_json, @pid, @sockets_json, @exit_code, @created_at, @started_at, @stopped_at, @cid, @source_id, @guest_ip)`,
      )
      .run(toRaw(row));
  }

  update(row: InstanceRow): void {
    this.db
      .prepare(
        `UPDATE instances SET state=@state, state_error=@state_error, accel=@accel, pid=@pid, sockets_json=@sockets_json,
           exit_code=@exit_code, started_at=@started_at, stopped_at=@stopped_at, kernel=@kernel,
           guest_json=@guest_json, guest_ip=@guest_ip WHERE id=@id`,
      )
      .run(toRaw(row));
  }

  delete(id: string): boolean {
    return this.db.prepare('DELETE FROM instances WHERE id = ?').run(id).changes > 0;
  }

  /** Guest context ids in use. */
  cids(): Set<number> {
    const rows = this.db.prepare('SELECT cid FROM instances WHERE cid IS NOT NULL').all() as {
      cid: number;
    }[];
    return new Set(rows.map((r) => r.cid));
  }

  /** Guest addresses held by instances (bridge mode). */
  guestIps(): Set<string> {
    const rows = this.db
      .prepare('SELECT guest_ip FROM instances WHERE guest_ip IS NOT NULL')
      .all() as { guest_ip: string }[];
    return new Set(rows.map((r) => r.guest_ip));
  }

  /** Image digests used by instances (the image GC must keep their disks). */
  imageDigests(): Set<string> {
    const rows = this.db.prepare('SELECT DISTINCT image_digest FROM instances').all() as {
      image_digest: string;
    }[];
    return new Set(rows.map((r) => r.image_digest));
  }
}

function toRaw(row: InstanceRow): Raw {
  const { guest, sockets, ...rest } = row;
  return {
    ...rest,
    guest_ip: row.guest_ip ?? null,
    guest_json: JSON.stringify(guest),
    sockets_json: sockets ? JSON.stringify(sockets) : null,
  };
}
