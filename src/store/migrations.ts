/**
 * Schema migrations, applied in order inside one transaction each. Append
 * only: a released migration is never edited.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'images',
    sql: `
      CREATE TABLE images (
        name          TEXT PRIMARY KEY,           -- normalised reference
        digest        TEXT,                       -- manifest digest once resolved
        status        TEXT NOT NULL CHECK (status IN ('pending','pulling','converting','ready','failed')),
        error         TEXT,
        error_code    TEXT,
        source        TEXT NOT NULL CHECK (source IN ('registry','import')),
        platform      TEXT,
        format        TEXT CHECK (format IN ('erofs','ext4')),
        size_bytes    INTEGER,
        config_json   TEXT,                       -- entrypoint, cmd, env, working_dir, user, exposed_ports
        layers_json   TEXT,                       -- layer blob digests in order
        config_digest TEXT,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
      );
      CREATE INDEX images_digest ON images(digest);
    `,
  },
  {
    version: 2,
    name: 'instances',
    sql: `
      CREATE TABLE instances (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        image         TEXT NOT NULL,             -- image name as resolved at create
        image_digest  TEXT NOT NULL,
        state         TEXT NOT NULL,
        state_error   TEXT,
        kernel        TEXT NOT NULL,             -- name/version booted
        hypervisor    TEXT NOT NULL,
        accel         TEXT,
        vcpus         INTEGER NOT NULL,
        memory_mib    INTEGER NOT NULL,
        disk_bytes    INTEGER NOT NULL,
        guest_json    TEXT NOT NULL,             -- the guest config (entrypoint, cmd, env, ...)
        pid           INTEGER,
        sockets_json  TEXT,
        exit_code     INTEGER,
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        stopped_at    TEXT
      );
    `,
  },
  {
    version: 3,
    name: 'instance resources and lineage',
    sql: `
      ALTER TABLE instances ADD COLUMN cid INTEGER;          -- guest context id, unique while the row lives
      ALTER TABLE instances ADD COLUMN source_id TEXT;       -- fork: the instance it was forked from
      CREATE UNIQUE INDEX instances_cid ON instances(cid) WHERE cid IS NOT NULL;
    `,
  },
  {
    version: 4,
    name: 'instance guest address',
    sql: `
      ALTER TABLE instances ADD COLUMN guest_ip TEXT;        -- bridge mode: the guest's IPv4 address
      CREATE UNIQUE INDEX instances_guest_ip ON instances(guest_ip) WHERE guest_ip IS NOT NULL;
    `,
  },
  {
    version: 5,
    name: 'ingresses',
    sql: `
      CREATE TABLE ingresses (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        instance    TEXT NOT NULL,                -- id or name, or {instance} for a pattern hostname
        hostname    TEXT NOT NULL,                -- lower case; exact or a {instance} pattern
        guest_port  INTEGER NOT NULL,
        host_port   INTEGER NOT NULL,             -- the listener port
        created_at  TEXT NOT NULL,
        UNIQUE (hostname, host_port)
      );
    `,
  },
  {
    version: 6,
    name: 'tags, expiry, exit message and phase accounting',
    sql: `
      ALTER TABLE instances ADD COLUMN tags_json TEXT;       -- user key-value tags (JSON object)
      ALTER TABLE instances ADD COLUMN expires_at TEXT;      -- TTL: deleted at this time (ISO 8601)
      ALTER TABLE instances ADD COLUMN exit_message TEXT;    -- how the main command ended, for people
      ALTER TABLE instances ADD COLUMN phases_json TEXT;     -- time per state, current phase, boot phases
      CREATE INDEX instances_expires_at ON instances(expires_at) WHERE expires_at IS NOT NULL;
      ALTER TABLE images ADD COLUMN tags_json TEXT;
      ALTER TABLE ingresses ADD COLUMN tags_json TEXT;
    `,
  },
  {
    version: 7,
    name: 'volumes',
    sql: `
      CREATE TABLE volumes (
        id          TEXT PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        size_gb     INTEGER NOT NULL,
        tags_json   TEXT,
        created_at  TEXT NOT NULL
      );
      CREATE TABLE volume_attachments (
        volume_id    TEXT NOT NULL REFERENCES volumes(id),                         -- a volume in use cannot go
        instance_id  TEXT NOT NULL REFERENCES instances(id) ON DELETE CASCADE,    -- gone with its instance
        mount_path   TEXT NOT NULL,
        readonly     INTEGER NOT NULL,
        overlay      INTEGER NOT NULL,
        overlay_size INTEGER,                                                     -- bytes of the private upper disk
        PRIMARY KEY (volume_id, instance_id),
        UNIQUE (instance_id, mount_path)
      );
      CREATE INDEX volume_attachments_instance ON volume_attachments(instance_id);
    `,
  },
  {
    version: 8,
    name: 'named snapshots',
    sql: `
      CREATE TABLE snapshots (
        id                      TEXT PRIMARY KEY,
        name                    TEXT,                 -- unique per source instance
        kind                    TEXT NOT NULL CHECK (kind IN ('Standby','Stopped')),
        instance_id             TEXT,                 -- the source while it lives; NULL once deleted
        source_instance_id      TEXT NOT NULL,
        source_instance_name    TEXT NOT NULL,
        source_json             TEXT NOT NULL,        -- the source's record at snapshot time (fork needs it)
        hypervisor              TEXT NOT NULL,
        vmm_version             TEXT,
        kernel                  TEXT NOT NULL,
        size_bytes              INTEGER NOT NULL,
        compression             TEXT,                 -- zstd | lz4 | NULL
        compression_level       INTEGER,
        compression_state       TEXT NOT NULL CHECK (compression_state IN ('none','compressing','compressed','error')),
        compression_error       TEXT,
        compressed_size_bytes   INTEGER,
        uncompressed_size_bytes INTEGER,
        tags_json               TEXT,
        created_at              TEXT NOT NULL
      );
      CREATE UNIQUE INDEX snapshots_source_name ON snapshots(source_instance_id, name) WHERE name IS NOT NULL;
      CREATE INDEX snapshots_instance ON snapshots(instance_id) WHERE instance_id IS NOT NULL;
    `,
  },
  {
    version: 9,
    name: 'disk I/O limit',
    sql: `ALTER TABLE instances ADD COLUMN disk_io_bps INTEGER; -- bytes/s over all its disks; NULL: none`,
  },
  {
    version: 10,
    name: 'builds',
    sql: `
      -- Built images: the images table is rebuilt because SQLite cannot widen a CHECK.
      CREATE TABLE images_v10 (
        name          TEXT PRIMARY KEY,
        digest        TEXT,
        status        TEXT NOT NULL CHECK (status IN ('pending','pulling','converting','ready','failed')),
        error         TEXT,
        error_code    TEXT,
        source        TEXT NOT NULL CHECK (source IN ('registry','import','build')),
        platform      TEXT,
        format        TEXT CHECK (format IN ('erofs','ext4')),
        size_bytes    INTEGER,
        config_json   TEXT,
        layers_json   TEXT,
        config_digest TEXT,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        tags_json     TEXT
      );
      INSERT INTO images_v10 (name, digest, status, error, error_code, source, platform, format,
        size_bytes, config_json, layers_json, config_digest, created_at, updated_at, tags_json)
        SELECT name, digest, status, error, error_code, source, platform, format,
        size_bytes, config_json, layers_json, config_digest, created_at, updated_at, tags_json FROM images;
      DROP TABLE images;
      ALTER TABLE images_v10 RENAME TO images;
      CREATE INDEX images_digest ON images(digest);
      CREATE TABLE builds (
        id            TEXT PRIMARY KEY,
        status        TEXT NOT NULL CHECK (status IN ('queued','building','pushing','ready','failed','cancelled')),
        image_ref     TEXT NOT NULL,             -- the image the build makes (normalised reference)
        image_digest  TEXT,
        error         TEXT,
        error_code    TEXT,
        exit_code     INTEGER,                   -- a failing RUN's exit code
        request_json  TEXT NOT NULL,             -- build args, target, network, no_cache, dockerfile name
        steps_json    TEXT NOT NULL,             -- per step: text, status (cached, done, failed), ms
        provenance_json TEXT,
        tags_json     TEXT,
        builder_instance_id TEXT,
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        completed_at  TEXT,
        duration_ms   INTEGER
      );
      -- Step cache: key = sha256(parent key, instruction, content hash of its inputs, build args).
      CREATE TABLE build_cache (
        key           TEXT PRIMARY KEY,
        layer_digest  TEXT,                      -- NULL: the step changed no file
        layer_size    INTEGER,
        created_at    TEXT NOT NULL,
        used_at       TEXT NOT NULL
      );
    `,
  },
];
