import { VesselError } from '../core/errors.js';

/**
 * A writer for the newc ("070701") cpio format, the one the Linux kernel
 * unpacks as an initramfs. Pure: entries in, bytes out.
 */

export interface CpioEntry {
  /** Path inside the archive; a leading `/` is dropped, `.`/`..` components are refused. */
  readonly path: string;
  readonly type: 'file' | 'dir' | 'symlink';
  /** Permission bits (e.g. 0o755); the type bits are added from `type`. */
  readonly mode: number;
  /** File contents (type `file`). */
  readonly data?: Buffer;
  /** Link target (type `symlink`). */
  readonly target?: string;
  readonly uid?: number;
  readonly gid?: number;
  /** Seconds since the epoch; default 0 so archives are reproducible. */
  readonly mtime?: number;
}

const MAGIC = '070701';
const TYPE_BITS = { file: 0o100000, dir: 0o040000, symlink: 0o120000 } as const;
const TRAILER = 'TRAILER!!!';
const MAX_U32 = 0xffffffff;

function hex8(n: number, field: string): string {
  if (!Number.isInteger(n) || n < 0 || n > MAX_U32) {
    throw new VesselError('invalid_argument', `cpio ${field} ${n} does not fit in 32 bits`);
  }
  return n.toString(16).padStart(8, '0');
}

const pad4 = (n: number): number => (4 - (n % 4)) % 4;

function header(fields: {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  size: number;
  nameSize: number;
}): string {
  return (
    MAGIC +
    hex8(fields.ino, 'inode') +
    hex8(fields.mode, 'mode') +
    hex8(fields.uid, 'uid') +
    hex8(fields.gid, 'gid') +
    hex8(fields.nlink, 'nlink') +
    hex8(fields.mtime, 'mtime') +
    hex8(fields.size, 'file size') +
    '00000000'.repeat(4) + // devmajor, devminor, rdevmajor, rdevminor
    hex8(fields.nameSize, 'name size') +
    '00000000' // check
  );
}

/** One record: header, NUL-terminated name, padding, data, padding. */
function record(name: string, fields: Parameters<typeof header>[0], data: Buffer): Buffer[] {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const head = Buffer.from(header({ ...fields, nameSize: nameBuf.length }), 'ascii');
  const parts: Buffer[] = [head, nameBuf, Buffer.alloc(pad4(head.length + nameBuf.length))];
  if (data.length > 0) parts.push(data, Buffer.alloc(pad4(data.length)));
  return parts;
}

function normalise(p: string): string {
  const parts = p.split('/').filter((s) => s !== '');
  if (parts.length === 0 || parts.some((s) => s === '.' || s === '..' || s.includes('\0'))) {
    throw new VesselError('invalid_argument', `invalid cpio path "${p}"`);
  }
  return parts.join('/');
}

/**
 * Yield the archive chunk by chunk (for streaming into gzip or a file).
 * Parent directories missing from `entries` are added (mode 0755) before
 * their first child, because the kernel does not create them. Duplicate
 * paths are refused.
 */
export function* cpioChunks(entries: readonly CpioEntry[]): Generator<Buffer> {
  const seen = new Set<string>();
  let ino = 0;
  const dirRecord = (name: string, mode: number, e?: CpioEntry): Buffer[] =>
    record(
      name,
      {
        ino: ++ino,
        mode: TYPE_BITS.dir | (mode & 0o7777),
        uid: e?.uid ?? 0,
        gid: e?.gid ?? 0,
        nlink: 2,
        mtime: e?.mtime ?? 0,
        size: 0,
        nameSize: 0,
      },
      Buffer.alloc(0),
    );
  for (const e of entries) {
    const name = normalise(e.path);
    if (seen.has(name)) {
      throw new VesselError('invalid_argument', `duplicate cpio path "${name}"`);
    }
    const segments = name.split('/');
    for (let i = 1; i < segments.length; i++) {
      const parent = segments.slice(0, i).join('/');
      if (!seen.has(parent)) {
        seen.add(parent);
        yield* dirRecord(parent, 0o755);
      }
    }
    seen.add(name);
    switch (e.type) {
      case 'dir':
        yield* dirRecord(name, e.mode, e);
        break;
      case 'file':
      case 'symlink': {
        let data: Buffer;
        if (e.type === 'file') {
          data = e.data ?? Buffer.alloc(0);
        } else {
          if (!e.target) {
            throw new VesselError('invalid_argument', `cpio symlink "${name}" has no target`);
          }
          data = Buffer.from(e.target, 'utf8');
        }
        yield* record(
          name,
          {
            ino: ++ino,
            mode: TYPE_BITS[e.type] | (e.mode & 0o7777),
            uid: e.uid ?? 0,
            gid: e.gid ?? 0,
            nlink: 1,
            mtime: e.mtime ?? 0,
            size: data.length,
            nameSize: 0,
          },
          data,
        );
        break;
      }
    }
  }
  yield* record(
    TRAILER,
    { ino: 0, mode: 0, uid: 0, gid: 0, nlink: 1, mtime: 0, size: 0, nameSize: 0 },
    Buffer.alloc(0),
  );
}

/** The whole newc archive as one buffer. */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  return Buffer.concat([...cpioChunks(entries)]);
}
