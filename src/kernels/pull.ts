import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { VesselError, errnoCode, toVesselError } from '../core/errors.js';
import { ensureDir, pathExists, randomSuffix, removeAll, writeFileAtomic } from '../core/fs.js';
import { run } from '../core/process.js';
import { SingleFlight } from '../core/sync.js';
import { KERNEL_CATALOG, catalogEntry, type CatalogEntry } from './catalog.js';
import { readKernelDir, type Kernel, type KernelInfo } from './kernel.js';
import {
  moduleCompression,
  parseModulesBuiltin,
  parseModulesDep,
  resolveLoadOrder,
} from './modules.js';
import {
  KERNEL_FILES,
  kernelNameDir,
  kernelStagingDir,
  kernelVersionDir,
  kernelsDir,
} from './paths.js';
import { fetchKernelSource } from './source.js';

export interface KernelOptions {
  readonly dataDir: string;
  /** Catalog to resolve names in; default the built-in one. */
  readonly catalog?: readonly CatalogEntry[];
}

const flights = new SingleFlight<Kernel>();

/**
 * Pull a catalog kernel: fetch its package, select the catalog's modules plus
 * their dependencies (via `depmod -b`), and publish
 * `<data>/kernels/<name>/<version>/` by rename. Concurrent pulls of one kernel
 * in one process run once. If that version is already published it is kept.
 */
export function pullKernel(name: string, options: KernelOptions): Promise<Kernel> {
  const entry = catalogEntry(name, options.catalog ?? KERNEL_CATALOG);
  const key = `${path.resolve(options.dataDir)}\0${name}`;
  return flights.do(key, () => doPull(entry, options.dataDir));
}

async function doPull(entry: CatalogEntry, dataDir: string): Promise<Kernel> {
  const staging = path.join(kernelStagingDir(dataDir), `${entry.name}-${randomSuffix()}`);
  const work = `${staging}.work`;
  await ensureDir(work, 0o700);
  try {
    const fetched = await fetchKernelSource(entry.source, work);
    const modulesDir = fetched.modulesDir;
    const depText = await runDepmod(modulesDir, fetched.version, path.join(work, 'depmod'));
    const builtinText = await readOptional(path.join(modulesDir, 'modules.builtin'));
    const { order, builtin } = resolveLoadOrder(
      parseModulesDep(depText),
      entry.modules,
      parseModulesBuiltin(builtinText),
    );

    await ensureDir(path.join(staging, KERNEL_FILES.modulesDir));
    let compression: KernelInfo['module_compression'];
    const files: string[] = [];
    for (const rel of order) {
      const comp = moduleCompression(rel);
      const file = path.basename(rel).replace(/\.(xz|zst|gz)$/, '');
      const dest = path.join(staging, KERNEL_FILES.modulesDir, file);
      if (comp) {
        compression = comp;
        await decompress(comp, path.join(modulesDir, rel), dest);
      } else {
        await fs.copyFile(path.join(modulesDir, rel), dest);
      }
      files.push(file);
    }
    const vmlinuz = path.join(staging, KERNEL_FILES.vmlinuz);
    await fs.copyFile(fetched.vmlinuz, vmlinuz);
    const info: KernelInfo = {
      name: entry.name,
      version: fetched.version,
      package: fetched.package,
      source_type: entry.source.type,
      sha256: await sha256File(vmlinuz),
      modules: files,
      builtin_modules: builtin,
      ...(compression ? { module_compression: compression } : {}),
      created_at: new Date().toISOString(),
    };
    await fs.writeFile(path.join(staging, KERNEL_FILES.modulesOrder), files.join('\n') + '\n');
    await writeFileAtomic(
      path.join(staging, KERNEL_FILES.info),
      JSON.stringify(info, null, 2) + '\n',
    );
    return await publish(staging, kernelVersionDir(dataDir, entry.name, fetched.version));
  } catch (err) {
    throw toVesselError(err, `pulling kernel "${entry.name}"`);
  } finally {
    await removeAll(work);
    await removeAll(staging);
  }
}

/** Rename staging into place; an already published version wins. */
async function publish(staging: string, target: string): Promise<Kernel> {
  await ensureDir(path.dirname(target));
  try {
    await fs.rename(staging, target);
  } catch (err) {
    const code = errnoCode(err);
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
  }
  return readKernelDir(target);
}

/**
 * Run `depmod -b` over a private tree whose `lib/modules/<version>` links to
 * the real module directories, so the source tree is never written to, and
 * return the generated modules.dep.
 */
