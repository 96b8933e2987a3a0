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
];
