import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { defaultConfig, type Config } from '../../src/core/config.js';
import { silentLogger } from '../../src/core/logger.js';
import { Paths } from '../../src/core/paths.js';
import { run } from '../../src/core/process.js';
import { ImageManager } from '../../src/images/index.js';
import { ImagesRepo, InstancesRepo, openDatabase, type Db } from '../../src/store/index.js';
import { InstanceManager, type Instance, type InstanceState } from '../../src/instances/index.js';
import { QemuHypervisor } from '../../src/vmm/index.js';
import { guestBinaryPath } from '../../src/core/assets.js';

/** A real ImageManager on a temp data dir with a real SQLite store. */
export interface ImageEnv {
  readonly dir: string;
  readonly paths: Paths;
  readonly manager: ImageManager;
  readonly metrics: Registry;
  readonly db: Db;
  close(): Promise<void>;
}

export async function makeImageEnv(
  overrides: Partial<Config['images']> = {},
  dataDir?: string,
  inUse?: () => ReadonlySet<string>,
): Promise<ImageEnv> {
  const dir = dataDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-img-')));
  const paths = new Paths(dir);
  const db = openDatabase(path.join(dir, 'vessel.db'));
  const metrics = new Registry();
  const manager = new ImageManager({
    paths,
    repo: new ImagesRepo(db),
    logger: silentLogger(),
    config: { ...defaultConfig(dir).images, ...overrides },
    metrics,
    ...(inUse ? { inUse } : {}),
  });
  await manager.init();
  return {
    dir,
    paths,
    manager,
    metrics,
    db,
    async close() {
      await manager.drain();
      manager.close();
      db.close();
      if (!dataDir) await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Look inside a built disk with real tools: a read-only loop mount when this
 * host can (root and erofs/ext4 in the kernel: modes such as setuid survive),
 * else extraction with fsck.erofs / debugfs. The directory is gone afterwards.
 */
export async function withDisk<T>(
  disk: string,
  format: 'erofs' | 'ext4',
  fn: (root: string) => Promise<T>,
): Promise<T> {
  const out = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-disk-'));
  const kernelHas = (await fs.readFile('/proc/filesystems', 'utf8')).includes(format);
  let mounted = false;
  try {
    if (process.getuid?.() === 0 && kernelHas) {
      await run('mount', ['-t', format, '-o', 'loop,ro', disk, out]);
      mounted = true;
    } else if (format === 'erofs') {
      await run('fsck.erofs', [`--extract=${out}`, '--overwrite', disk]);
    } else {
      await run('debugfs', ['-R', `rdump / ${out}`, disk]);
    }
    return await fn(out);
  } finally {
    if (mounted) await run('umount', [out]);
    await fs.rm(out, { recursive: true, force: true });
  }
}

/** Read a Prometheus counter/histogram sample value from the registry. */
export async function metricValue(
  metrics: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const all = await metrics.getMetricsAsJSON();
  const m = all.find((x) => x.name === name);
  if (!m) return 0;
  let total = 0;
  for (const v of m.values as {
    value: number;
    labels: Record<string, string | number>;
    metricName?: string;
  }[]) {
    if (v.metricName && v.metricName !== name && !v.metricName.endsWith('_count')) continue;
    if (Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)) total += v.value;
  }
  return total;
}

/** Put a logging wrapper for `tool` first on PATH; returns the invocation log and an undo. */
export async function shimTool(
  tool: string,
  body?: string,
): Promise<{ count(): Promise<number>; restore(): Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-shim-'));
  const log = path.join(dir, 'calls.log');
  const real = (await run('sh', ['-c', `command -v ${tool}`])).stdout.trim();
  // Capability probes (--help, -V) always reach the real tool.
  const script = `#!/bin/sh\ncase "$1" in --help|-V) exec ${real} "$@";; esac\necho "$@" >> ${log}\n${body ?? `exec ${real} "$@"`}\n`;
  await fs.writeFile(path.join(dir, tool), script, { mode: 0o755 });
  const oldPath = process.env.PATH;
  process.env.PATH = `${dir}:${oldPath ?? ''}`;
  return {
    async count() {
      try {
        const lines = (await fs.readFile(log, 'utf8')).split('\n');
        return lines.filter((l) => l && !l.startsWith('--help') && !l.startsWith('-V')).length;
      } catch {
        return 0;
      }
    },
    async restore() {
      process.env.PATH = oldPath;
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** A real InstanceManager over an ImageEnv's store (QEMU backend; nothing boots until create). */
export function makeInstanceManager(
  env: ImageEnv,
  overrides: Partial<ConstructorParameters<typeof InstanceManager>[0]> = {},
): InstanceManager {
  return new InstanceManager({
    paths: env.paths,
    repo: new InstancesRepo(env.db),
    images: env.manager,
    hypervisor: new QemuHypervisor(),
    logger: silentLogger(),
    guestBinary: guestBinaryPath(),
    accel: () => Promise.resolve('tcg'),
    ...overrides,
  });
}

/**
 * Resolve with the instance once it is in one of `states` (subscribed before the check, so no
 * change is missed); reject naming its state after `timeoutMs`.
 */
export function waitForStates(
  im: InstanceManager,
  id: string,
  states: readonly InstanceState[],
  timeoutMs = 90_000,
): Promise<Instance> {
  return new Promise((resolve, reject) => {
    const done = (result: Instance | Error): void => {
      clearTimeout(timer);
      off();
      if (result instanceof Error) reject(result);
      else resolve(result);
    };
    const timer = setTimeout(
      () => done(new Error(`${id} did not reach ${states.join('|')} (is ${im.get(id).state})`)),
      timeoutMs,
    );
    const off = im.subscribe((e) => {
      if (e.type === 'state' && (e.id === id || e.instance.name === id)) {
        if (states.includes(e.instance.state)) done(e.instance);
      }
    });
    const now = im.get(id);
    if (states.includes(now.state)) done(now);
  });
}
