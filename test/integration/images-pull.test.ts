// Image pipeline against a real registry process: pull → verify → unpack → erofs/ext4.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isVesselError } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import {
  busyboxImage,
  layoutDescriptor,
  pushLayout,
  writeMultiArchLayout,
  writeOciLayout,
  type ImageSpec,
} from '../helpers/oci-builder.js';
import { missingToolReason } from '../helpers/prereqs.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import {
  withDisk,
  makeImageEnv,
  metricValue,
  shimTool,
  type ImageEnv,
} from '../helpers/image-env.js';

const skip = await missingToolReason(
  ['docker-registry', 'skopeo', 'mkfs.erofs', 'fsck.erofs', 'busybox'],
  'docker-registry skopeo erofs-utils busybox-static',
);

/** A two-layer image whose second layer deletes and makes opaque things of the first. */
function whiteoutImage(): ImageSpec {
  return {
    layers: [
      [
        { path: 'etc/', type: 'dir' },
        { path: 'etc/keep', content: 'keep' },
        { path: 'etc/gone', content: 'deleted by a whiteout' },
        { path: 'data/', type: 'dir' },
        { path: 'data/old-a', content: 'a' },
        { path: 'data/old-b', content: 'b' },
        { path: 'olddir/', type: 'dir' },
        { path: 'olddir/x', content: 'x' },
        { path: 'bin/', type: 'dir' },
        { path: 'bin/tool', content: '#!/bin/sh\necho hi\n', mode: 0o4755 },
      ],
      [
        { path: 'etc/.wh.gone', content: '' },
        { path: '.wh.olddir', content: '' },
        { path: 'data/', type: 'dir' },
        { path: 'data/new', content: 'new' },
        { path: 'data/.wh..wh..opq', content: '' },
        { path: 'etc/added', content: 'added in layer 2' },
      ],
    ],
    config: {
      Entrypoint: ['/bin/tool'],
      Cmd: ['--help'],
      Env: ['PATH=/bin', 'A=1=2'],
      WorkingDir: '/data',
      User: '1000:1000',
      ExposedPorts: { '80/tcp': {} },
    },
  };
}

