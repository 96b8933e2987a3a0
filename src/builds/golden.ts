/**
 * Golden images of the catalog (src/core/catalog.ts), made on this host:
 * mmdebstrap writes the root filesystem of one Debian suite from the host's
 * own apt sources as a tar, which becomes the image's single layer; the image
 * then goes through the normal pipeline (erofs disk) and is ready when the
 * image subscription says so. mmdebstrap runs in its `unshare` mode: package
 * maintainer scripts run as root inside a user namespace, never as the host's
 * root. See src/builds/README.md, "Golden images".
 */
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { CatalogEntry } from '../core/catalog.js';
import { VesselError, isVesselError } from '../core/errors.js';
import { run } from '../core/process.js';
import { VERSION } from '../core/version.js';
import type { ImageManager } from '../images/index.js';
import { hostPlatform } from '../images/index.js';
import type { BuildStepRecord } from '../store/index.js';
import { LAYER_MEDIA_TYPE, checkLayer, type BuildResult } from './engine.js';

export interface GoldenDeps {
  readonly images: ImageManager;
  readonly signal: AbortSignal;
  /** A private directory for the root filesystem tar (removed by the caller). */
  readonly work: string;
  readonly output: (line: string) => void;
  readonly steps: (steps: BuildStepRecord[]) => void;
  /** The mmdebstrap executable (tests may point elsewhere). */
  readonly mmdebstrap?: string;
}

/** mmdebstrap's arguments for an entry (output to `out`). */
export function mmdebstrapArgs(entry: CatalogEntry, out: string): string[] {
  const r = entry.recipe;
  return [
    '--mode=unshare',
    `--variant=${r.variant}`,
    ...(r.include.length > 0 ? [`--include=${r.include.join(',')}`] : []),
    // The guest mounts devtmpfs: no device nodes in the layer.
    '--skip=output/dev',
    '--format=tar',
    r.suite,
    out,
  ];
}

/** The steps a golden build shows. */
export function goldenSteps(entry: CatalogEntry): BuildStepRecord[] {
  const r = entry.recipe;
  return [
    {
      stage: 0,
      line: 0,
      text: `mmdebstrap --variant=${r.variant} --include=${r.include.join(',')} ${r.suite}`,
      status: 'pending',
      duration_ms: null,
    },
    {
      stage: 0,
      line: 0,
      text: `import as ${entry.image}`,
      status: 'pending',
      duration_ms: null,
    },
  ];
}

export async function buildGolden(entry: CatalogEntry, deps: GoldenDeps): Promise<BuildResult> {
  const steps = goldenSteps(entry);
  const mark = (i: number, patch: Partial<BuildStepRecord>): void => {
    Object.assign(steps[i]!, patch);
    deps.steps(steps);
  };
  deps.steps(steps);
  await fs.mkdir(deps.work, { recursive: true, mode: 0o700 });
  const out = path.join(deps.work, 'rootfs.tar');
  const args = mmdebstrapArgs(entry, out);
  deps.output(`=> [1/2] ${steps[0]!.text}`);
  let t0 = Date.now();
  mark(0, { status: 'running' });
  try {
    await runTool(deps.mmdebstrap ?? 'mmdebstrap', args, deps);
  } catch (err) {
    mark(0, { status: 'failed', duration_ms: Date.now() - t0 });
    throw err;
  }
  mark(0, { status: 'done', duration_ms: Date.now() - t0 });

  deps.output(`=> [2/2] ${steps[1]!.text}`);
  t0 = Date.now();
  mark(1, { status: 'running' });
  try {
    const { digest, size } = await deps.images.blobs.adopt(createReadStream(out));
    await fs.rm(out, { force: true });
    if ((await checkLayer(deps.images.blobs.open(digest))) === 0)
      throw new VesselError('build_failed', 'mmdebstrap wrote an empty root filesystem');
    const now = new Date().toISOString();
    const config = {
      created: now,
      architecture: hostPlatform().architecture,
      os: 'linux',
      config: {
        Env: [...entry.config.env],
        Cmd: [...entry.config.cmd],
        WorkingDir: entry.config.workingDir,
        Labels: {
          'org.opencontainers.image.title': entry.name,
          'org.opencontainers.image.description': entry.description,
          'vessel.catalog': entry.name,
        },
      },
      rootfs: { type: 'layers', diff_ids: [digest] },
      history: [
        {
          created: now,
          created_by: `mmdebstrap ${args.slice(0, -1).join(' ')} (vessel ${VERSION})`,
        },
      ],
    };
    deps.signal.throwIfAborted();
    await deps.images.commit(entry.image, {
      config: Buffer.from(JSON.stringify(config)),
      layers: [{ mediaType: LAYER_MEDIA_TYPE, digest, size }],
    });
    const image = await deps.images.waitForReady(entry.image, { signal: deps.signal });
    mark(1, { status: 'done', duration_ms: Date.now() - t0 });
    return { digest: image.digest!, baseDigest: null, cachedSteps: 0, ranSteps: 2 };
  } catch (err) {
    mark(1, { status: 'failed', duration_ms: Date.now() - t0 });
    if (deps.signal.aborted) throw new VesselError('cancelled', 'the build was cancelled');
    throw err;
  }
}

/** Run the tool in its own process group; its output lines go to the build log. */
async function runTool(cmd: string, args: string[], deps: GoldenDeps): Promise<void> {
  deps.signal.throwIfAborted();
  const tail: string[] = [];
  try {
    await run(cmd, args, {
      env: { ...process.env, LC_ALL: 'C.UTF-8' },
      signal: deps.signal,
      processGroup: true,
      onLine: (line) => {
        const l = line.trimEnd();
        if (!l) return;
        deps.output(`   ${l}`);
        tail.push(l);
        if (tail.length > 20) tail.shift();
      },
    });
  } catch (err) {
    if (deps.signal.aborted) throw new VesselError('cancelled', 'the build was cancelled');
    if (isVesselError(err, 'tool_missing'))
      throw new VesselError(
        'build_failed',
        `${cmd} is not installed: golden images need it (Debian package mmdebstrap; scripts/setup.sh installs it)`,
      );
    const unshare = tail.some((l) => /unshare|user namespace|newuidmap|subuid/i.test(l));
    throw new VesselError(
      'build_failed',
      `${(err as Error).message.split('\n')[0]}` +
        (unshare
          ? ': its unshare mode needs unprivileged user namespaces and a subordinate id range (/etc/subuid, /etc/subgid) for the daemon user'
          : '') +
        `\n${tail.slice(-10).join('\n')}`,
      { cause: err },
    );
  }
}
