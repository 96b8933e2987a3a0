/**
 * Compare two OCI images as a user of them would see them: the flattened file tree and
 * the runtime config. Both images are unpacked by the same third-party tool (`umoci
 * unpack`, as root so owners are real), from OCI image layouts: buildah writes one with
 * `buildah push IMG oci:DIR:TAG`; a Vessel image's layout is assembled from the daemon's
 * blob store (`<dataDir>/blobs/sha256/<hex>`), since Vessel has no image export.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const REF_NAME = 'org.opencontainers.image.ref.name';
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** One path of a flattened tree. mtimes are left out on purpose. */
export interface TreeNode {
  readonly type: 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';
  /** Permission bits with setuid, setgid and sticky (`mode & 0o7777`). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** Regular files only. */
  readonly size?: number;
  /** Regular files only: sha256 of the content (hex). */
  readonly sha256?: string;
  /** Symlinks only. */
  readonly target?: string;
  /** Regular files with more than one link: the other paths of the tree sharing the inode. */
  readonly links?: readonly string[];
}

/** Absolute path in the image (`/`, `/etc/passwd`) → node. */
export type Tree = ReadonlyMap<string, TreeNode>;

/** A difference between two trees (`a` and `b` are the formatted values; `-` is absent). */
export interface TreeDiff {
  readonly path: string;
  readonly field: 'presence' | 'type' | 'mode' | 'owner' | 'size' | 'sha256' | 'target' | 'links';
  readonly a: string;
  readonly b: string;
}

async function run(file: string, args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(file, args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(`${file} ${args.join(' ')} failed: ${stderr.trim()}`, { cause: err });
  }
}

const hex = (digest: string): string => digest.replace(/^sha256:/, '');

/**
 * Write an OCI image layout at `layout` holding the image whose manifest is `manifestDigest`
 * in a Vessel blob store (`blobsDir` = `<dataDir>/blobs`), tagged `tag`.
 */
export async function layoutFromVesselStore(
  blobsDir: string,
  manifestDigest: string,
  layout: string,
  tag: string,
): Promise<void> {
  const blob = (d: string): string => path.join(blobsDir, 'sha256', hex(d));
  const manifest = JSON.parse(await fs.readFile(blob(manifestDigest), 'utf8')) as {
    config: { digest: string };
    layers: { digest: string }[];
  };
  const out = path.join(layout, 'blobs', 'sha256');
  await fs.mkdir(out, { recursive: true });
  for (const d of [manifestDigest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)])
    await fs.copyFile(blob(d), path.join(out, hex(d)));
  const size = (await fs.stat(blob(manifestDigest))).size;
  await fs.writeFile(path.join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await fs.writeFile(
    path.join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        { mediaType: MANIFEST, digest: manifestDigest, size, annotations: { [REF_NAME]: tag } },
      ],
    }),
  );
}

/** The runtime part of an OCI image config, and the platform. */
export interface ImageConfigView {
  architecture?: string;
  os?: string;
  config: {
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    Env?: string[];
    WorkingDir?: string;
    User?: string;
    ExposedPorts?: Record<string, unknown>;
    Labels?: Record<string, string>;
    [other: string]: unknown;
  };
}

/** The config of image `tag` in the OCI layout `layout`. */
export async function layoutConfig(layout: string, tag: string): Promise<ImageConfigView> {
  const blob = async (d: string): Promise<unknown> =>
    JSON.parse(await fs.readFile(path.join(layout, 'blobs', 'sha256', hex(d)), 'utf8'));
  const index = JSON.parse(await fs.readFile(path.join(layout, 'index.json'), 'utf8')) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const desc = index.manifests.find((m) => m.annotations?.[REF_NAME] === tag);
  if (!desc) throw new Error(`tag ${tag} is not in the OCI layout ${layout}`);
  const manifest = (await blob(desc.digest)) as { config: { digest: string } };
  const config = (await blob(manifest.config.digest)) as Partial<ImageConfigView>;
  return { ...config, config: config.config ?? {} };
}

/** `umoci unpack` image `tag` of `layout` into the new directory `bundle`; its rootfs tree. */
export async function unpackLayout(layout: string, tag: string, bundle: string): Promise<Tree> {
  await run('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle]);
  return readTree(path.join(bundle, 'rootfs'));
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return hash.digest('hex');
}

function typeOf(st: Stats): TreeNode['type'] {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

/** Walk `root` (never following symlinks) into a {@link Tree}. */
export async function readTree(root: string): Promise<Tree> {
  const nodes = new Map<string, TreeNode>();
  const inodes = new Map<number, string[]>();
  const visit = async (rel: string): Promise<void> => {
    const host = path.join(root, rel);
    const st = await fs.lstat(host);
    const type = typeOf(st);
    const node: {
      -readonly [K in keyof TreeNode]: TreeNode[K];
    } = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
    const key = `/${rel}`;
    if (type === 'file') {
      node.size = st.size;
      node.sha256 = await sha256File(host);
      if (st.nlink > 1) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), key]);
    } else if (type === 'symlink') {
      node.target = await fs.readlink(host);
    }
    nodes.set(key, node);
    if (type === 'dir')
      for (const name of (await fs.readdir(host)).sort()) await visit(path.posix.join(rel, name));
  };
  await visit('');
  for (const group of inodes.values())
    for (const p of group) {
      const n = nodes.get(p)!;
      nodes.set(p, { ...n, links: group.filter((o) => o !== p).sort() });
    }
  return nodes;
}

