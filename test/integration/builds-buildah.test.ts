// Vessel's builds against buildah (issue 12, "Comparison"): each Dockerfile is built with
// `vessel build` and with `buildah bud` (same context, same base image from the same local
// registry), both images are unpacked by umoci, and the two results are compared: every
// path's type, mode (setuid/setgid/sticky too), owner, size, content hash, symlink target
// and hard-link group (mtimes are not compared), and the config a Dockerfile sets
// (Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts, Labels, platform). Every
// difference is either absent or listed below with its reason. RUN steps boot builder
// microVMs without a network address (the default: --network none).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import type { VesselClient } from '../../src/client/index.js';
import {
  buildahStore,
  configFields,
  diffTrees,
  layoutConfig,
  layoutFromVesselStore,
  unpackLayout,
  type BuildahStore,
  type TreeDiff,
} from '../helpers/image-tree.js';
import { pushBusybox } from '../helpers/oci-builder.js';
import { MULTISTAGE_DOCKERFILE, writeMultistageContext } from '../helpers/build-fixtures.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const execFileAsync = promisify(execFile);

const why =
  (await vmSkipReason(['/usr/bin/skopeo', '/usr/bin/buildah', '/usr/bin/umoci', '/usr/bin/tar'])) ||
  (process.getuid?.() === 0 ? false : 'needs root: umoci unpack keeps file owners only as root');

/**
 * Labels buildah writes into every image on its own, not asked for by the Dockerfile:
 * `io.buildah.version` (the buildah release that built it).
 */
const TOOL_LABELS = ['io.buildah.version'];

/** A difference the two builds are expected to show, and why (an entry no longer seen fails). */
interface Known {
  readonly diff: string;
  readonly why: string;
}

/** Several differences with one explanation. */
function known(why: string, ...diffs: string[]): Known[] {
  return diffs.map((diff) => ({ diff, why }));
}

/**
 * buildah runs RUN under chroot isolation with bind mounts for /etc/hosts and
 * /etc/resolv.conf and a /run directory; it creates the mount targets in the rootfs when
 * the base lacks them and they stay in the image. Vessel's guest writes its own
 * /etc/hosts, /etc/resolv.conf and /etc/hostname at boot and leaves them out of every
 * RUN layer (engine.ts DIFF_EXCLUDES, Docker's rule), and mounts nothing else.
 */
const BUILDAH_RUN_MOUNTS: readonly Known[] = known(
  "buildah's mount targets for RUN",
  '/etc/hosts presence: vessel=- buildah=file 0755 0:0 0 bytes',
  '/etc/resolv.conf presence: vessel=- buildah=file 0755 0:0 0 bytes',
  '/run presence: vessel=- buildah=dir 0755 0:0',
);

const fmt = (d: TreeDiff): string => `${d.path} ${d.field}: vessel=${d.a} buildah=${d.b}`;

// ---- the Dockerfiles ----------------------------------------------------------------------

/** ADD of archives made by the system's tar (gzip and plain) and of binary files. */
const ADD = `ARG BASE
FROM \${BASE}
ADD bundle.tar.gz /opt/
ADD plain.tar /srv/plain/
ADD data.bin notes.txt.gz /srv/files/
COPY --chmod=600 data.bin /srv/copied.bin
`;

/**
 * RUN making hard links (also to a base file, and changing one name of a link made in an
 * earlier step), symlinks, setuid/setgid/sticky modes, directories emptied and made again
 * (opaque directories over earlier layers), in shell and exec form, as root and as a user
 * with no /etc/passwd entry; a WORKDIR a RUN uses, and one no step uses.
 */
