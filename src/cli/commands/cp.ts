import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { PathInfo, VesselClient } from '../../client/index.js';
import { VesselError } from '../../core/errors.js';
import { connect, type GlobalOptions } from '../connect.js';

type Globals = () => GlobalOptions;
type SetExit = (code: number) => void;

/** One side of `cp`: a local path, `-` (a tar stream on stdin/stdout), or `NAME:/path`. */
export type CpEndpoint =
  | { readonly kind: 'local'; readonly path: string }
  | { readonly kind: 'stdio' }
  | { readonly kind: 'guest'; readonly instance: string; readonly path: string };

/**
 * Docker's rule: `NAME:PATH` names an instance when the part before the
 * first colon has no slash; a local path with a colon is written `./a:b`.
 * A relative guest path is taken from `/`.
 */
export function parseEndpoint(arg: string): CpEndpoint {
  if (arg === '-') return { kind: 'stdio' };
  const m = /^([^/:]+):(.*)$/.exec(arg);
  if (!m) return { kind: 'local', path: arg };
  const p = m[2] ?? '';
  return { kind: 'guest', instance: m[1]!, path: p.startsWith('/') ? p : `/${p}` };
}

/** `a/b/` → `b`; `a/b/.` → `.` (contents only). */
function baseName(p: string): string {
  if (p === '.' || p.endsWith('/.')) return '.';
  const b = path.posix.basename(p.replace(/\/+$/, ''));
  return b === '' ? '/' : b;
}

function dirName(p: string): string {
  return path.posix.dirname(p.replace(/\/+$/, '') || '/');
}

async function guestStat(client: VesselClient, instance: string, p: string): Promise<PathInfo> {
  return client.statInstancePath(instance, p, true);
}

/** `vessel cp ./local NAME:/path` (or `- NAME:/dir` with a tar on stdin). */
async function copyIn(
  client: VesselClient,
  src: CpEndpoint & { kind: 'local' | 'stdio' },
  dst: CpEndpoint & { kind: 'guest' },
  o: { followLink?: boolean },
): Promise<void> {
  const target = await guestStat(client, dst.instance, dst.path);
  if (src.kind === 'stdio') {
    if (!target.exists || !target.is_dir)
      throw new VesselError('not_found', `destination "${dst.path}" must be an existing directory`);
    await client.putInstanceArchive(dst.instance, dst.path, process.stdin);
    return;
  }
  const { packPath } = await import('../cp-tar.js');
  const st = await (o.followLink ? fsp.stat(src.path) : fsp.lstat(src.path)).catch(() => null);
  if (!st) throw new VesselError('not_found', `no such local path "${src.path}"`);
  const contentsOnly = baseName(src.path) === '.';
  let intoDir: string;
  let name: string;
  if (target.exists && target.is_dir) {
    // Into the directory, under the source's name (or its contents for `SRC/.`).
    intoDir = dst.path;
    name = contentsOnly ? '' : baseName(path.resolve(src.path));
  } else if (target.exists) {
    if (st.isDirectory())
      throw new VesselError(
        'invalid_argument',
        `cannot copy a directory onto the file "${dst.path}" in ${dst.instance}`,
      );
    intoDir = dirName(dst.path);
    name = baseName(dst.path);
  } else {
    if (dst.path.endsWith('/') && !st.isDirectory())
      throw new VesselError(
        'not_found',
        `directory "${dst.path}" does not exist in ${dst.instance}`,
      );
    const parent = await guestStat(client, dst.instance, dirName(dst.path));
    if (!parent.exists || !parent.is_dir)
      throw new VesselError(
        'not_found',
        `directory "${dirName(dst.path)}" does not exist in ${dst.instance}`,
      );
    intoDir = dirName(dst.path);
    name = baseName(dst.path);
    // `SRC/. NEW` is the same as `SRC NEW`: NEW is created with SRC's contents.
  }
  const tar = await packPath(src.path, { name, follow: o.followLink ?? false });
  await client.putInstanceArchive(dst.instance, intoDir, tar);
}

/** `vessel cp NAME:/path ./local` (or `NAME:/path -` for a tar on stdout). */
async function copyOut(
  client: VesselClient,
  src: CpEndpoint & { kind: 'guest' },
  dst: CpEndpoint & { kind: 'local' | 'stdio' },
  o: { archive?: boolean },
): Promise<void> {
  const { stat, stream } = await client.getInstanceArchive(src.instance, src.path);
  if (dst.kind === 'stdio') {
    await pipeline(stream, process.stdout);
    return;
  }
  const { extractArchive } = await import('../cp-tar.js');
  const srcIsDir = stat?.is_dir === true;
  const contentsOnly = baseName(src.path) === '.';
  const local = await fsp.stat(dst.path).catch(() => null);
  let dest: string;
  let rename: string | undefined;
  try {
    if (local?.isDirectory()) {
      dest = dst.path;
      rename = contentsOnly ? '' : undefined;
    } else if (local) {
      if (srcIsDir)
        throw new VesselError(
          'invalid_argument',
          `cannot copy a directory onto the file "${dst.path}"`,
        );
      dest = path.dirname(path.resolve(dst.path));
      rename = path.basename(path.resolve(dst.path));
    } else {
      if (dst.path.endsWith('/') && !srcIsDir)
        throw new VesselError('not_found', `local directory "${dst.path}" does not exist`);
      const parent = path.dirname(path.resolve(dst.path));
      const ps = await fsp.stat(parent).catch(() => null);
      if (!ps?.isDirectory())
        throw new VesselError('not_found', `local directory "${parent}" does not exist`);
      dest = parent;
      rename = path.basename(path.resolve(dst.path));
    }
  } catch (err) {
    stream.destroy();
    throw err;
  }
  const r = await extractArchive(stream, {
    dest,
    ...(rename === undefined ? {} : { rename }),
    owners: o.archive ?? false,
  });
  if (r.skipped.length > 0)
    process.stderr.write(
      `vessel cp: skipped ${r.skipped.length} special file(s): ${r.skipped.slice(0, 5).join(', ')}\n`,
    );
}

/** `vessel cp`: files and directories between the host and a Running instance, as tar streams. */
export function registerCpCommand(program: Command, globals: Globals, _setExit: SetExit): void {
  program
    .command('cp')
    .description(
      'copy files and directories between the host and a Running instance (Docker semantics): ' +
        'vessel cp ./src NAME:/dst, vessel cp NAME:/src ./dst; modes, mtimes and symlinks are kept. ' +
        'SRC/. copies the contents of SRC; "-" reads a tar stream from stdin or writes one to stdout. ' +
        'Copying out never writes outside the destination, whatever the guest sends.',
    )
    .argument('<src>', 'local path, "-", or NAME:/path')
    .argument('<dst>', 'local path, "-", or NAME:/path')
    .option('-a, --archive', 'keep owners (uid/gid) when copying out (needs root)')
    .option('-L, --follow-link', 'follow a symlink given as the local source')
    .action(async (s: string, d: string, o: { archive?: boolean; followLink?: boolean }) => {
      const src = parseEndpoint(s);
      const dst = parseEndpoint(d);
      if (src.kind === 'guest' && dst.kind !== 'guest') {
        const client = await connect(globals());
        await copyOut(client, src, dst, o);
      } else if (dst.kind === 'guest' && src.kind !== 'guest') {
        const client = await connect(globals());
        await copyIn(client, src, dst, o);
      } else {
        throw new VesselError(
          'invalid_argument',
          'exactly one of SRC and DST must be an instance path (NAME:/path); the other a local path or "-"',
        );
      }
    });
}