describe('image pull from a real registry', { skip }, () => {
  let registry: TestRegistry;
  let env: ImageEnv;
  let layout: string;

  before(async () => {
    registry = await startRegistry();
    env = await makeImageEnv();
    layout = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-layout-'));
    await writeOciLayout(layout, [
      { ref: 'whiteout', image: whiteoutImage() },
      { ref: 'busybox', image: await busyboxImage() },
      {
        ref: 'shares-layer',
        image: { layers: [(await busyboxImage()).layers[0]!, [{ path: 'extra', content: 'x' }]] },
      },
    ]);
    await pushLayout(layout, 'whiteout', registry.host, 'test/whiteout:1');
    await pushLayout(layout, 'busybox', registry.host, 'test/busybox:oci');
    await pushLayout(layout, 'busybox', registry.host, 'test/busybox:docker', { format: 'v2s2' });
    await pushLayout(layout, 'shares-layer', registry.host, 'test/shares:1');
  });

  after(async () => {
    await env?.close();
    await registry?.stop();
    await fs.rm(layout, { recursive: true, force: true });
  });

  test('multi-layer image: whiteouts, opaque dirs, modes and metadata reach the erofs disk', async () => {
    const name = `${registry.host}/test/whiteout:1`;
    const started = env.manager.pull(name);
    assert.equal(started.status, 'pending');
    const img = await env.manager.waitForReady(name, { timeoutMs: 60_000 });
    assert.equal(img.status, 'ready');
    assert.equal(img.format, 'erofs');
    assert.match(img.digest ?? '', /^sha256:[a-f0-9]{64}$/);
    assert.deepEqual(img.entrypoint, ['/bin/tool']);
    assert.deepEqual(img.cmd, ['--help']);
    assert.deepEqual(img.env, { PATH: '/bin', A: '1=2' });
    assert.equal(img.working_dir, '/data');
    assert.equal(img.user, '1000:1000');
    assert.deepEqual(img.exposed_ports, ['80/tcp']);
    const disk = env.paths.imageDisk(img.digest!.slice(7), 'erofs');
    await withDisk(disk, 'erofs', async (root) => {
      assert.equal(await fs.readFile(path.join(root, 'etc/keep'), 'utf8'), 'keep');
      assert.equal(await fs.readFile(path.join(root, 'etc/added'), 'utf8'), 'added in layer 2');
      await assert.rejects(fs.access(path.join(root, 'etc/gone')), 'whiteout removed etc/gone');
      await assert.rejects(fs.access(path.join(root, 'olddir')), 'whiteout removed olddir');
      assert.deepEqual(
        (await fs.readdir(path.join(root, 'data'))).sort(),
        ['new'],
        'opaque dir hides lower entries',
      );
      assert.equal((await fs.stat(path.join(root, 'bin/tool'))).mode & 0o7777, 0o4755);
    });
  });

  test('OCI and Docker schema2 manifests of the same image both pull', async () => {
    const oci = await env.manager.waitForReady(
      env.manager.pull(`${registry.host}/test/busybox:oci`).name,
    );
    const docker = await env.manager.waitForReady(
      env.manager.pull(`${registry.host}/test/busybox:docker`).name,
    );
    assert.equal(oci.status, 'ready');
    assert.equal(docker.status, 'ready');
    assert.notEqual(
      oci.digest,
      docker.digest,
      'different manifest media types have different digests',
    );
    assert.deepEqual(oci.cmd, ['/bin/sh']);
    assert.deepEqual(docker.cmd, ['/bin/sh']);
  });

  test('digest pinning: repo@sha256 pulls exactly that manifest; an unknown digest fails clearly', async () => {
    const tagged = env.manager.get(`${registry.host}/test/busybox:oci`);
    const pinned = `${registry.host}/test/busybox@${tagged.digest!}`;
    const img = await env.manager.waitForReady(env.manager.pull(pinned).name);
    assert.equal(img.digest, tagged.digest);
    const bogus = `${registry.host}/test/busybox@sha256:${'0'.repeat(64)}`;
    await assert.rejects(env.manager.waitForReady(env.manager.pull(bogus).name), (err) => {
      assert.ok(isVesselError(err, 'manifest_unknown'), 'a missing image stays not found');
      assert.equal(err.message, `image "${bogus}" not found in registry ${registry.host}`);
      return true;
    });
    assert.equal(env.manager.get(bogus).error_code, 'manifest_unknown');
  });

  test('a missing repository fails with a clear not-found error', async () => {
    const name = `${registry.host}/nope/nothing:1`;
    await assert.rejects(env.manager.waitForReady(env.manager.pull(name).name), (err) => {
      assert.ok(isVesselError(err, 'manifest_unknown'));
      assert.equal(err.kind, 'NotFound');
      assert.equal(err.message, `image "${name}" not found in registry ${registry.host}`);
      return true;
    });
    const rec = env.manager.get(name);
    assert.equal(rec.status, 'failed');
    assert.equal(rec.error_code, 'manifest_unknown');
  });

  test('a warm re-pull does not download or convert again', async () => {
    const name = `${registry.host}/test/busybox:oci`;
    const bytesBefore = await metricValue(env.metrics, 'vessel_image_blob_bytes_total');
    const mkfs = await shimTool('mkfs.erofs');
    try {
      const t0 = performance.now();
      const img = await env.manager.waitForReady(env.manager.pull(name).name);
      const ms = performance.now() - t0;
      assert.equal(img.status, 'ready');
      assert.equal(await mkfs.count(), 0, 'no conversion on a warm re-pull');
      assert.ok(ms < 1000, `warm re-pull took ${ms.toFixed(1)} ms`);
    } finally {
      await mkfs.restore();
    }
    assert.equal(await metricValue(env.metrics, 'vessel_image_blob_bytes_total'), bytesBefore);
  });

  test('two names for one digest pulled at once convert once; one layer shared by two images downloads once', async () => {
    const mkfs = await shimTool('mkfs.erofs');
    try {
      const fresh = await makeImageEnv();
      try {
        const a = fresh.manager.pull(`${registry.host}/test/busybox:oci`);
        const b = fresh.manager.pull(
          `${registry.host}/test/busybox@${env.manager.get(`${registry.host}/test/busybox:oci`).digest!}`,
        );
        const again = fresh.manager.pull(`${registry.host}/test/busybox:oci`);
        assert.equal(again.name, a.name, 'pulling a name already being pulled joins that pull');
        const [ra, rb] = await Promise.all([
          fresh.manager.waitForReady(a.name),
          fresh.manager.waitForReady(b.name),
        ]);
        assert.equal(ra.digest, rb.digest);
        assert.equal(await mkfs.count(), 1, 'one conversion for one digest');
        const before = await metricValue(fresh.metrics, 'vessel_image_blob_bytes_total');
        const s = await fresh.manager.waitForReady(
          fresh.manager.pull(`${registry.host}/test/shares:1`).name,
        );
        assert.equal(s.layers[0], ra.layers[0], 'the base layer is the same blob');
        const own = (await fs.stat(fresh.paths.blob('sha256', s.layers[1]!.slice(7)))).size;
        assert.equal(
          (await metricValue(fresh.metrics, 'vessel_image_blob_bytes_total')) - before,
          own,
          'only the layer the first image lacked was downloaded',
        );
      } finally {
        await fresh.close();
      }
    } finally {
      await mkfs.restore();
    }
  });

  test('a corrupted blob fails the pull with a digest mismatch, and a waiter subscribed before gets that cause', async () => {
    const corruptLayout = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-layout-'));
    try {
      await writeOciLayout(corruptLayout, [
        { ref: 'c', image: { layers: [[{ path: 'file', content: 'original content' }]] } },
      ]);
      await pushLayout(corruptLayout, 'c', registry.host, 'test/corrupt:1');
      const manifest = JSON.parse(
        await fs.readFile(
          path.join(
            corruptLayout,
            'blobs/sha256',
            (await layoutDescriptor(corruptLayout, 'c')).digest.slice(7),
          ),
          'utf8',
        ),
      ) as { layers: { digest: string }[] };
      const layer = manifest.layers[0]!.digest;
      const data = registry.blobDataPath(layer);
      const bytes = await fs.readFile(data);
      bytes.writeUInt8(bytes.readUInt8(bytes.length - 1) ^ 0xff, bytes.length - 1);
      await fs.writeFile(data, bytes);

      const name = `${registry.host}/test/corrupt:1`;
      const waiterEnv = await makeImageEnv();
      try {
        const img = waiterEnv.manager.pull(name);
        const waiting = waiterEnv.manager.waitForReady(img.name);
        await assert.rejects(waiting, (err) => {
          assert.ok(isVesselError(err, 'image_failed'));
          assert.match(err.message, new RegExp(`blob ${layer} failed verification`));
          return true;
        });
        const rec = waiterEnv.manager.get(name);
        assert.equal(rec.error_code, 'digest_mismatch');
        assert.deepEqual(
          await fs.readdir(waiterEnv.paths.blobIncomingDir),
          [],
          'no partial blob left behind',
        );
        await assert.rejects(fs.access(waiterEnv.paths.blob('sha256', layer.slice(7))));
      } finally {
        await waiterEnv.close();
      }
    } finally {
      await fs.rm(corruptLayout, { recursive: true, force: true });
    }
  });

  test('a conversion failure reaches the waiter with the tool’s own message', async () => {
    const mkfs = await shimTool(
      'mkfs.erofs',
      'echo "mkfs.erofs: simulated write error on the output device" >&2; exit 1',
    );
    const failing = await makeImageEnv({ format: 'erofs' });
    try {
      const img = failing.manager.pull(`${registry.host}/test/whiteout:1`);
      await assert.rejects(
        failing.manager.waitForReady(img.name),
        /simulated write error on the output device/,
      );
      assert.equal(failing.manager.get(img.name).error_code, 'tool_failed');
      assert.deepEqual(await fs.readdir(failing.paths.imageStagingDir), [], 'staging cleaned up');
    } finally {
      await failing.close();
      await mkfs.restore();
    }
  });

  test('images.format=ext4 builds an ext4 disk with the same content', async () => {
    const ext4 = await makeImageEnv({ format: 'ext4' });
    try {
      const img = await ext4.manager.waitForReady(
        ext4.manager.pull(`${registry.host}/test/whiteout:1`).name,
      );
      assert.equal(img.format, 'ext4');
      await withDisk(ext4.paths.imageDisk(img.digest!.slice(7), 'ext4'), 'ext4', async (root) => {
        assert.equal(await fs.readFile(path.join(root, 'etc/added'), 'utf8'), 'added in layer 2');
        await assert.rejects(fs.access(path.join(root, 'etc/gone')));
        assert.equal((await fs.stat(path.join(root, 'bin/tool'))).mode & 0o7777, 0o4755);
      });
    } finally {
      await ext4.close();
    }
  });

  test('delete keeps a disk another name uses; gc removes what nothing references', async () => {
    const byTag = env.manager.get(`${registry.host}/test/busybox:oci`);
    const byDigest = `${registry.host}/test/busybox@${byTag.digest!}`;
    const diskDir = env.paths.imageDir(byTag.digest!.slice(7));
    await env.manager.delete(byTag.name);
    await fs.access(diskDir);
    await env.manager.delete(byDigest);
    await assert.rejects(fs.access(diskDir), 'the last reference takes the disk with it');
    await assert.rejects(env.manager.delete(byDigest), (err) =>
      isVesselError(err, 'image_not_found'),
    );
    const whiteout = env.manager.get(`${registry.host}/test/whiteout:1`);
    const res = await env.manager.gc();
    assert.ok(
      res.removed_blobs > 0,
      'busybox blobs only docker-format still uses are kept, the rest go',
    );
    for (const l of whiteout.layers) await fs.access(env.paths.blob('sha256', l.slice(7)));
    const docker = env.manager.get(`${registry.host}/test/busybox:docker`);
    for (const l of docker.layers) await fs.access(env.paths.blob('sha256', l.slice(7)));
  });
});