const RUNS = `ARG BASE
FROM \${BASE}
RUN mkdir -p /data/keep /opt/gone/sub && echo one > /data/keep/a && ln /data/keep/a /data/keep/hard \\
 && ln -s ../keep/a /data/keep/soft && ln -s /nowhere /data/dangling \\
 && echo old > /opt/gone/x && echo old > /opt/gone/sub/z \\
 && cp /bin/busybox /data/suid && chmod 4755 /data/suid && chmod 2750 /data/keep \\
 && mkdir -m 1777 /data/drop && echo two > /data/pair1 && ln /data/pair1 /data/pair2
RUN ["/bin/sh", "-c", "rm -rf /opt/gone && mkdir /opt/gone && echo new > /opt/gone/y && rm -r /home && mkdir -m 700 /home && touch /home/.keep"]
RUN ["/bin/busybox", "chown", "1000:1000", "/data/pair1"]
RUN ["/bin/busybox", "ln", "/bin/busybox", "/bin/bb-hard"]
USER 1000
WORKDIR /work/dir
RUN pwd > /tmp/pwd && id -u > /tmp/uid && id -g > /tmp/gid && touch /tmp/by-user && mkdir /tmp/user-dir
WORKDIR /srv/www
`;

interface Case {
  readonly name: string;
  readonly dockerfile: string;
  /** Files of the context besides the Dockerfile (written before the build). */
  readonly context: (ctx: string, scratch: string) => Promise<void>;
  readonly known: readonly Known[];
}

/** A tree with every kind of entry an archive carries, tarred by the system's tar. */
async function writeAddContext(ctx: string, scratch: string): Promise<void> {
  const tree = path.join(scratch, 'bundle');
  const put = async (rel: string, content: Buffer | string, mode: number): Promise<void> => {
    await fs.mkdir(path.dirname(path.join(tree, rel)), { recursive: true });
    await fs.writeFile(path.join(tree, rel), content);
    await fs.chmod(path.join(tree, rel), mode);
  };
  await put('app/bin/tool', '#!/bin/sh\necho tool\n', 0o4755);
  await put('app/conf/settings.ini', 'a=1\n', 0o640);
  await fs.link(path.join(tree, 'app/conf/settings.ini'), path.join(tree, 'app/conf/link.ini'));
  await fs.symlink('bin', path.join(tree, 'app/current'));
  await put('app/private/key', randomBytes(64), 0o600);
  await fs.chmod(path.join(tree, 'app/private'), 0o700);
  await fs.chown(path.join(tree, 'app/private'), 1234, 5678);
  await fs.chown(path.join(tree, 'app/private/key'), 1234, 5678);
  await fs.chown(path.join(tree, 'app/conf/settings.ini'), 1234, 5678);
  await fs.mkdir(path.join(tree, 'app/empty'), { mode: 0o755 });
  await put('app/data.bin', randomBytes(200_000), 0o644);
  await fs.chmod(tree, 0o750);
  await execFileAsync('tar', ['-czf', path.join(ctx, 'bundle.tar.gz'), '-C', tree, '.']);
  // Members named without their parent directories: the extractor has to make them.
  await execFileAsync('tar', [
    '-cf',
    path.join(ctx, 'plain.tar'),
    '-C',
    tree,
    'app/conf/settings.ini',
    'app/current',
  ]);
  await fs.writeFile(path.join(ctx, 'data.bin'), randomBytes(300_001));
  await fs.chmod(path.join(ctx, 'data.bin'), 0o640);
  // gzip but not a tar: ADD copies it as it is.
  await fs.writeFile(path.join(ctx, 'notes.txt.gz'), gzipSync('just notes\n'));
}