const octal = (m: number): string => m.toString(8).padStart(4, '0');

/** A node in one line, for messages and presence diffs. */
export function describeNode(n: TreeNode): string {
  const base = `${n.type} ${octal(n.mode)} ${n.uid}:${n.gid}`;
  if (n.type === 'file') return `${base} ${n.size} bytes`;
  if (n.type === 'symlink') return `${base} -> ${n.target}`;
  return base;
}

/** Every difference between trees `a` and `b`, sorted by path. */
export function diffTrees(a: Tree, b: Tree): TreeDiff[] {
  const out: TreeDiff[] = [];
  const paths = [...new Set([...a.keys(), ...b.keys()])].sort();
  for (const p of paths) {
    const x = a.get(p);
    const y = b.get(p);
    if (!x || !y) {
      out.push({
        path: p,
        field: 'presence',
        a: x ? describeNode(x) : '-',
        b: y ? describeNode(y) : '-',
      });
      continue;
    }
    const push = (field: TreeDiff['field'], va: string, vb: string): void => {
      if (va !== vb) out.push({ path: p, field, a: va, b: vb });
    };
    push('type', x.type, y.type);
    if (x.type !== y.type) continue;
    push('mode', octal(x.mode), octal(y.mode));
    push('owner', `${x.uid}:${x.gid}`, `${y.uid}:${y.gid}`);
    push('size', String(x.size ?? '-'), String(y.size ?? '-'));
    push('sha256', (x.sha256 ?? '-').slice(0, 12), (y.sha256 ?? '-').slice(0, 12));
    push('target', x.target ?? '-', y.target ?? '-');
    push('links', (x.links ?? []).join(','), (y.links ?? []).join(','));
  }
  return out;
}

/** The config fields a Dockerfile sets, for comparing two builds of it. */
export interface ConfigFields {
  architecture: string | undefined;
  os: string | undefined;
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  Env: string[];
  WorkingDir: string;
  User: string;
  ExposedPorts: string[];
  Labels: Record<string, string>;
}

/**
 * The Dockerfile-controlled fields of `c`, normalised where the spec allows two spellings
 * (absent vs empty). `dropLabels`: labels a tool adds by itself.
 */
export function configFields(c: ImageConfigView, dropLabels: readonly string[] = []): ConfigFields {
  const r = c.config;
  const labels = { ...(r.Labels ?? {}) };
  for (const l of dropLabels) delete labels[l];
  const list = (v: string[] | null | undefined): string[] | null =>
    v === undefined || v === null || v.length === 0 ? null : v;
  return {
    architecture: c.architecture,
    os: c.os,
    Entrypoint: list(r.Entrypoint),
    Cmd: list(r.Cmd),
    Env: r.Env ?? [],
    WorkingDir: r.WorkingDir ?? '',
    User: r.User ?? '',
    ExposedPorts: Object.keys(r.ExposedPorts ?? {}).sort(),
    Labels: Object.fromEntries(Object.entries(labels).sort(([x], [y]) => (x < y ? -1 : 1))),
  };
}

/** buildah with its own storage under `dir` (vfs driver: no mounts to clean up). */
export interface BuildahStore {
  /**
   * `buildah bud` of `context` (its Dockerfile), tagged `tag`. `layers`: one layer per
   * step and a step cache (`--layers`); default: buildah's default, the steps' changes
   * committed as one layer on top of the base.
   */
  bud(
    context: string,
    tag: string,
    options?: {
      buildArgs?: Readonly<Record<string, string>>;
      layers?: boolean;
      noCache?: boolean;
    },
  ): Promise<void>;
  /** `buildah pull` of `ref` from a plain-HTTP registry. */
  pull(ref: string): Promise<void>;
  /** `buildah push tag oci:layout:ref`. */
  pushOci(tag: string, layout: string, ref: string): Promise<void>;
}

/**
 * buildah as a baseline: storage (`--root`, `--runroot`) under `dir`, RUN under chroot
 * isolation, base images from a plain-HTTP registry, OCI image format.
 */
export function buildahStore(dir: string): BuildahStore {
  const global = [
    '--root',
    path.join(dir, 'root'),
    '--runroot',
    path.join(dir, 'runroot'),
    '--storage-driver',
    'vfs',
  ];
  return {
    async bud(context, tag, options = {}) {
      const args = [...global, 'bud', '--format', 'oci', '--tls-verify=false'];
      args.push('--isolation', 'chroot', `--layers=${options.layers === true}`, '-t', tag);
      if (options.noCache === true) args.push('--no-cache');
      for (const [k, v] of Object.entries(options.buildArgs ?? {}))
        args.push('--build-arg', `${k}=${v}`);
      await run('buildah', [...args, context]);
    },
    async pull(ref) {
      await run('buildah', [...global, 'pull', '--quiet', '--tls-verify=false', ref]);
    },
    async pushOci(tag, layout, ref) {
      await run('buildah', [...global, 'push', '--quiet', tag, `oci:${layout}:${ref}`]);
    },
  };
}