async function runDepmod(modulesDir: string, version: string, base: string): Promise<string> {
  const existing = await readOptional(path.join(modulesDir, 'modules.dep'));
  if (existing.trim() !== '') return existing;
  const out = path.join(base, 'lib', 'modules', version);
  await ensureDir(out);
  for (const name of await fs.readdir(modulesDir)) {
    const isInput =
      !name.startsWith('modules.') ||
      ['modules.order', 'modules.builtin', 'modules.builtin.modinfo'].includes(name);
    if (isInput) await fs.symlink(path.join(modulesDir, name), path.join(out, name));
  }
  try {
    await run('depmod', ['-b', base, version], { timeoutMs: 120_000 });
  } catch (err) {
    if (err instanceof VesselError && err.code === 'tool_missing') {
      throw new VesselError(
        'tool_missing',
        'depmod is not installed (Debian package kmod); it is needed to pull kernels',
        { cause: err },
      );
    }
    throw err;
  }
  return fs.readFile(path.join(out, 'modules.dep'), 'utf8');
}

async function readOptional(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return '';
    throw err;
  }
}

async function decompress(kind: 'xz' | 'zst' | 'gz', src: string, dest: string): Promise<void> {
  if (kind === 'gz') {
    await fs.writeFile(dest, gunzipSync(await fs.readFile(src)));
    return;
  }
  const tool = kind === 'xz' ? 'xz' : 'zstd';
  await new Promise<void>((resolve, reject) => {
    const child = spawn(tool, ['-dc', src], { stdio: ['ignore', 'pipe', 'inherit'] });
    const outStream = createWriteStream(dest);
    child.stdout.pipe(outStream);
    child.on('error', (err) =>
      reject(
        errnoCode(err) === 'ENOENT'
          ? new VesselError('tool_missing', `${tool} is not installed (needed for .ko.${kind})`)
          : err,
      ),
    );
    child.on('close', (code) => {
      if (code !== 0) {
        reject(new VesselError('tool_failed', `${tool} -dc ${src} exited with code ${code}`));
        return;
      }
      outStream.on('finish', resolve);
      outStream.on('error', reject);
      if (outStream.writableFinished) resolve();
    });
  });
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** All published kernels, newest first per name. */
export async function listKernels(options: { dataDir: string }): Promise<Kernel[]> {
  const out: Kernel[] = [];
  for (const name of await readdirOrEmpty(kernelsDir(options.dataDir))) {
    if (name.startsWith('.')) continue;
    for (const version of await readdirOrEmpty(kernelNameDir(options.dataDir, name))) {
      try {
        out.push(await readKernelDir(kernelVersionDir(options.dataDir, name, version)));
      } catch {
        // Not a published kernel (e.g. left over by a crash); ignore.
      }
    }
  }
  return out.sort(
    (a, b) => a.name.localeCompare(b.name) || b.info.created_at.localeCompare(a.info.created_at),
  );
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await fs.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return [];
    throw err;
  }
}

/** The newest published version of `name`, or `not_found`. Never pulls. */
export async function resolveKernel(name: string, options: KernelOptions): Promise<Kernel> {
  catalogEntry(name, options.catalog ?? KERNEL_CATALOG);
  const found = (await listKernels(options)).find((k) => k.name === name);
  if (!found) {
    throw new VesselError('not_found', `kernel "${name}" has not been pulled`);
  }
  return found;
}

/** {@link resolveKernel}, pulling the kernel first when it is missing (auto-pull). */
export async function ensureKernel(name: string, options: KernelOptions): Promise<Kernel> {
  try {
    return await resolveKernel(name, options);
  } catch (err) {
    if (err instanceof VesselError && err.code === 'not_found') {
      return pullKernel(name, options);
    }
    throw err;
  }
}

/** Remove one version, or every version of `name` when `version` is omitted. */
export async function removeKernel(
  name: string,
  options: { dataDir: string; version?: string },
): Promise<void> {
  const dir =
    options.version === undefined
      ? kernelNameDir(options.dataDir, name)
      : kernelVersionDir(options.dataDir, name, options.version);
  if (name.includes('/') || name.startsWith('.') || options.version?.includes('/')) {
    throw new VesselError('invalid_argument', `invalid kernel name "${name}"`);
  }
  if (!(await pathExists(dir))) {
    const what = options.version ? `${name} ${options.version}` : name;
    throw new VesselError('not_found', `kernel "${what}" is not installed`);
  }
  // Rename first so a concurrent reader never sees a half-deleted kernel.
  const trash = path.join(kernelStagingDir(options.dataDir), `rm-${randomSuffix()}`);
  await ensureDir(path.dirname(trash));
  await fs.rename(dir, trash);
  await removeAll(trash);
}
