// Mode, owner and mtime of a tar entry, taking pax overrides into account.
import type { Header } from 'tar-stream';
import { unsafeEntry } from './scoped-path.js';

/** Largest uid/gid accepted; (uid_t)-1 means "unchanged" to chown(2). */
const MAX_ID = 0xfffffffe;

export interface EntryMeta {
  /** Permission bits including setuid, setgid and sticky. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: Date;
}

/** The entry's pax extended header records, if it had any. */
export function paxOf(header: Header): Record<string, string> | null {
  const pax = header.pax;
  return typeof pax === 'object' && pax !== null ? (pax as Record<string, string>) : null;
}

/** tar-stream applies pax `path`, `linkpath` and `size`; uid, gid and mtime are read here. */
export function entryMeta(header: Header, label: string): EntryMeta {
  const pax = paxOf(header);
  const id = (paxValue: string | undefined, plain: number | undefined, what: string): number => {
    const value = paxValue === undefined ? (plain ?? 0) : Number(paxValue);
    if (!Number.isInteger(value) || value < 0 || value > MAX_ID) {
      throw unsafeEntry(label, `invalid ${what}`);
    }
    return value;
  };
  let mtime = header.mtime ?? new Date(0);
  if (pax?.mtime !== undefined) mtime = new Date(Number(pax.mtime) * 1000);
  if (Number.isNaN(mtime.getTime())) mtime = new Date(0);
  return {
    mode: (header.mode ?? 0o644) & 0o7777,
    uid: id(pax?.uid, header.uid, 'uid'),
    gid: id(pax?.gid, header.gid, 'gid'),
    mtime,
  };
}
