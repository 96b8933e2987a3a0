// Builds the benchmark image: a Debian minbase root made with mmdebstrap (or,
// when that fails, a synthetic tree from the host's /usr), split into four
// gzip layers and written as an OCI image layout. Both the root tarball and
// the layout are cached, so only the first run pays for them.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { constants as zlibConstants, createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { MEDIA_TYPES, hostArch } from '../../test/helpers/oci-builder.js';

const execFileAsync = promisify(execFile);

/** Bump when the layer split or the layout format changes, to invalidate cached layouts. */
const LAYOUT_VERSION = 1;
export const LAYOUT_TAG = 'bench';
const REF_NAME = 'org.opencontainers.image.ref.name';
/** Layer names, in the order they are applied. */
const LAYER_NAMES = ['base (everything else)', 'usr/lib', 'usr/share', 'etc + var'] as const;

export interface BenchImage {
  /** OCI image layout directory holding tag {@link LAYOUT_TAG}. */
  readonly layoutDir: string;
  /** 'mmdebstrap' for the real Debian root, 'synthetic' for the fallback tree. */
  readonly source: 'mmdebstrap' | 'synthetic';
  /** Human-readable remarks (fallbacks, cache hits). */
  readonly notes: string[];
  readonly layers: readonly LayerInfo[];
  /** Sum of compressed layer sizes. */
  readonly compressedBytes: number;
  /** Sum of uncompressed tar stream sizes. */
  readonly uncompressedBytes: number;
  readonly entries: number;
}

export interface LayerInfo {
  readonly name: string;
  readonly digest: string;
  readonly diffId: string;
  /** Compressed (blob) size. */
  readonly size: number;
  /** Uncompressed tar stream size. */
  readonly tarBytes: number;
  readonly entries: number;
}

type EntryHeader = Partial<tar.Header> & { name: string };

interface RootEntry {
  readonly header: EntryHeader;
  readonly body: Buffer | undefined;
}

/** Where cached artifacts live: `$VESSEL_BENCH_CACHE`, else /var/cache/vessel-bench, else tmp. */
export async function cacheDir(): Promise<string> {
  const candidates = [
    process.env.VESSEL_BENCH_CACHE,
    '/var/cache/vessel-bench',
    path.join(os.tmpdir(), 'vessel-bench-cache'),
  ].filter((c): c is string => c !== undefined && c !== '');
  for (const dir of candidates) {
    try {
      await fs.mkdir(dir, { recursive: true });
      await fs.access(dir, fs.constants.W_OK);
      return dir;
    } catch {
      // try the next one
    }
  }
  throw new Error(`no writable cache directory among ${candidates.join(', ')}`);
}

const sha256hex = (data: Buffer | string): string =>
  createHash('sha256').update(data).digest('hex');

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

/**
 * The Debian bookworm minbase root as a tarball, made once with mmdebstrap.
 * Returns undefined (with the reason in `notes`) when mmdebstrap fails.
 */
async function debianTarball(cache: string, notes: string[]): Promise<string | undefined> {
  const file = path.join(cache, 'debian-bookworm-minbase.tar');
  if (await exists(file)) {
    notes.push(`root tarball from cache: ${file}`);
    return file;
  }
  // mmdebstrap picks the output format from the extension: keep `.tar` last.
  const tmp = path.join(cache, `.debian-${randomBytes(4).toString('hex')}.tmp.tar`);
  const started = Date.now();
  process.stderr.write('p3: building the Debian minbase root with mmdebstrap (once)...\n');
  try {
    await execFileAsync(
      'mmdebstrap',
      ['--quiet', '--variant=minbase', '--format=tar', 'bookworm', tmp],
      {
        maxBuffer: 64 * 1024 * 1024,
        timeout: 20 * 60_000,
      },
    );
    await fs.rename(tmp, file);
    notes.push(`root tarball built with mmdebstrap in ${Date.now() - started} ms: ${file}`);
    return file;
  } catch (err) {
    await fs.rm(tmp, { force: true });
    const stderr = (err as { stderr?: string }).stderr ?? String(err);
    notes.push(
      `mmdebstrap failed, USING A SYNTHETIC IMAGE instead: ${stderr.trim().split('\n').slice(-3).join(' | ')}`,
    );
    return undefined;
  }
}

/** Entries of a root tarball, with file bodies in memory one at a time. */
async function* tarballEntries(file: string): AsyncGenerator<RootEntry> {
  const extract = tar.extract();
  const input = createReadStream(file);
  input.on('error', (err) => extract.destroy(err));
  input.pipe(extract);
  for await (const entry of extract) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    yield {
      header: entry.header,
      body: entry.header.type === 'file' ? Buffer.concat(chunks) : undefined,
    };
  }
}

/**
 * A ~150 MB tree from the host's own files (fallback when mmdebstrap fails):
 * /usr/lib, /usr/share, /usr/bin and /etc, each under a byte budget.
 */
