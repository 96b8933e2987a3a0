/**
 * `vessel run -v SRC:DEST[:ro|:rw|:overlay]`: a named volume, or a host
 * directory imported as a fresh volume (a snapshot copy made when the
 * command runs, not a live share).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { VesselError } from '../core/errors.js';
import type { VesselClient, VolumeMount } from '../client/index.js';

export interface VolumeSpec {
  /** A volume id or name, or (hostDir) a host directory. */
  readonly source: string;
  readonly hostDir: boolean;
  readonly mount_path: string;
  readonly mode: 'rw' | 'ro' | 'overlay';
}

const GIB = 1024 ** 3;

/** Parse one `-v` value. A source with a `/` or starting with `.` or `~` is a host directory. */
export function parseVolumeSpec(spec: string): VolumeSpec {
  const parts = spec.split(':');
  const bad = (why: string): VesselError =>
    new VesselError('invalid_argument', `-v ${spec}: ${why} (SRC:DEST[:ro|:rw|:overlay])`);
  if (parts.length < 2 || parts.length > 3) throw bad('expected two or three fields');
  const [source, dest, mode = 'rw'] = parts as [string, string, string?];
  if (source === '') throw bad('the source is empty');
  if (!dest.startsWith('/')) throw bad('the guest path must be absolute');
  if (mode !== 'rw' && mode !== 'ro' && mode !== 'overlay') throw bad(`unknown mode "${mode}"`);
  const hostDir = source.includes('/') || source.startsWith('.') || source.startsWith('~');
  return { source, hostDir, mount_path: dest, mode };
}

/** The create request's mount for a spec whose source is a volume. */
export function mountOf(volumeId: string, s: VolumeSpec): VolumeMount {
  return {
    volume_id: volumeId,
    mount_path: s.mount_path,
    ...(s.mode === 'ro' ? { readonly: true } : {}),
    ...(s.mode === 'overlay' ? { overlay: true } : {}),
  };
}

/** A volume size that holds `bytes` of files with room to spare: whole GiB, at least 1. */
export function sizeGbFor(bytes: number): number {
  return Math.max(1, Math.ceil((bytes * 1.25 + 256 * 1024 * 1024) / GIB));
}

/**
 * Turn `-v` values into create-request mounts, importing each host
 * directory (tar of it, streamed) as a new volume named after it.
 */
export async function resolveVolumeSpecs(
  client: VesselClient,
  specs: readonly string[],
  log: (line: string) => void,
): Promise<VolumeMount[]> {
  const out: VolumeMount[] = [];
  for (const raw of specs) {
    const s = parseVolumeSpec(raw);
    if (!s.hostDir) {
      out.push(mountOf(s.source, s));
      continue;
    }
    const dir = path.resolve(
      s.source.startsWith('~') ? s.source.replace(/^~/, process.env.HOME ?? '~') : s.source,
    );
    const st = await fs.stat(dir).catch(() => undefined);
    if (!st?.isDirectory())
      throw new VesselError('invalid_argument', `-v ${raw}: ${dir} is not a directory`);
    const base =
      path
        .basename(dir)
        .toLowerCase()
        .replace(/[^a-z0-9_.-]+/g, '-')
        .replace(/^[^a-z0-9]+/, '')
        .slice(0, 40) || 'dir';
    const name = `${base}-${randomBytes(3).toString('hex')}`;
    const vol = await client.createVolumeFromArchive(tarOf(dir), {
      name,
      size_gb: sizeGbFor(await treeBytes(dir)),
    });
    log(`imported ${dir} as volume ${vol.name} (a snapshot copy, not a live share)`);
    out.push(mountOf(vol.id, s));
  }
  return out;
}

/**
 * `tar -C dir -cf - .` as a stream that ends only when tar exits 0: a tar that
 * fails (even after writing everything) destroys it with tar's message, so a
 * partial archive is never sent as if it were whole.
 */
function tarOf(dir: string): Readable {
  const out = new PassThrough();
  const child = spawn('tar', ['-C', dir, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.pipe(out, { end: false });
  const failed = (why: string): void => {
    out.destroy(new VesselError('invalid_argument', `tar of ${dir} failed: ${why}`));
  };
  child.on('error', (err) => failed(err.message));
  child.on('close', (code, signal) => {
    if (code === 0) out.end();
    else failed(stderr.trim() || `exit ${code ?? signal}`);
  });
  out.on('close', () => {
    if (child.exitCode === null) child.kill();
  });
  return out;
}

/** Bytes of regular files below `dir` (symlinks not followed). */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += 4096 + (await treeBytes(p));
    else if (e.isFile()) total += (await fs.lstat(p)).size;
    else total += 512;
  }
  return total;
}
