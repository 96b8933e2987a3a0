// Builds test images byte by byte: tar layers (hostile ones included), OCI image
// layouts, `docker save`-style archives, and pushes layouts to a registry with skopeo.
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

const execFileAsync = promisify(execFile);

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

const REF_NAME = 'org.opencontainers.image.ref.name';
/** Fixed default mtime, so the same spec always gives the same digests. */
const EPOCH = new Date('2024-01-01T00:00:00Z');

/**
 * One tar entry, written verbatim: `path` may be absolute or contain `..`.
 * `size` without `content` makes a zero-filled file of that size.
 * `devmajor`/`devminor` apply to `char` and `block` (default 1/3, i.e. /dev/null).
 */
export type EntrySpec = {
  path: string;
  type?: 'file' | 'dir' | 'symlink' | 'link' | 'char' | 'block' | 'fifo';
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  mtime?: Date;
  size?: number;
  devmajor?: number;
  devminor?: number;
};

export interface ImageSpec {
  layers: EntrySpec[][];
  config?: {
    Entrypoint?: string[];
    Cmd?: string[];
    Env?: string[];
    WorkingDir?: string;
    User?: string;
    ExposedPorts?: Record<string, object>;
  };
  /** Defaults to the host's architecture in OCI spelling (amd64, arm64). */
  architecture?: string;
  os?: string;
  compression?: 'gzip' | 'none';
  /**
   * Rewrites layer `index`'s uncompressed tar before it is compressed and hashed, e.g. to
   * cut it short; the config's diff_id is that of the result.
   */
  editTar?: (tar: Buffer, index: number) => Buffer;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture: string; os: string; variant?: string };
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** The host architecture in OCI spelling. */
export function hostArch(): string {
  const map: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386' };
  return map[process.arch] ?? process.arch;
}

const TAR_TYPES = {
  file: 'file',
  dir: 'directory',
  symlink: 'symlink',
  link: 'link',
  char: 'character-device',
  block: 'block-device',
  fifo: 'fifo',
} as const;

const DEFAULT_MODES = {
  file: 0o644,
  dir: 0o755,
  symlink: 0o777,
  link: 0o644,
  char: 0o666,
  block: 0o660,
  fifo: 0o644,
};

/** Builds one tar layer from `entries`, in order, gzip-compressed unless told otherwise. */
export async function makeLayer(
  entries: EntrySpec[],
  options: { compression?: 'gzip' | 'none'; editTar?: (tar: Buffer) => Buffer } = {},
): Promise<{ blob: Buffer; digest: string; diffId: string; mediaType: string; size: number }> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of pack) chunks.push(chunk as Buffer);
  })();
  for (const entry of entries) {
    const type = entry.type ?? 'file';
    const header: Partial<tar.Header> & { name: string } = {
      name: entry.path,
      type: TAR_TYPES[type],
      // tar-stream replaces a falsy mode with its default and masks the result with 0o7777;
      // a bit above the mask lets an explicit mode 0 through.
      mode: (entry.mode ?? DEFAULT_MODES[type]) | 0o100000,
      uid: entry.uid ?? 0,
      gid: entry.gid ?? 0,
      mtime: entry.mtime ?? EPOCH,
    };
    if (entry.linkname !== undefined) header.linkname = entry.linkname;
    if (type === 'char' || type === 'block') {
      header.devmajor = entry.devmajor ?? 1;
      header.devminor = entry.devminor ?? 3;
    }
    const body = type === 'file' ? (entry.content ?? Buffer.alloc(entry.size ?? 0)) : undefined;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (body === undefined) pack.entry(header, done);
      else pack.entry(header, body, done);
    });
  }
  pack.finalize();
  await collected;
  const packed = Buffer.concat(chunks);
  const raw = options.editTar ? options.editTar(packed) : packed;
  const gzip = (options.compression ?? 'gzip') === 'gzip';
  const blob = gzip ? gzipSync(raw) : raw;
  return {
    blob,
    digest: sha256(blob),
    diffId: sha256(raw),
    mediaType: gzip ? MEDIA_TYPES.ociLayerGzip : MEDIA_TYPES.ociLayerTar,
    size: blob.length,
  };
}

async function writeBlob(
  dir: string,
  mediaType: string,
  data: Buffer | string,
): Promise<Descriptor> {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  const digest = sha256(buf);
  const blobDir = join(dir, 'blobs', 'sha256');
  await mkdir(blobDir, { recursive: true });
  await writeFile(join(blobDir, digest.slice('sha256:'.length)), buf);
  return { mediaType, digest, size: buf.length };
}

function platformOf(image: ImageSpec): { architecture: string; os: string; variant?: string } {
  const architecture = image.architecture ?? hostArch();
  const platform = { architecture, os: image.os ?? 'linux' };
  return architecture === 'arm64' ? { ...platform, variant: 'v8' } : platform;
}

