/**
 * Pure rules of volumes: mount paths, attachment compatibility, archive
 * formats. No I/O here, so the unit tests cover them exhaustively.
 */
import path from 'node:path';
import { VesselError } from '../core/errors.js';

/** Paths a volume may not shadow (nor be mounted below). */
const RESERVED = ['/proc', '/dev', '/sys'];

/**
 * A guest mount path: absolute, already normalized (no `.`/`..`/`//`, no
 * trailing `/`), not `/` and not `/proc`, `/dev`, `/sys` or below them.
 * Returns it unchanged; anything else is `invalid_argument`.
 */
export function checkMountPath(p: string): string {
  const bad = (why: string): VesselError =>
    new VesselError('invalid_argument', `mount path "${p}" ${why}`, {
      details: { field: 'mount_path', mount_path: p },
    });
  if (typeof p !== 'string' || !p.startsWith('/')) throw bad('must be absolute');
  if (p.length > 4096) throw bad('is too long');
  if (p.includes('\0')) throw bad('contains a NUL byte');
  if (path.posix.normalize(p) !== p || (p.length > 1 && p.endsWith('/')))
    throw bad(`must be normalized (${path.posix.normalize(p).replace(/(.)\/$/, '$1')})`);
  if (p === '/') throw bad('would shadow the root filesystem');
  for (const r of RESERVED) {
    if (p === r || p.startsWith(`${r}/`)) throw bad(`would shadow ${r}`);
  }
  return p;
}

/** One attachment of a volume to an instance. */
export interface AttachmentRule {
  readonly volume_id: string;
  readonly instance_id: string;
  readonly mount_path: string;
  /** The guest sees the volume read-only (overlay: false). */
  readonly readonly: boolean;
  /** A private copy-on-write layer over the volume; the volume itself is only read. */
  readonly overlay: boolean;
}

/** Does this attachment write to the volume's own disk? */
export function writesVolume(a: Pick<AttachmentRule, 'readonly' | 'overlay'>): boolean {
  return !a.readonly && !a.overlay;
}

/**
 * Check new attachments against the existing ones (of every instance):
 * a volume has one read-write attachment and nothing else, or any number of
 * read-only (and overlay) ones; an instance mounts a volume once and a path
 * once. Throws `volume_in_use` (409) or `invalid_argument` (400).
 */
export function checkAttachments(
  existing: readonly AttachmentRule[],
  wanted: readonly AttachmentRule[],
  names: (volumeId: string) => string = (id) => id,
): void {
  const all: AttachmentRule[] = [...existing];
  for (const w of wanted) {
    checkMountPath(w.mount_path);
    for (const e of all) {
      if (e.instance_id === w.instance_id && e.volume_id === w.volume_id) {
        throw new VesselError(
          'invalid_argument',
          `volume "${names(w.volume_id)}" is already attached to this instance (at ${e.mount_path})`,
          { details: { volume: names(w.volume_id) } },
        );
      }
      if (e.instance_id === w.instance_id && e.mount_path === w.mount_path) {
        throw new VesselError(
          'invalid_argument',
          `mount path ${w.mount_path} is used twice (volumes "${names(e.volume_id)}" and "${names(w.volume_id)}")`,
          { details: { field: 'mount_path', mount_path: w.mount_path } },
        );
      }
      if (e.volume_id === w.volume_id && (writesVolume(e) || writesVolume(w))) {
        const mine = writesVolume(w) ? 'read-write' : 'read-only';
        const theirs = writesVolume(e) ? 'read-write' : 'read-only';
        throw new VesselError(
          'volume_in_use',
          `volume "${names(w.volume_id)}" is attached ${theirs} to instance ${e.instance_id}; ` +
            `a ${mine} attachment needs it ${writesVolume(w) ? 'unattached' : 'not attached read-write'}`,
          { details: { volume: names(w.volume_id), instance_id: e.instance_id } },
        );
      }
    }
    all.push(w);
  }
}

export type ArchiveFormat = 'tar' | 'tar.gz' | 'tar.zst';

/**
 * The archive format from the first bytes (at least 262 for a tar): gzip and
 * zstd by magic, a plain tar by the ustar magic at offset 257 or, for old
 * v7 tars, a header checksum that adds up. Anything else is `invalid_archive`.
 */
export function detectArchive(head: Uint8Array): ArchiveFormat {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'tar.gz';
  if (
    head.length >= 4 &&
    head[0] === 0x28 &&
    head[1] === 0xb5 &&
    head[2] === 0x2f &&
    head[3] === 0xfd
  )
    return 'tar.zst';
  if (head.length >= 262 && Buffer.from(head.subarray(257, 262)).toString('latin1') === 'ustar')
    return 'tar';
  if (head.length >= 512 && tarChecksumOk(head)) return 'tar';
  throw new VesselError(
    'invalid_archive',
    head.length === 0
      ? 'the body is empty: send a tar, tar.gz or tar.zst archive'
      : `the body is not a tar, tar.gz or tar.zst archive (unknown leading bytes${head.length < 512 ? `; only ${head.length} bytes arrived` : ''})`,
    { details: { received_bytes: head.length } },
  );
}

function tarChecksumOk(h: Uint8Array): boolean {
  const field = Buffer.from(h.subarray(148, 156))
    .toString('latin1')
    .replace(/[\0 ]+$/g, '');
  if (!/^[0-7]+$/.test(field.trim())) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return sum === parseInt(field.trim(), 8);
}

const GIB = 1024 ** 3;

/** `size_gb` → bytes; a whole number from 1 to 16384. */
export function volumeBytes(sizeGb: number): number {
  if (!Number.isInteger(sizeGb) || sizeGb < 1 || sizeGb > 16384) {
    throw new VesselError('invalid_argument', `size_gb must be a whole number from 1 to 16384`, {
      details: { field: 'size_gb' },
    });
  }
  return sizeGb * GIB;
}

const NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

/** Volume names: like instance names. */
export function checkVolumeName(name: string): string {
  if (!NAME.test(name)) {
    throw new VesselError(
      'invalid_argument',
      `volume name "${name}" must be lowercase letters, digits, '.', '_' or '-' (max 63)`,
      { details: { field: 'name' } },
    );
  }
  return name;
}
