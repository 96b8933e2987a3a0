import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { VesselError, errnoCode, toVesselError } from '../core/errors.js';
import { run } from '../core/process.js';
import type { KernelSource } from './catalog.js';

/** A kernel laid out on disk, ready for module selection. */
export interface FetchedKernel {
  readonly version: string;
  readonly vmlinuz: string;
  /** The `lib/modules/<version>` directory. */
  readonly modulesDir: string;
  /** The concrete package (apt: after resolving a meta package; url: the URL). */
  readonly package: string | undefined;
}

const PKG_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const APT_TIMEOUT_MS = 10 * 60_000;

/** Fetch `source` into `workDir` (a private scratch directory the caller removes). */
export async function fetchKernelSource(
  source: KernelSource,
  workDir: string,
): Promise<FetchedKernel> {
  switch (source.type) {
    case 'apt': {
      const pkg = await resolveAptPackage(source.package);
      await run('apt-get', ['download', '-q', pkg], { cwd: workDir, timeoutMs: APT_TIMEOUT_MS });
      const deb = (await fs.readdir(workDir)).find((f) => f.endsWith('.deb'));
      if (!deb) {
        throw new VesselError('tool_failed', `apt-get download ${pkg} produced no .deb file`);
      }
      return { ...(await extractDeb(path.join(workDir, deb), workDir)), package: pkg };
    }
    case 'url': {
      const deb = path.join(workDir, 'kernel.deb');
      await downloadVerified(source.url, source.sha256, deb);
      return { ...(await extractDeb(deb, workDir)), package: source.url };
    }
    case 'path': {
      const modulesDir = path.resolve(source.modules_dir);
      const vmlinuz = path.resolve(source.vmlinuz);
      for (const p of [vmlinuz, modulesDir]) {
        try {
          await fs.access(p);
        } catch (err) {
          throw new VesselError('not_found', `kernel source path ${p} is not readable`, {
            cause: err,
          });
        }
      }
      return { version: path.basename(modulesDir), vmlinuz, modulesDir, package: undefined };
    }
  }
}

/**
 * Resolve a (meta) package to the concrete kernel package through its
 * Depends, e.g. linux-image-cloud-amd64 → linux-image-6.1.0-NN-cloud-amd64.
 * Runs `apt-get update` once only when apt knows no candidate.
 */
export async function resolveAptPackage(pkg: string): Promise<string> {
  if (!PKG_RE.test(pkg)) throw new VesselError('invalid_argument', `invalid package name "${pkg}"`);
  if (!(await hasCandidate(pkg))) {
    await run('apt-get', ['update', '-q'], { timeoutMs: APT_TIMEOUT_MS });
    if (!(await hasCandidate(pkg))) {
      throw new VesselError('not_found', `apt has no installable candidate for package "${pkg}"`);
    }
  }
  const { stdout } = await run('apt-cache', ['depends', pkg]);
  const concrete = parseImageDepends(stdout);
  return concrete ?? pkg;
}

async function hasCandidate(pkg: string): Promise<boolean> {
  const { stdout } = await run('apt-cache', ['policy', pkg]);
  const m = /^\s*Candidate:\s*(\S+)/m.exec(stdout);
  return m !== null && m[1] !== '(none)';
}

/** The `linux-image-<version>` package a meta package depends on, if any. */
export function parseImageDepends(aptCacheDepends: string): string | undefined {
  for (const line of aptCacheDepends.split('\n')) {
    const m = /^\s*\|?Depends:\s*(linux-image-\d\S*)\s*$/.exec(line);
    if (m?.[1] && PKG_RE.test(m[1])) return m[1];
  }
  return undefined;
}

async function extractDeb(deb: string, workDir: string): Promise<Omit<FetchedKernel, 'package'>> {
  const root = path.join(workDir, 'root');
  await run('dpkg-deb', ['-x', deb, root], { timeoutMs: 5 * 60_000 });
  let versions: string[];
  try {
    versions = await fs.readdir(path.join(root, 'lib', 'modules'));
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
    versions = [];
  }
  const [version, ...rest] = versions;
  if (!version || rest.length > 0) {
    throw new VesselError(
      'invalid_argument',
      `${path.basename(deb)} must ship exactly one lib/modules/<version> (found ${versions.length})`,
    );
  }
  const vmlinuz = path.join(root, 'boot', `vmlinuz-${version}`);
  try {
    await fs.access(vmlinuz);
  } catch (err) {
    throw new VesselError(
      'invalid_argument',
      `${path.basename(deb)} has no boot/vmlinuz-${version}`,
      {
        cause: err,
      },
    );
  }
  return { version, vmlinuz, modulesDir: path.join(root, 'lib', 'modules', version) };
}

/** Download `url` to `dest`, checking sha256 while streaming. */
export async function downloadVerified(url: string, sha256: string, dest: string): Promise<void> {
  if (!/^[0-9a-f]{64}$/.test(sha256)) {
    throw new VesselError('invalid_argument', `kernel sha256 "${sha256}" is not 64 hex digits`);
  }
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow' });
  } catch (err) {
    throw toVesselError(err, `downloading kernel ${url}`, 'timeout');
  }
  if (!res.ok || !res.body) {
    throw new VesselError('not_found', `downloading kernel ${url}: HTTP ${res.status}`);
  }
  const hash = createHash('sha256');
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  body.on('data', (chunk: Buffer) => hash.update(chunk));
  await pipeline(body, createWriteStream(dest, { mode: 0o600 }));
  const got = hash.digest('hex');
  if (got !== sha256) {
    throw new VesselError('digest_mismatch', `kernel ${url} has sha256 ${got}, expected ${sha256}`);
  }
}