/** The image config JSON (the `application/vnd.oci.image.config.v1+json` blob). */
export function imageConfig(image: ImageSpec, diffIds: string[]): string {
  const { architecture, os } = platformOf(image);
  return JSON.stringify({
    created: EPOCH.toISOString(),
    architecture,
    os,
    config: image.config ?? {},
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({
      created: EPOCH.toISOString(),
      created_by: `test layer ${i}`,
    })),
  });
}

/** Writes the layers, config and manifest of `image` into a layout's blob store. */
async function writeImageBlobs(dir: string, image: ImageSpec): Promise<Descriptor> {
  const layers = [];
  for (const [index, entries] of image.layers.entries()) {
    const edit = image.editTar;
    const layer = await makeLayer(entries, {
      compression: image.compression ?? 'gzip',
      ...(edit ? { editTar: (tar: Buffer) => edit(tar, index) } : {}),
    });
    layers.push({ ...(await writeBlob(dir, layer.mediaType, layer.blob)), diffId: layer.diffId });
  }
  const config = await writeBlob(
    dir,
    MEDIA_TYPES.ociConfig,
    imageConfig(
      image,
      layers.map((l) => l.diffId),
    ),
  );
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config,
    layers: layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
  });
  return {
    ...(await writeBlob(dir, MEDIA_TYPES.ociManifest, manifest)),
    platform: platformOf(image),
  };
}

async function writeIndexBlob(dir: string, manifests: Descriptor[]): Promise<Descriptor> {
  const index = JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests });
  return writeBlob(dir, MEDIA_TYPES.ociIndex, index);
}

/** Adds `entries` to the layout's `index.json`, replacing entries with the same ref name. */
async function addToLayoutIndex(dir: string, entries: Descriptor[]): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const indexPath = join(dir, 'index.json');
  let manifests: Descriptor[] = [];
  try {
    manifests = (JSON.parse(await readFile(indexPath, 'utf8')) as { manifests: Descriptor[] })
      .manifests;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const refs = new Set(entries.map((e) => e.annotations?.[REF_NAME]));
  manifests = manifests.filter((m) => !refs.has(m.annotations?.[REF_NAME]));
  manifests.push(...entries);
  await writeFile(
    indexPath,
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }),
  );
}

/**
 * Writes an OCI image layout at `dir` (created if missing; existing tags are kept
 * unless overwritten). With `index: 'multiarch'` each tag points at an image index
 * holding its one manifest instead of at the manifest itself.
 */
export async function writeOciLayout(
  dir: string,
  images: { ref: string; image: ImageSpec }[],
  options: { index?: 'single' | 'multiarch' } = {},
): Promise<void> {
  const entries: Descriptor[] = [];
  for (const { ref, image } of images) {
    let desc = await writeImageBlobs(dir, image);
    if (options.index === 'multiarch') desc = await writeIndexBlob(dir, [desc]);
    entries.push({ ...desc, annotations: { [REF_NAME]: ref } });
  }
  await addToLayoutIndex(dir, entries);
}

/** Writes one tag pointing at an image index with one manifest per architecture. */
export async function writeMultiArchLayout(
  dir: string,
  tag: string,
  perArch: Record<string, ImageSpec>,
): Promise<void> {
  const manifests: Descriptor[] = [];
  for (const [architecture, image] of Object.entries(perArch)) {
    manifests.push(await writeImageBlobs(dir, { ...image, architecture }));
  }
  const index = await writeIndexBlob(dir, manifests);
  await addToLayoutIndex(dir, [{ ...index, annotations: { [REF_NAME]: tag } }]);
}

/** The descriptor `index.json` holds for `tag` in the layout at `dir`. */
export async function layoutDescriptor(dir: string, tag: string): Promise<Descriptor> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as {
    manifests: Descriptor[];
  };
  const found = index.manifests.find((m) => m.annotations?.[REF_NAME] === tag);
  if (!found) throw new Error(`tag "${tag}" not found in OCI layout ${dir}`);
  return found;
}

/**
 * Copies `oci:<layoutDir>:<tag>` to `docker://<registry>/<repoAndTag>` with skopeo
 * (plain HTTP allowed, no signature policy, anonymous unless `creds` are given).
 */
export async function pushLayout(
  layoutDir: string,
  tag: string,
  registry: string,
  repoAndTag: string,
  options: {
    format?: 'oci' | 'v2s2';
    all?: boolean;
    creds?: { username: string; password: string };
  } = {},
): Promise<void> {
  const args = ['--insecure-policy', 'copy', '--quiet', '--dest-tls-verify=false'];
  if (options.format) args.push('--format', options.format);
  if (options.all) args.push('--all');
  if (options.creds)
    args.push('--dest-creds', `${options.creds.username}:${options.creds.password}`);
  else args.push('--dest-no-creds');
  args.push(`oci:${layoutDir}:${tag}`, `docker://${registry}/${repoAndTag}`);
  await skopeo(args);
}

/**
 * The busybox test image (busyboxImage) written as a layout under `work` and pushed to
 * `registry` as `library/busybox:1`; returns its reference.
 */