async function* syntheticEntries(): AsyncGenerator<RootEntry> {
  const budgets: [string, number][] = [
    ['usr/bin', 15e6],
    ['usr/lib', 80e6],
    ['usr/share', 50e6],
    ['etc', 5e6],
  ];
  const mtime = new Date('2024-01-01T00:00:00Z');
  yield { header: { name: 'usr/', type: 'directory', mode: 0o755, mtime }, body: undefined };
  for (const [rel, budget] of budgets) {
    let left = budget;
    const stack = [rel];
    while (stack.length > 0 && left > 0) {
      const dirRel = stack.pop()!;
      let names: string[];
      try {
        names = (await fs.readdir(path.join('/', dirRel))).sort();
      } catch {
        continue;
      }
      yield {
        header: { name: `${dirRel}/`, type: 'directory', mode: 0o755, mtime },
        body: undefined,
      };
      const subdirs: string[] = [];
      for (const name of names) {
        const childRel = `${dirRel}/${name}`;
        const host = path.join('/', childRel);
        let st;
        try {
          st = await fs.lstat(host);
        } catch {
          continue;
        }
        if (st.isDirectory()) subdirs.push(childRel);
        else if (st.isSymbolicLink()) {
          const linkname = await fs.readlink(host);
          yield {
            header: { name: childRel, type: 'symlink', linkname, mode: 0o777, mtime },
            body: undefined,
          };
        } else if (st.isFile() && st.size <= left) {
          let body: Buffer;
          try {
            body = await fs.readFile(host);
          } catch {
            continue;
          }
          left -= body.length;
          yield {
            header: { name: childRel, type: 'file', mode: st.mode & 0o7777, mtime },
            body,
          };
        }
      }
      stack.push(...subdirs.reverse());
    }
  }
}

/** Strip `./` and leading slashes; '' is the root. */
function normalise(name: string): string {
  let n = name;
  while (n.startsWith('./') || n.startsWith('/')) n = n.startsWith('./') ? n.slice(2) : n.slice(1);
  return n === '.' ? '' : n;
}

function layerFor(name: string): number {
  const under = (prefix: string): boolean => name === prefix || name.startsWith(`${prefix}/`);
  if (under('usr/lib')) return 1;
  if (under('usr/share')) return 2;
  if (under('etc') || under('var')) return 3;
  return 0;
}

/** Counts and hashes bytes passing through. */
class Tap extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');
  private waiter: (() => void) | undefined;
  /** Resolve once at least `n` bytes went through. */
  reached(n: number): Promise<void> {
    if (this.bytes >= n) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
    cb(null, chunk);
  }
  override _flush(cb: TransformCallback): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
    cb();
  }
  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/** One gzip layer being streamed into the layout's blob directory. */
class LayerSink {
  readonly pack = tar.pack();
  readonly raw = new Tap();
  readonly compressed = new Tap();
  readonly tmp: string;
  entries = 0;
  /** Bytes handed to the pack (headers + bodies, approximate); used for back-pressure. */
  private pushed = 0;
  readonly done: Promise<void>;

  constructor(blobDir: string) {
    this.tmp = path.join(blobDir, `.layer-${randomBytes(6).toString('hex')}`);
    this.done = pipeline(
      Readable.from(this.pack),
      this.raw,
      createGzip({ level: zlibConstants.Z_DEFAULT_COMPRESSION }),
      this.compressed,
      createWriteStream(this.tmp),
    );
    // Surfaced by `await done` in finish(); keep it from being an unhandled rejection meanwhile.
    this.done.catch(() => undefined);
  }

  async add(header: EntryHeader, body: Buffer | undefined): Promise<void> {
    this.entries++;
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (body === undefined) this.pack.entry(header, cb);
      else this.pack.entry(header, body, cb);
    });
    this.pushed += 512 + (body?.length ?? 0);
    // Keep at most ~16 MB queued ahead of the compressor.
    if (this.pushed - this.raw.bytes > 16 * 1024 * 1024) await this.raw.reached(this.pushed - 4e6);
  }

  async finish(blobDir: string, name: string): Promise<LayerInfo> {
    this.pack.finalize();
    await this.done;
    const digest = this.compressed.digest();
    await fs.rename(this.tmp, path.join(blobDir, digest.slice('sha256:'.length)));
    return {
      name,
      digest,
      diffId: this.raw.digest(),
      size: this.compressed.bytes,
      tarBytes: this.raw.bytes,
      entries: this.entries,
    };
  }
}

