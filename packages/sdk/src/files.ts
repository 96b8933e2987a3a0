import { PassThrough, Readable } from 'node:stream';
import type { FileEntry, VesselClient } from '../../../src/client/index.js';
import { VesselError, isVesselError } from '../../../src/core/errors.js';
import type { StdinSource } from './commands.js';

/** One directory entry from {@link Files.list}. */
export interface EntryInfo {
  readonly name: string;
  /** `dir + '/' + name`. */
  readonly path: string;
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
  /** Bytes (lstat: a symlink's own size). */
  readonly size: number;
  /** Permission bits, e.g. 0o644. */
  readonly mode: number;
  /** Modification time. */
  readonly mtime: Date;
  /** A symlink's target, else null. */
  readonly linkTarget: string | null;
}

export interface ReadOptions<F extends 'text' | 'bytes' | 'stream'> {
  /** `text` (UTF-8, default), `bytes` (a Buffer, byte exact) or `stream` (a Readable). */
  readonly format?: F;
}

export interface WriteOptions {
  /** Permission bits of the file (default 0o644). */
  readonly mode?: number;
}

function toStream(data: StdinSource): Readable | Buffer | string {
  if (typeof data === 'string') return data;
  if (data instanceof Readable) return data;
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Readable.from(data);
}

/**
 * `sandbox.files`: read, write, list and remove files in the sandbox, through the daemon's
 * files API (`/instances/{id}/files`): bodies stream both ways, any image works (no shell
 * needed in the guest).
 */
export class Files {
  /** @internal */
  constructor(
    private readonly api: VesselClient,
    private readonly id: () => string,
    private readonly name: () => string,
  ) {}

  /** Write `data` to `path`, creating missing parent directories; replaces an existing file. */
  async write(
    path: string,
    data: StdinSource,
    options: WriteOptions = {},
  ): Promise<{ path: string }> {
    this.check('write', path);
    await this.api
      .writeInstanceFile(
        this.id(),
        path,
        toStream(data),
        options.mode === undefined ? {} : { mode: options.mode },
      )
      .catch((err: unknown) => this.rethrow('write', path, err));
    return { path };
  }

  /** Read `path`: as text by default; `{format: 'bytes'}` for the exact bytes. */
  read(path: string, options?: ReadOptions<'text'>): Promise<string>;
  read(path: string, options: ReadOptions<'bytes'>): Promise<Buffer>;
  read(path: string, options: ReadOptions<'stream'>): Promise<Readable>;
  async read(
    path: string,
    options: ReadOptions<'text' | 'bytes' | 'stream'> = {},
  ): Promise<string | Buffer | Readable> {
    this.check('read', path);
    const format = options.format ?? 'text';
    const opened = this.api.readInstanceFile(this.id(), path);
    if (format === 'stream') {
      // Errors (a missing file too) surface on the stream, which is returned at once.
      const out = new PassThrough();
      opened.then(
        (body) => {
          body.on('error', (err) => out.destroy(err));
          body.pipe(out);
        },
        (err: unknown) => {
          try {
            this.rethrow('read', path, err);
          } catch (e) {
            out.destroy(e as Error);
          }
        },
      );
      return out;
    }
    const body = await opened.catch((err: unknown) => this.rethrow('read', path, err));
    const chunks: Buffer[] = [];
    for await (const c of body as AsyncIterable<Buffer>) chunks.push(c);
    const bytes = Buffer.concat(chunks);
    return format === 'bytes' ? bytes : bytes.toString('utf8');
  }

  /** The entries of directory `path` (not recursive; `.` and `..` left out), sorted by name. */
  async list(path: string): Promise<EntryInfo[]> {
    this.check('list', path);
    const entries: FileEntry[] = await this.api
      .listInstanceFiles(this.id(), path)
      .catch((err: unknown) => this.rethrow('list', path, err));
    const dir = path.endsWith('/') ? path.slice(0, -1) : path;
    return entries.map((e) => ({
      name: e.name,
      path: `${dir}/${e.name}`,
      type: e.type,
      size: e.size,
      mode: e.mode,
      mtime: new Date(e.mtime * 1000),
      linkTarget: e.link_target,
    }));
  }

  /** Remove a file, a symlink (not its target) or a directory (`recursive` unless empty). */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    this.check('remove', path);
    await this.api
      .removeInstanceFile(this.id(), path, options)
      .catch((err: unknown) => this.rethrow('remove', path, err));
  }

  private check(op: string, path: string): void {
    if (path === '')
      throw new VesselError('invalid_argument', `files.${op}: the path must not be empty`);
  }

  /** The API's error, prefixed with the operation and the sandbox. */
  private rethrow(op: string, path: string, err: unknown): never {
    if (!isVesselError(err)) throw err;
    throw new VesselError(err.code, `files.${op} in sandbox "${this.name()}": ${err.message}`, {
      details: { ...err.details, path },
    });
  }
}