describe('multi-arch index and authenticated registries', { skip }, () => {
  let env: ImageEnv;
  before(async () => {
    env = await makeImageEnv();
  });
  after(async () => env?.close());

  test('an index resolves to the host platform', async () => {
    const registry = await startRegistry();
    const layout = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-layout-'));
    try {
      await writeMultiArchLayout(layout, 'multi', {
        amd64: { layers: [[{ path: 'arch', content: 'amd64' }]] },
        arm64: { layers: [[{ path: 'arch', content: 'arm64' }]] },
      });
      await pushLayout(layout, 'multi', registry.host, 'test/multi:1', { all: true });
      const img = await env.manager.waitForReady(
        env.manager.pull(`${registry.host}/test/multi:1`).name,
      );
      const want = process.arch === 'arm64' ? 'arm64' : 'amd64';
      assert.equal(img.platform?.startsWith(`linux/${want}`), true);
      await withDisk(env.paths.imageDisk(img.digest!.slice(7), 'erofs'), 'erofs', async (root) => {
        assert.equal(await fs.readFile(path.join(root, 'arch'), 'utf8'), want);
      });
    } finally {
      await registry.stop();
      await fs.rm(layout, { recursive: true, force: true });
    }
  });

  test('basic auth: credentials file opens the registry; without it the pull fails as unauthorized', async () => {
    const creds = { username: 'vessel', password: 's3cret-pass' };
    const registry = await startRegistry({ basicAuth: creds });
    const layout = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-layout-'));
    try {
      await writeOciLayout(layout, [
        { ref: 'a', image: { layers: [[{ path: 'hello', content: 'auth' }]] } },
      ]);
      await pushLayout(layout, 'a', registry.host, 'private/app:1', { creds });
      const name = `${registry.host}/private/app:1`;
      await assert.rejects(
        env.manager.waitForReady(env.manager.pull(name).name),
        /denied access .*no credentials configured/,
      );
      assert.equal(env.manager.get(name).error_code, 'registry_unauthorized');
      const auth = Buffer.from(`${creds.username}:${creds.password}`).toString('base64');
      await fs.writeFile(
        env.paths.credentialsFile,
        JSON.stringify({ auths: { [registry.host]: { auth } } }),
      );
      const img = await env.manager.waitForReady(env.manager.pull(name).name);
      assert.equal(img.status, 'ready');
    } finally {
      await fs.rm(env.paths.credentialsFile, { force: true });
      await registry.stop();
      await fs.rm(layout, { recursive: true, force: true });
    }
  });

  test('bearer token challenge: the token service is asked, with credentials', async () => {
    const registry = await startRegistry({ token: { username: 'tok', password: 'tok-password' } });
    const layout = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-layout-'));
    try {
      await writeOciLayout(layout, [
        { ref: 't', image: { layers: [[{ path: 'hello', content: 'token' }]] } },
      ]);
      await pushLayout(layout, 't', registry.host, 'tok/app:1', {
        creds: { username: 'tok', password: 'tok-password' },
      });
      const auth = Buffer.from('tok:tok-password').toString('base64');
      await fs.writeFile(
        env.paths.credentialsFile,
        JSON.stringify({ auths: { [registry.host]: { auth } } }),
      );
      const before = registry.tokensIssued?.() ?? 0;
      const img = await env.manager.waitForReady(
        env.manager.pull(`${registry.host}/tok/app:1`).name,
      );
      assert.equal(img.status, 'ready');
      assert.ok((registry.tokensIssued?.() ?? 0) > before, 'a token was issued to Vessel');
    } finally {
      await fs.rm(env.paths.credentialsFile, { force: true });
      await registry.stop();
      await fs.rm(layout, { recursive: true, force: true });
    }
  });
});

