// The `url` and `path` kernel sources with real Debian kernel files: the cloud
// kernel .deb (fetched once with apt-get download) is served over HTTP on
// 127.0.0.1 for `url`, and unpacked into a host-style /boot + /lib/modules tree
// for `path`. A wrong sha256 must fail clearly and leave nothing behind.
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isVesselError } from '../../src/core/errors.js';
import { run } from '../../src/core/process.js';
import {
  GUEST_MODULES,
  listKernels,
  pullKernel,
  type CatalogEntry,
  type Kernel,
} from '../../src/kernels/index.js';
import { sha256File } from '../../src/kernels/pull.js';
import { resolveAptPackage } from '../../src/kernels/source.js';

const ZERO_SHA = '0'.repeat(64);

/** Every file below `dir` with its size and mtime (to prove a tree was not written). */
async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath, e.name);
    const st = await fs.lstat(p);
    out.push(`${path.relative(dir, p)} ${st.size} ${st.mtimeMs}`);
  }
  return out.sort();
}

describe('kernel sources: url and path (real Debian kernel files)', () => {
  let work: string;
  let dataDir: string;
  let deb: string;
  let debSha: string;
  let version: string;
  let server: http.Server;
  let base: string;
  const requests: string[] = [];
  let skipReason: string | undefined;

  const staging = (): Promise<string[]> =>
    fs.readdir(path.join(dataDir, 'kernels', '.staging')).catch(() => []);
  const entry = (name: string, source: CatalogEntry['source']): CatalogEntry[] => [
    { name, description: 'test', source, modules: GUEST_MODULES },
  ];

  before(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-ksrc-'));
    dataDir = path.join(work, 'data');
    try {
      const pkg = await resolveAptPackage('linux-image-cloud-amd64');
      await run('apt-get', ['download', '-q', pkg], { cwd: work, timeoutMs: 10 * 60_000 });
      const file = (await fs.readdir(work)).find((f) => f.endsWith('.deb'));
      assert.ok(file, `apt-get download ${pkg} left a .deb`);
      deb = path.join(work, file);
      version = pkg.replace(/^linux-image-/, '');
    } catch (err) {
      if (isVesselError(err, 'tool_missing') || isVesselError(err, 'tool_failed')) {
        skipReason = `cannot download the kernel package here (${(err as Error).message})`;
        return;
      }
      throw err;
    }
    debSha = await sha256File(deb);
    server = http.createServer((req, res) => {
      requests.push(req.url ?? '');
      if (req.url === '/kernel.deb') {
        createReadStream(deb).pipe(res);
      } else {
        res.writeHead(404).end('not here');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await fs.rm(work, { recursive: true, force: true });
  });

  let fromUrl: Kernel | undefined;

  test('url: downloads the .deb, checks its sha256, selects the modules and publishes', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const url = `${base}/kernel.deb`;
    const before = requests.length;
    const k = await pullKernel('from-url', {
      dataDir,
      catalog: entry('from-url', { type: 'url', url, sha256: debSha }),
    });
    fromUrl = k;
    assert.equal(requests.length - before, 1, 'one download');
    assert.equal(k.version, version);
    assert.equal(k.info.source_type, 'url');
    assert.equal(k.info.package, url);
    assert.ok((await fs.stat(k.vmlinuz)).size > 5_000_000, 'a real kernel image');
    assert.equal(k.info.sha256, await sha256File(k.vmlinuz));
    for (const m of ['virtio_blk.ko', 'erofs.ko', 'button.ko', 'evdev.ko']) {
      assert.ok(k.moduleOrder.includes(m), `${m} selected`);
    }
    assert.deepEqual(await staging(), [], 'no staging leftovers');
  });

  test('url: a wrong sha256 fails with digest_mismatch and installs nothing', async (t) => {
    if (skipReason) return t.skip(skipReason);
    const url = `${base}/kernel.deb`;
    const before = requests.length;
    await assert.rejects(
      pullKernel('bad-sha', {
        dataDir,
        catalog: entry('bad-sha', { type: 'url', url, sha256: ZERO_SHA }),
      }),
      (err) => {
        assert.ok(isVesselError(err, 'digest_mismatch'), String(err));
        assert.equal(err.message, `kernel ${url} has sha256 ${debSha}, expected ${ZERO_SHA}`);
        return true;
      },
    );
    assert.equal(requests.length - before, 1, 'the file was downloaded (and thrown away)');
    await assert.rejects(fs.access(path.join(dataDir, 'kernels', 'bad-sha')));
    assert.deepEqual(await staging(), [], 'the download and work dir are gone');
    assert.ok(!(await listKernels({ dataDir })).some((k) => k.name === 'bad-sha'));
  });

  test('url: a missing file and a malformed sha256 are clear errors', async (t) => {
    if (skipReason) return t.skip(skipReason);
    await assert.rejects(
      pullKernel('missing', {
        dataDir,
        catalog: entry('missing', { type: 'url', url: `${base}/nope.deb`, sha256: debSha }),
      }),
      (err) => {
        assert.ok(isVesselError(err, 'not_found'), String(err));
        assert.equal(err.message, `downloading kernel ${base}/nope.deb: HTTP 404`);
        return true;
      },
    );
    const before = requests.length;
    await assert.rejects(
      pullKernel('short-sha', {
        dataDir,
        catalog: entry('short-sha', { type: 'url', url: `${base}/kernel.deb`, sha256: 'abc' }),
      }),
      (err) => isVesselError(err, 'invalid_argument') && /"abc" is not 64 hex/.test(err.message),
    );
    assert.equal(requests.length, before, 'nothing was downloaded for a malformed sha256');
    assert.deepEqual(await staging(), []);
  });

  test('path: a host-style /boot + /lib/modules tree is used in place and never written to', async (t) => {
    if (skipReason) return t.skip(skipReason);
    assert.ok(fromUrl, 'the url test ran first');
    const host = path.join(work, 'host');
    await run('dpkg-deb', ['-x', deb, host]);
    const modulesDir = path.join(host, 'lib', 'modules', version);
    const vmlinuz = path.join(host, 'boot', `vmlinuz-${version}`);
    const beforeTree = await snapshot(modulesDir);
    const k = await pullKernel('from-path', {
      dataDir,
      catalog: entry('from-path', { type: 'path', vmlinuz, modules_dir: modulesDir }),
    });
    assert.equal(k.version, version);
    assert.equal(k.info.source_type, 'path');
    assert.equal(k.info.package, undefined);
    assert.equal(k.info.sha256, fromUrl.info.sha256, 'the same kernel image as the .deb');
    assert.deepEqual(k.moduleOrder, fromUrl.moduleOrder, 'the same module selection and order');
    assert.deepEqual(await snapshot(modulesDir), beforeTree, 'the source tree is untouched');
    await assert.rejects(fs.access(path.join(modulesDir, 'modules.dep')));
    assert.deepEqual((await listKernels({ dataDir })).map((x) => x.name).sort(), [
      'from-path',
      'from-url',
    ]);

    await assert.rejects(
      pullKernel('gone', {
        dataDir,
        catalog: entry('gone', {
          type: 'path',
          vmlinuz: path.join(host, 'boot', 'vmlinuz-none'),
          modules_dir: modulesDir,
        }),
      }),
      (err) =>
        isVesselError(err, 'not_found') &&
        err.message ===
          `kernel source path ${path.join(host, 'boot', 'vmlinuz-none')} is not readable`,
    );
    assert.deepEqual(await staging(), []);
  });
});
