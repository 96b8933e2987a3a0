// COPY/ADD's --chown and --chmod: user and group names or ids resolved
// against the image's accounts, octal modes checked.
import { invalid } from './copy-model.js';

/** The largest uid or gid a layer entry may have. */
export const MAX_ID = 0xfffffffe;

/**
 * `--chown=user[:group]` with names or numeric ids. Without a group the gid is
 * the uid's number (Docker's rule). Names are looked up in the image's
 * /etc/passwd and /etc/group through `lookup`.
 */
export function parseChown(
  spec: string,
  lookup: { user(name: string): number | undefined; group(name: string): number | undefined },
): { uid: number; gid: number } {
  const parts = spec.split(':');
  const [user = '', group] = parts;
  if (parts.length > 2 || user === '' || group === '') {
    throw invalid(`invalid --chown ${JSON.stringify(spec)}: use user, user:group, uid or uid:gid`);
  }
  const id = (v: string, what: 'user' | 'group'): number => {
    if (/^\d+$/.test(v)) {
      const n = Number(v);
      if (n > MAX_ID)
        throw invalid(`invalid --chown ${JSON.stringify(spec)}: ${what} id ${v} is too large`);
      return n;
    }
    const n = lookup[what](v);
    if (n === undefined) {
      const file = what === 'user' ? '/etc/passwd' : '/etc/group';
      throw invalid(
        `--chown ${JSON.stringify(spec)}: no ${what} ${JSON.stringify(v)} in the image's ${file}`,
      );
    }
    return n;
  };
  const uid = id(user, 'user');
  return { uid, gid: group === undefined ? uid : id(group, 'group') };
}

/** `--chmod=0755`: octal permission bits (symbolic modes are not supported). */
export function parseChmod(spec: string): number {
  if (!/^[0-7]{1,4}$/.test(spec))
    throw invalid(`invalid --chmod ${JSON.stringify(spec)}: use an octal mode such as 755`);
  return parseInt(spec, 8);
}
