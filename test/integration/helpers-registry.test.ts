// Self-test of the image test helpers against a real docker-registry process.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import tar from 'tar-stream';
import {
  MEDIA_TYPES,
  busyboxImage,
  layoutDescriptor,
  makeLayer,
  pushLayout,
  sha256,
  skopeo,
  writeDockerArchive,
  writeMultiArchLayout,
  writeOciLayout,
  type ImageSpec,
} from '../helpers/oci-builder.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

const missing = ['/usr/bin/docker-registry', '/usr/bin/skopeo', '/usr/bin/busybox'].filter(
  (p) => !existsSync(p),
);
const skip = missing.length > 0 ? `needs ${missing.join(', ')}` : false;
const CREDS = { username: 'vessel', password: 's3cret pass' };

async function getManifest(
  registry: TestRegistry,
  /** `repo:tag` or `repo:sha256:...` */
  repoAndRef: string,
  accept: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; contentType: string | null; digest: string | null; body: Buffer }> {
  const colon = repoAndRef.indexOf(':');
  const [repo, ref] = [repoAndRef.slice(0, colon), repoAndRef.slice(colon + 1)];
  const res = await fetch(`${registry.url}/v2/${repo}/manifests/${ref}`, {
    headers: { accept, ...headers },
  });
  return {
    status: res.status,
    contentType: res.headers.get('content-type'),
    digest: res.headers.get('docker-content-digest'),
    body: Buffer.from(await res.arrayBuffer()),
  };
}

