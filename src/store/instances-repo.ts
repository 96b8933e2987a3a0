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
  /** User key-value tags. */
  readonly tags?: Readonly<Record<string, string>>;
  /** TTL: the instance is deleted at this time (ISO 8601); null: never. */
  readonly expires_at?: string | null;
  /** How the main command ended, for people (`command not found`, `killed by signal 9 (SIGKILL)`). */
  readonly exit_message?: string | null;
  /** Phase accounting (instances/phases.ts): time per state, the current phase, boot phases. */
  readonly phases?: Readonly<Record<string, unknown>> | null;
  /** Disk I/O limit of the VM (bytes per second over all its disks); null: none. */
  readonly disk_io_bps?: number | null;
}

type Raw = Omit<InstanceRow, 'guest' | 'sockets' | 'tags' | 'phases'> & {
  guest_json: string;
  sockets_json: string | null;
  tags_json: string | null;
  phases_json: string | null;
};

function fromRaw(r: Raw): InstanceRow {
  const { guest_json, sockets_json, tags_json, phases_json, ...rest } = r;
  return {
    ...rest,
    guest: JSON.parse(guest_json) as Record<string, unknown>,
    sockets: sockets_json ? (JSON.parse(sockets_json) as Record<string, string>) : null,
    ...(tags_json ? { tags: JSON.parse(tags_json) as Record<string, string> } : {}),
    phases: phases_json ? (JSON.parse(phases_json) as Record<string, unknown>) : null,
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
           memory_mib, disk_bytes, guest_json, pid, sockets_json, exit_code, created_at, started_at, stopped_at, cid, source_id, guest_ip,
           tags_json, expires_at, exit_message, phases_json, disk_io_bps)
         VALUES (@id, @name, @image, @image_digest, @state, @state_error, @kernel, @hypervisor, @accel, @vcpus,
           @memory_mib, @disk_bytes, @guest_json, @pid, @sockets_json, @exit_code, @created_at, @started_at, @stopped_at, @cid, @source_id, @guest_ip,
           @tags_json, @expires_at, @exit_message, @phases_json, @disk_io_bps)`,
      )
      .run(toRaw(row));
  }

  update(row: InstanceRow): void {
    this.db
      .prepare(
        `UPDATE instances SET state=@state, state_error=@state_error, accel=@accel, pid=@pid, sockets_json=@sockets_json,
           exit_code=@exit_code, started_at=@started_at, stopped_at=@stopped_at, kernel=@kernel,
           guest_json=@guest_json, guest_ip=@guest_ip, tags_json=@tags_json, expires_at=@expires_at,
           exit_message=@exit_message, phases_json=@phases_json WHERE id=@id`,
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

  /** The instance whose expiry comes first, if any has one. */
  nextExpiry(): { id: string; name: string; expires_at: string } | undefined {
    return this.db
      .prepare(
        'SELECT id, name, expires_at FROM instances WHERE expires_at IS NOT NULL ORDER BY expires_at, id LIMIT 1',
      )
      .get() as { id: string; name: string; expires_at: string } | undefined;
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
  const { guest, sockets, tags, phases, ...rest } = row;
  return {
    ...rest,
    guest_ip: row.guest_ip ?? null,
    guest_json: JSON.stringify(guest),
    sockets_json: sockets ? JSON.stringify(sockets) : null,
    tags_json: tags && Object.keys(tags).length > 0 ? JSON.stringify(tags) : null,
    expires_at: row.expires_at ?? null,
    exit_message: row.exit_message ?? null,
    phases_json: phases ? JSON.stringify(phases) : null,
    disk_io_bps: row.disk_io_bps ?? null,
  };
}
