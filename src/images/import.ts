import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import { VesselError, errnoCode, toVesselError } from '../core/errors.js';
import { ensureDir, randomSuffix } from '../core/fs.js';
import type { Paths } from '../core/paths.js';
import type { BlobStore } from './blob-store.js';
import { parseImageConfig, type ParsedImageConfig } from './image-config.js';
import {
  formatPlatform,
  hostPlatform,
  parseManifest,
  selectPlatform,
  type Descriptor,
} from './manifest.js';
import { MediaType } from './media-types.js';
import type { ImageMetrics } from './metrics.js';
import { formatReference, isDigest, parseReference } from './reference.js';

export interface IngestedImage {
  readonly name: string;
  readonly digest: string;
  readonly configDigest: string;
  readonly layers: Descriptor[];
  readonly config: ParsedImageConfig;
  readonly platform: string | null;
}

export interface IngestOptions {
  readonly archive: Readable;
  readonly name: string | undefined;
  readonly paths: Paths;
  readonly blobs: BlobStore;
  readonly metrics: ImageMetrics;
}

function bad(why: string): VesselError {
  return new VesselError('invalid_argument', `import: ${why}`);
}

/** Unpack the archive's regular files into `dir`; anything else is refused. */
async function extractArchive(archive: Readable, dir: string): Promise<void> {
  const extract = tar.extract();
  const done = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      const name = h.name.replace(/^\.\//, '').replace(/\/$/, '');
      const parts = name.split('/');
      if (name === '' || name === '.' || h.type === 'directory') {
        entry.resume();
        continue;
      }
      if (name.startsWith('/') || parts.some((p) => p === '..' || p === '')) {
        throw bad(`archive entry "${h.name}" has an unsafe path`);
      }
      if (h.type === 'symlink' || h.type === 'link') {
        // `docker save` of old engines links identical layers; we only need files.
        entry.resume();
        continue;
      }
      if (h.type !== 'file' && h.type !== 'contiguous-file') {
        throw bad(
          `archive entry "${h.name}" has type ${h.type}; an image archive holds only files`,
        );
      }
      const target = path.join(dir, ...parts);
      await fs.mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
      await pipeline(entry, createWriteStream(target, { flags: 'wx', mode: 0o600 }));
    }
  })();
  await Promise.all([pipeline(archive, extract), done]);
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return `sha256:${hash.digest('hex')}`;
}

async function readJson(file: string, what: string): Promise<unknown> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8')) as unknown;
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') throw bad(`${what} is missing`);
    throw bad(`${what} is not valid JSON`);
  }
}

async function isGzip(file: string): Promise<boolean> {
  const fh = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(2);
    await fh.read(buf, 0, 2, 0);
    return buf[0] === 0x1f && buf[1] === 0x8b;
  } finally {
    await fh.close();
  }
}

function normaliseName(name: string): string {
  return formatReference(parseReference(name));
}

/** Copy a verified blob from the extracted layout into the store. */
async function ingestBlob(
  o: IngestOptions,
  file: string,
  digest: string,
  size?: number,
): Promise<void> {
  await o.blobs.ensure(digest, size, () => Promise.resolve(createReadStream(file)));
  o.metrics.blobBytes.inc(size ?? 0);
}

async function fromOciLayout(o: IngestOptions, dir: string): Promise<IngestedImage> {
  const index = parseManifest(
    Buffer.from(JSON.stringify(await readJson(path.join(dir, 'index.json'), 'index.json'))),
    MediaType.ociIndex,
    'index.json',
  );
  if (index.kind !== 'index') throw bad('index.json is not an image index');
  const blobPath = (digest: string): string =>
    path.join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const refName = (d: Descriptor): string | undefined =>
    d.annotations?.['io.containerd.image.name'] ??
    d.annotations?.['org.opencontainers.image.ref.name'];
  let chosen: Descriptor | undefined;
  if (o.name !== undefined) {
    const want = normaliseName(o.name);
    const wantTag = parseReference(o.name).tag;
    chosen = index.manifests.find((d) => {
      const r = refName(d);
      if (!r) return false;
      if (r === o.name || r === wantTag) return true;
      try {
        return normaliseName(r) === want;
      } catch {
        return false;
      }
    });
    if (!chosen && index.manifests.length === 1) chosen = index.manifests[0];
  } else if (index.manifests.length === 1) {
    chosen = index.manifests[0];
  }
  if (!chosen) {
    const names = index.manifests.map((d) => refName(d) ?? d.digest);
    throw bad(
      `the layout holds ${index.manifests.length} images (${names.join(', ')}); choose one with a name`,
    );
  }
  const rawName = o.name ?? refName(chosen);
  if (!rawName) throw bad('the image in the layout has no name annotation; give it a name');
  let name: string;
  try {
    name = normaliseName(rawName);
  } catch {
    throw bad(
      `the layout names its image "${rawName}", which is not a full reference; give it a name`,
    );
  }
  await ingestBlob(o, blobPath(chosen.digest), chosen.digest, chosen.size);
  let manifestBody = await o.blobs.read(chosen.digest);
  let digest = chosen.digest;
  let parsed = parseManifest(manifestBody, chosen.mediaType, `manifest ${chosen.digest}`);
  let platform: string | null = null;
  if (parsed.kind === 'index') {
    const entry = selectPlatform(parsed, hostPlatform(), `image ${name}`);
    platform = entry.platform ? formatPlatform(entry.platform) : null;
    await ingestBlob(o, blobPath(entry.digest), entry.digest, entry.size);
    manifestBody = await o.blobs.read(entry.digest);
    digest = entry.digest;
    parsed = parseManifest(manifestBody, entry.mediaType, `manifest ${entry.digest}`);
    if (parsed.kind !== 'manifest') throw bad(`index entry ${entry.digest} is itself an index`);
  }
  const manifest = parsed;
  await ingestBlob(
    o,
    blobPath(manifest.config.digest),
    manifest.config.digest,
    manifest.config.size,
  );
  for (const l of manifest.layers) await ingestBlob(o, blobPath(l.digest), l.digest, l.size);
  const config = parseImageConfig(await o.blobs.read(manifest.config.digest), `image ${name}`);
  platform ??= config.os && config.architecture ? `${config.os}/${config.architecture}` : null;
  return {
    name,
    digest,
    configDigest: manifest.config.digest,
    layers: manifest.layers,
    config,
    platform,
  };
}