const basic = (u: string, p: string): string =>
  `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

void describe('test helpers against a real registry', { skip }, () => {
  let work: string;
  let layout: string;
  let busybox: ImageSpec;
  const registries: TestRegistry[] = [];
  const start = async (options?: Parameters<typeof startRegistry>[0]): Promise<TestRegistry> => {
    const registry = await startRegistry(options);
    registries.push(registry);
    return registry;
  };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'vessel-helpers-'));
    layout = join(work, 'layout');
    busybox = await busyboxImage();
    await writeOciLayout(layout, [{ ref: 'latest', image: busybox }]);
  });

  after(async () => {
    await Promise.all(registries.map((r) => r.stop()));
    for (const r of registries) assert.equal(existsSync(r.storageDir), false);
    await rm(work, { recursive: true, force: true });
  });

  void test('makeLayer writes hostile entries verbatim', async () => {
    const layer = await makeLayer(
      [
        { path: '../escape', content: 'x' },
        { path: '/etc/abs', content: 'y', mode: 0 },
        { path: 'dev/null', type: 'char', devmajor: 1, devminor: 3 },
        { path: 'link', type: 'link', linkname: '../escape' },
        { path: 'sym', type: 'symlink', linkname: '/etc/shadow' },
        { path: 'fifo', type: 'fifo' },
        { path: 'big', size: 70_000, mode: 0o4755, uid: 1000, gid: 1000 },
      ],
      { compression: 'none' },
    );
    assert.equal(layer.digest, layer.diffId);
    assert.equal(layer.mediaType, MEDIA_TYPES.ociLayerTar);
    const seen: tar.Header[] = [];
    const extract = tar.extract();
    const done = (async () => {
      for await (const entry of extract) {
        seen.push(entry.header);
        entry.resume();
      }
    })();
    extract.end(layer.blob);
    await done;
    assert.deepEqual(
      seen.map((h) => [h.name, h.type, h.linkname ?? null]),
      [
        ['../escape', 'file', null],
        ['/etc/abs', 'file', null],
        ['dev/null', 'character-device', null],
        ['link', 'link', '../escape'],
        ['sym', 'symlink', '/etc/shadow'],
        ['fifo', 'fifo', null],
        ['big', 'file', null],
      ],
    );
    assert.equal(seen[1]!.mode, 0);
    assert.equal(seen[2]!.devmajor, 1);
    assert.equal(seen[6]!.size, 70_000);
    assert.equal(seen[6]!.mode, 0o4755);
    assert.equal(seen[6]!.uid, 1000);

    const gz = await makeLayer([{ path: 'a', content: 'a' }]);
    assert.equal(gz.mediaType, MEDIA_TYPES.ociLayerGzip);
    assert.notEqual(gz.digest, gz.diffId);
    assert.equal(
      (await makeLayer([{ path: 'a', content: 'a' }])).digest,
      gz.digest,
      'reproducible',
    );
  });

  void test('pushes an OCI layout in OCI format and the manifest comes back unchanged', async () => {
    const registry = await start();
    await pushLayout(layout, 'latest', registry.host, 'test/busybox:oci', { format: 'oci' });
    const got = await getManifest(registry, 'test/busybox:oci', MEDIA_TYPES.ociManifest);
    assert.equal(got.status, 200);
    assert.equal(got.contentType, MEDIA_TYPES.ociManifest);
    assert.equal(got.digest, sha256(got.body));
    assert.equal(got.digest, (await layoutDescriptor(layout, 'latest')).digest);

    const manifest = JSON.parse(got.body.toString()) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    assert.equal(manifest.layers.length, 2);
    for (const digest of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      const data = await readFile(registry.blobDataPath(digest));
      assert.equal(`sha256:${createHash('sha256').update(data).digest('hex')}`, digest);
    }
    const config = JSON.parse(
      (await readFile(registry.blobDataPath(manifest.config.digest))).toString(),
    );
    assert.deepEqual(config.config.Cmd, ['/bin/sh']);
    assert.equal(config.rootfs.diff_ids.length, 2);
  });

  void test('pushes in Docker v2 schema 2 format', async () => {
    const registry = await start();
    await pushLayout(layout, 'latest', registry.host, 'test/busybox:v2s2', { format: 'v2s2' });
    const got = await getManifest(registry, 'test/busybox:v2s2', MEDIA_TYPES.dockerManifest);
    assert.equal(got.status, 200);
    assert.equal(got.contentType, MEDIA_TYPES.dockerManifest);
    assert.equal(got.digest, sha256(got.body));
  });

  void test('a multi-arch layout pushed with --all is an index with both platforms', async () => {
    const registry = await start();
    const dir = join(work, 'multiarch');
    await writeMultiArchLayout(dir, 'multi', {
      amd64: { layers: [[{ path: 'arch', content: 'amd64\n' }]], config: { Cmd: ['/amd64'] } },
      arm64: { layers: [[{ path: 'arch', content: 'arm64\n' }]], config: { Cmd: ['/arm64'] } },
    });
    await pushLayout(dir, 'multi', registry.host, 'test/multi:1', { all: true });
    const got = await getManifest(
      registry,
      'test/multi:1',
      `${MEDIA_TYPES.ociIndex}, ${MEDIA_TYPES.ociManifest}`,
    );
    assert.equal(got.status, 200);
    assert.equal(got.contentType, MEDIA_TYPES.ociIndex);
    assert.equal(got.digest, sha256(got.body));
    const index = JSON.parse(got.body.toString()) as {
      manifests: { digest: string; platform: { architecture: string; os: string } }[];
    };
    assert.deepEqual(
      index.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`).sort(),
      ['linux/amd64', 'linux/arm64'],
    );
    for (const m of index.manifests) {
      const child = await getManifest(registry, `test/multi:${m.digest}`, MEDIA_TYPES.ociManifest);
      assert.equal(child.status, 200);
    }
  });

  void test('writeOciLayout with index "multiarch" wraps each image in an index', async () => {
    const dir = join(work, 'wrapped');
    await writeOciLayout(dir, [{ ref: 'w', image: busybox }], { index: 'multiarch' });
    assert.equal((await layoutDescriptor(dir, 'w')).mediaType, MEDIA_TYPES.ociIndex);
    const raw = await skopeo(['--insecure-policy', 'inspect', '--raw', `oci:${dir}:w`]);
    assert.equal((JSON.parse(raw) as { manifests: unknown[] }).manifests.length, 1);
  });

  void test('basic auth: 401 without credentials, push and pull with them', async () => {
    const registry = await start({ basicAuth: CREDS });
    const anon = await fetch(`${registry.url}/v2/`);
    assert.equal(anon.status, 401);
    assert.match(anon.headers.get('www-authenticate') ?? '', /^Basic /);
    await assert.rejects(pushLayout(layout, 'latest', registry.host, 'test/auth:1'));
    await pushLayout(layout, 'latest', registry.host, 'test/auth:1', { creds: CREDS });
    const authorization = basic(CREDS.username, CREDS.password);
    const got = await getManifest(registry, 'test/auth:1', MEDIA_TYPES.ociManifest, {
      authorization,
    });
    assert.equal(got.status, 200);
    const wrong = await getManifest(registry, 'test/auth:1', MEDIA_TYPES.ociManifest, {
      authorization: basic(CREDS.username, 'nope'),
    });
    assert.equal(wrong.status, 401);
  });

  void test('token auth: Bearer challenge, skopeo push with credentials, pull with a token', async () => {
    const registry = await start({ token: { ...CREDS, anonymousPull: true } });
    const anon = await fetch(`${registry.url}/v2/`);
    assert.equal(anon.status, 401);
    assert.match(
      anon.headers.get('www-authenticate') ?? '',
      /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/token"/,
    );
    await assert.rejects(pushLayout(layout, 'latest', registry.host, 'test/token:1'));
    await pushLayout(layout, 'latest', registry.host, 'test/token:1', { creds: CREDS });
    assert.ok(registry.tokensIssued!() > 0);

    const tokenUrl = new URL(registry.tokenRealm!);
    tokenUrl.searchParams.set('service', 'vessel-test-registry');
    tokenUrl.searchParams.set('scope', 'repository:test/token:pull');
    const tokenRes = await fetch(tokenUrl);
    assert.equal(tokenRes.status, 200);
    const { token } = (await tokenRes.json()) as { token: string };
    const got = await getManifest(registry, 'test/token:1', MEDIA_TYPES.ociManifest, {
      authorization: `Bearer ${token}`,
    });
    assert.equal(got.status, 200);
    const bad = await fetch(tokenUrl, {
      headers: { authorization: basic(CREDS.username, 'nope') },
    });
    assert.equal(bad.status, 401);
  });

  void test('writeDockerArchive output is readable by skopeo', async () => {
    const registry = await start();
    const file = join(work, 'busybox.tar');
    await writeDockerArchive(file, busybox, 'test/busybox:saved');
    const inspected = JSON.parse(
      await skopeo(['--insecure-policy', 'inspect', '--config', `docker-archive:${file}`]),
    ) as { config: { Cmd: string[] }; rootfs: { diff_ids: string[] } };
    assert.deepEqual(inspected.config.Cmd, ['/bin/sh']);
    assert.equal(inspected.rootfs.diff_ids.length, 2);
    await skopeo([
      '--insecure-policy',
      'copy',
      '--quiet',
      '--dest-tls-verify=false',
      '--dest-no-creds',
      `docker-archive:${file}`,
      `docker://${registry.host}/test/saved:1`,
    ]);
    const got = await getManifest(registry, 'test/saved:1', MEDIA_TYPES.dockerManifest);
    assert.equal(got.status, 200);
  });
});