export async function pushBusybox(registry: string, work: string): Promise<string> {
  const layout = join(work, 'busybox-layout');
  await writeOciLayout(layout, [{ ref: 'busybox', image: await busyboxImage() }]);
  await pushLayout(layout, 'busybox', registry, 'library/busybox:1');
  return `${registry}/library/busybox:1`;
}

/** Runs skopeo with `args`; a failure carries skopeo's stderr in its message. */
export async function skopeo(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('skopeo', args, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`skopeo ${args.join(' ')} failed: ${stderr.trim()}`, { cause: err });
  }
}

const BUSYBOX_APPLETS = (
  'sh ash echo ls cat cp mv rm mkdir rmdir ln chmod chown touch pwd env id uname hostname sleep ' +
  'true false test [ grep sed head tail wc ps kill date printf mount umount df du find xargs wget ' +
  'vi tar gzip stat dd sync whoami'
).split(' ');

let busyboxBinary: Promise<Buffer> | undefined;

/**
 * A small realistic image made from the host's static busybox: layer 0 holds the
 * directory tree, /bin/busybox and its applet symlinks; layer 1 holds /etc files.
 */
export async function busyboxImage(): Promise<ImageSpec> {
  busyboxBinary ??= readFile('/usr/bin/busybox');
  const binary = await busyboxBinary;
  const dirs = 'bin dev etc home proc sys usr usr/bin var'
    .split(' ')
    .map((path): EntrySpec => ({ path, type: 'dir' }));
  const base: EntrySpec[] = [
    ...dirs,
    { path: 'root', type: 'dir', mode: 0o700 },
    { path: 'tmp', type: 'dir', mode: 0o1777 },
    { path: 'bin/busybox', content: binary, mode: 0o755 },
    ...BUSYBOX_APPLETS.map((name): EntrySpec => ({
      path: `bin/${name}`,
      type: 'symlink',
      linkname: '/bin/busybox',
    })),
  ];
  const etc: EntrySpec[] = [
    { path: 'etc', type: 'dir' },
    {
      path: 'etc/passwd',
      content:
        'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n',
    },
    { path: 'etc/group', content: 'root:x:0:\nnogroup:x:65534:\n' },
    { path: 'etc/hostname', content: 'vessel-test\n' },
  ];
  return {
    layers: [base, etc],
    architecture: hostArch(),
    os: 'linux',
    config: {
      Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      Cmd: ['/bin/sh'],
    },
  };
}

/**
 * Writes a `docker save`-style tarball: manifest.json, `<sha>.json` config,
 * `<id>/layer.tar` (uncompressed), `<id>/json`, `<id>/VERSION` and `repositories`.
 */
export async function writeDockerArchive(
  file: string,
  image: ImageSpec,
  repoTag: string,
): Promise<void> {
  const layers = [];
  for (const entries of image.layers)
    layers.push(await makeLayer(entries, { compression: 'none' }));
  const config = imageConfig(
    image,
    layers.map((l) => l.diffId),
  );
  const configName = `${sha256(config).slice('sha256:'.length)}.json`;
  const entries: EntrySpec[] = [];
  const ids: string[] = [];
  let parent: string | undefined;
  for (const layer of layers) {
    const id = sha256(JSON.stringify({ parent, diffId: layer.diffId })).slice('sha256:'.length);
    const v1 = { id, ...(parent ? { parent } : {}), created: EPOCH.toISOString() };
    entries.push(
      { path: id, type: 'dir' },
      { path: `${id}/VERSION`, content: '1.0' },
      { path: `${id}/json`, content: JSON.stringify(v1) },
      { path: `${id}/layer.tar`, content: layer.blob },
    );
    ids.push(id);
    parent = id;
  }
  const colon = repoTag.lastIndexOf(':');
  const [repo, tag] =
    colon > repoTag.lastIndexOf('/')
      ? [repoTag.slice(0, colon), repoTag.slice(colon + 1)]
      : [repoTag, 'latest'];
  const manifest = [
    {
      Config: configName,
      RepoTags: [`${repo}:${tag}`],
      Layers: ids.map((id) => `${id}/layer.tar`),
    },
  ];
  entries.push(
    { path: configName, content: config },
    { path: 'manifest.json', content: JSON.stringify(manifest) },
    { path: 'repositories', content: JSON.stringify({ [repo]: { [tag]: parent } }) },
  );
  const archive = await makeLayer(entries, { compression: 'none' });
  await writeFile(file, archive.blob);
}

/** Pack a directory's files as a tar stream (what `vessel image import DIR` sends). */
export async function tarDir(dir: string): Promise<Readable> {
  const pack = tar.pack();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else pack.entry({ name: r }, await readFile(join(dir, r)));
    }
  };
  await walk('');
  pack.finalize();
  return pack as unknown as Readable;
}

/** Write the busybox test image as a docker archive in `dir` and import it; its name. */
export async function importBusybox(
  client: { importImage(body: Readable): Promise<{ name: string }> },
  dir: string,
  ref: string,
): Promise<string> {
  const archive = join(dir, 'busybox.tar');
  await writeDockerArchive(archive, await busyboxImage(), ref);
  return (await client.importImage(createReadStream(archive))).name;
}