describe(
  'disk full',
  { skip: skip || (process.getuid?.() !== 0 ? 'mounting a small tmpfs needs root' : false) },
  () => {
    test('running out of space fails the image with disk_full, not the daemon', async () => {
      const registry = await startRegistry();
      const layout = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-layout-'));
      const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-full-'));
      await run('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', dataDir]);
      let env: ImageEnv | undefined;
      try {
        const { randomBytes } = await import('node:crypto');
        await writeOciLayout(layout, [
          {
            ref: 'big',
            image: { layers: [[{ path: 'noise', content: randomBytes(8 * 1024 * 1024) }]] },
          },
          { ref: 'small', image: { layers: [[{ path: 'hello', content: 'fits' }]] } },
        ]);
        await pushLayout(layout, 'big', registry.host, 'full/big:1');
        await pushLayout(layout, 'small', registry.host, 'full/small:1');
        env = await makeImageEnv({}, dataDir);
        const big = env.manager.pull(`${registry.host}/full/big:1`);
        await assert.rejects(env.manager.waitForReady(big.name), /no space left on device/);
        assert.equal(env.manager.get(big.name).error_code, 'disk_full');
        const small = await env.manager.waitForReady(
          env.manager.pull(`${registry.host}/full/small:1`).name,
        );
        assert.equal(small.status, 'ready', 'the manager keeps working once space is back');
      } finally {
        await env?.close();
        await run('umount', [dataDir]);
        await fs.rm(dataDir, { recursive: true, force: true });
        await fs.rm(layout, { recursive: true, force: true });
        await registry.stop();
      }
    });
  },
);