interface DockerArchiveEntry {
  Config?: unknown;
  RepoTags?: unknown;
  Layers?: unknown;
}

async function fromDockerArchive(o: IngestOptions, dir: string): Promise<IngestedImage> {
  const list = await readJson(path.join(dir, 'manifest.json'), 'manifest.json');
  if (!Array.isArray(list) || list.length === 0) throw bad('manifest.json lists no images');
  const entries = list as DockerArchiveEntry[];
  const tagsOf = (e: DockerArchiveEntry): string[] =>
    Array.isArray(e.RepoTags) ? e.RepoTags.filter((t): t is string => typeof t === 'string') : [];
  let entry: DockerArchiveEntry | undefined;
  if (o.name !== undefined) {
    const want = normaliseName(o.name);
    entry = entries.find((e) => tagsOf(e).some((t) => normaliseName(t) === want));
    if (!entry && entries.length === 1) entry = entries[0];
  } else if (entries.length === 1) {
    entry = entries[0];
  }
  if (!entry) throw bad(`the archive holds ${entries.length} images; choose one with a name`);
  const rawName = o.name ?? tagsOf(entry)[0];
  if (!rawName) throw bad('the archive has no RepoTags for its image; give it a name');
  const name = normaliseName(rawName);
  const safe = (p: unknown, what: string): string => {
    if (typeof p !== 'string' || p.startsWith('/') || p.split('/').includes('..'))
      throw bad(`${what} has an unsafe path`);
    return path.join(dir, p);
  };
  const configFile = safe(entry.Config, 'Config');
  const configDigest = await sha256File(configFile);
  const configSize = (await fs.stat(configFile)).size;
  await ingestBlob(o, configFile, configDigest, configSize);
  if (!Array.isArray(entry.Layers)) throw bad('Layers is missing');
  const layers: Descriptor[] = [];
  for (const [i, l] of (entry.Layers as unknown[]).entries()) {
    const file = safe(l, `Layers[${i}]`);
    const digest = await sha256File(file);
    const size = (await fs.stat(file)).size;
    await ingestBlob(o, file, digest, size);
    layers.push({
      mediaType: (await isGzip(file)) ? MediaType.ociLayerGzip : MediaType.ociLayer,
      digest,
      size,
    });
  }
  const config = parseImageConfig(await o.blobs.read(configDigest), `image ${name}`);
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: configDigest, size: configSize },
    layers,
  };
  const digest = await o.blobs.put(Buffer.from(JSON.stringify(manifest)));
  const platform = config.os && config.architecture ? `${config.os}/${config.architecture}` : null;
  return { name, digest, configDigest, layers, config, platform };
}

/**
 * Read an image archive (a `docker save` tarball, or an OCI image layout
 * packed as a tar) and verify all of its blobs into the store.
 */
export async function ingestArchive(o: IngestOptions): Promise<IngestedImage> {
  if (o.name !== undefined) parseReference(o.name);
  await ensureDir(o.paths.tmpDir, 0o700);
  const dir = path.join(o.paths.tmpDir, `import-${randomSuffix()}`);
  await fs.mkdir(dir, { mode: 0o700 });
  try {
    try {
      await extractArchive(o.archive, dir);
    } catch (err) {
      if (err instanceof VesselError) throw err;
      throw toVesselError(err, 'import: reading the archive', 'invalid_argument');
    }
    const has = async (f: string): Promise<boolean> =>
      fs.access(path.join(dir, f)).then(
        () => true,
        () => false,
      );
    let image: IngestedImage;
    if (await has('oci-layout')) image = await fromOciLayout(o, dir);
    else if (await has('manifest.json')) image = await fromDockerArchive(o, dir);
    else
      throw bad(
        'the archive is neither an OCI image layout (oci-layout, index.json) nor a docker save tarball (manifest.json)',
      );
    if (!isDigest(image.digest)) throw bad('could not determine the image digest');
    return image;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