const CASES: readonly Case[] = [
  {
    name: 'multistage',
    dockerfile: MULTISTAGE_DOCKERFILE,
    context: writeMultistageContext,
    known: [...BUILDAH_RUN_MOUNTS],
  },
  {
    name: 'add',
    dockerfile: ADD,
    context: writeAddContext,
    known: known(
      "buildah applies the archive's `./` entry (the tarred directory, 0750) to the ADD " +
        'destination; Docker skips it (moby pkg/archive Unpack: `if fi.IsDir() && hdr.Name == ' +
        '"." { continue }`, after the builder made dest 0755) and so does Vessel',
      '/opt mode: vessel=0755 buildah=0750',
    ),
  },
  {
    name: 'runs',
    dockerfile: RUNS,
    context: () => Promise.resolve(),
    known: [
      ...known(
        'a hard link to a file of a lower layer: overlayfs copies /bin/busybox up on link(), ' +
          "so Vessel's RUN layer holds both names as one inode (as Docker's overlay2 does); " +
          "buildah's layer diff holds only the new name, as a separate copy",
        '/bin/bb-hard links: vessel=/bin/busybox buildah=',
        '/bin/busybox links: vessel=/bin/bb-hard buildah=',
      ),
      ...known(
        'chown of one name of a hard link made in an earlier layer: overlayfs (without ' +
          "index=on, like Docker's overlay2) copies up only that name, so the link breaks and " +
          "the other name keeps its owner; buildah's vfs storage copies the tree with its " +
          'links, and chown changes the one inode',
        '/data/pair1 links: vessel= buildah=/data/pair2',
        '/data/pair2 owner: vessel=0:0 buildah=1000:1000',
        '/data/pair2 links: vessel= buildah=/data/pair1',
      ),
      ...BUILDAH_RUN_MOUNTS,
    ],
  },
];

describe('builds: Vessel against buildah', { skip: why, timeout: 1_800_000 }, () => {
  let dir: string;
  let registry: TestRegistry;
  let d: SpawnedDaemon;
  let c: VesselClient;
  let buildah: BuildahStore;
  let base: string;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-buildah-it-'));
    await seedKernel(path.join(dir, 'data'));
    registry = await startRegistry();
    base = await pushBusybox(registry.host, dir);
    d = await startDaemon(path.join(dir, 'data'));
    c = d.client;
    buildah = buildahStore(path.join(dir, 'buildah'));
  });

  after(async () => {
    await d?.stop();
    await registry?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  for (const k of CASES) {
    test(`${k.name}: the same files and config as buildah's build`, async () => {
      const work = path.join(dir, k.name);
      const ctx = path.join(work, 'ctx');
      await fs.mkdir(path.join(work, 'scratch'), { recursive: true });
      await fs.mkdir(ctx, { recursive: true });
      await fs.writeFile(path.join(ctx, 'Dockerfile'), k.dockerfile);
      await k.context(ctx, path.join(work, 'scratch'));

      const tag = `cmp/${k.name}:1`;
      const r = await d.cli(['build', '-t', tag, '--build-arg', `BASE=${base}`, ctx], 900_000);
      assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
      const img = await c.getImage(tag);
      assert.ok(img.digest, 'the built image has a digest');
      const vesselLayout = path.join(work, 'vessel-oci');
      await layoutFromVesselStore(path.join(d.dataDir, 'blobs'), img.digest, vesselLayout, 'img');

      const btag = `localhost/cmp-${k.name}:1`;
      await buildah.bud(ctx, btag, { buildArgs: { BASE: base } });
      const buildahLayout = path.join(work, 'buildah-oci');
      await buildah.pushOci(btag, buildahLayout, 'img');

      const ours = await unpackLayout(vesselLayout, 'img', path.join(work, 'vessel-bundle'));
      const theirs = await unpackLayout(buildahLayout, 'img', path.join(work, 'buildah-bundle'));
      assert.ok(ours.size > 50, `the unpacked Vessel image has files (${ours.size})`);
      const seen = diffTrees(ours, theirs).map(fmt);
      const expected = k.known.map((x) => x.diff);
      const unexplained = seen.filter((x) => !expected.includes(x));
      const gone = k.known.filter((x) => !seen.includes(x.diff));
      assert.deepEqual(
        seen,
        expected,
        `differences with no explanation:\n${unexplained.join('\n') || '(none)'}\n` +
          `known differences not seen (a fixed bug? remove the entry):\n` +
          (gone.map((x) => `${x.diff} (${x.why})`).join('\n') || '(none)'),
      );

      const oc = configFields(await layoutConfig(vesselLayout, 'img'));
      const tc = configFields(await layoutConfig(buildahLayout, 'img'), TOOL_LABELS);
      assert.deepEqual(oc, tc);
    });
  }
});