/** Split the root's entries into the four layers and write the layout at `dir`. */
async function writeLayout(
  dir: string,
  entries: AsyncIterable<RootEntry>,
  notes: string[],
): Promise<LayerInfo[]> {
  const blobDir = path.join(dir, 'blobs', 'sha256');
  await fs.mkdir(blobDir, { recursive: true });
  const sinks = LAYER_NAMES.map(() => new LayerSink(blobDir));
  /** Layer of each regular file written, so hard links never precede their target. */
  const fileLayer = new Map<string, number>();
  let skipped = 0;
  try {
    for await (const { header, body } of entries) {
      const name = normalise(header.name);
      const type = header.type ?? 'file';
      // Docker/OCI images do not ship device nodes or FIFOs (the runtime provides /dev).
      if (type === 'character-device' || type === 'block-device' || type === 'fifo') {
        skipped++;
        continue;
      }
      if (name === '') continue;
      let layer = layerFor(name);
      const out: EntryHeader = {
        name: type === 'directory' ? `${name}/` : name,
        type,
        mode: header.mode ?? (type === 'directory' ? 0o755 : 0o644),
        uid: header.uid ?? 0,
        gid: header.gid ?? 0,
        uname: header.uname ?? 'root',
        gname: header.gname ?? 'root',
        mtime: header.mtime ?? new Date(0),
      };
      if (type === 'symlink') out.linkname = header.linkname ?? '';
      if (type === 'link') {
        const target = normalise(header.linkname ?? '');
        out.linkname = target;
        layer = Math.max(layer, fileLayer.get(target) ?? 0);
      }
      if (type === 'file' || type === 'contiguous-file') fileLayer.set(name, layer);
      await sinks[layer]!.add(out, type === 'file' ? (body ?? Buffer.alloc(0)) : undefined);
    }
  } catch (err) {
    for (const s of sinks) s.pack.destroy();
    throw err;
  }
  if (skipped > 0) notes.push(`${skipped} device nodes/FIFOs left out of the layers`);
  const layers: LayerInfo[] = [];
  for (const [i, sink] of sinks.entries()) layers.push(await sink.finish(blobDir, LAYER_NAMES[i]!));
  return layers;
}

async function writeJsonBlob(
  dir: string,
  mediaType: string,
  value: unknown,
): Promise<{ mediaType: string; digest: string; size: number }> {
  const data = JSON.stringify(value);
  const hex = sha256hex(data);
  await fs.writeFile(path.join(dir, 'blobs', 'sha256', hex), data);
  return { mediaType, digest: `sha256:${hex}`, size: Buffer.byteLength(data) };
}

async function writeMetadata(dir: string, layers: readonly LayerInfo[]): Promise<void> {
  const created = '2024-01-01T00:00:00Z';
  const config = await writeJsonBlob(dir, MEDIA_TYPES.ociConfig, {
    created,
    architecture: hostArch(),
    os: 'linux',
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['bash'],
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((l) => ({ created, created_by: `vessel bench layer: ${l.name}` })),
  });
  const manifest = await writeJsonBlob(dir, MEDIA_TYPES.ociManifest, {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config,
    layers: layers.map((l) => ({
      mediaType: MEDIA_TYPES.ociLayerGzip,
      digest: l.digest,
      size: l.size,
    })),
  });
  await fs.writeFile(
    path.join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: [{ ...manifest, annotations: { [REF_NAME]: LAYOUT_TAG } }],
    }),
  );
  await fs.writeFile(path.join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
}

function summarise(
  layoutDir: string,
  source: BenchImage['source'],
  notes: string[],
  layers: LayerInfo[],
): BenchImage {
  return {
    layoutDir,
    source,
    notes,
    layers,
    compressedBytes: layers.reduce((n, l) => n + l.size, 0),
    uncompressedBytes: layers.reduce((n, l) => n + l.tarBytes, 0),
    entries: layers.reduce((n, l) => n + l.entries, 0),
  };
}

/** The benchmark image as a cached OCI layout (built on first use). */
export async function prepareBenchImage(): Promise<BenchImage> {
  const cache = await cacheDir();
  const notes: string[] = [];
  const forced = Boolean(process.env.VESSEL_BENCH_SYNTHETIC);
  if (forced) notes.push('VESSEL_BENCH_SYNTHETIC is set: USING A SYNTHETIC IMAGE');
  const tarball = forced ? undefined : await debianTarball(cache, notes);
  const source: BenchImage['source'] = tarball ? 'mmdebstrap' : 'synthetic';
  let key = `synthetic-v${LAYOUT_VERSION}`;
  if (tarball) {
    const st = await fs.stat(tarball);
    key = `debian-v${LAYOUT_VERSION}-${sha256hex(`${st.size}:${st.mtimeMs}`).slice(0, 12)}`;
  }
  const layoutDir = path.join(cache, `layout-${key}`);
  const layersFile = path.join(layoutDir, 'bench-layers.json');
  if (await exists(layersFile)) {
    const layers = JSON.parse(await fs.readFile(layersFile, 'utf8')) as LayerInfo[];
    notes.push(`OCI layout from cache: ${layoutDir}`);
    return summarise(layoutDir, source, notes, layers);
  }
  const tmp = `${layoutDir}.${randomBytes(4).toString('hex')}.tmp`;
  const started = Date.now();
  process.stderr.write('p3: writing the OCI layout (once)...\n');
  try {
    const layers = await writeLayout(
      tmp,
      tarball ? tarballEntries(tarball) : syntheticEntries(),
      notes,
    );
    await writeMetadata(tmp, layers);
    await fs.writeFile(path.join(tmp, 'bench-layers.json'), JSON.stringify(layers, null, 2));
    await fs.rm(layoutDir, { recursive: true, force: true });
    await fs.rename(tmp, layoutDir);
    notes.push(`OCI layout written in ${Date.now() - started} ms: ${layoutDir}`);
    return summarise(layoutDir, source, notes, layers);
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
