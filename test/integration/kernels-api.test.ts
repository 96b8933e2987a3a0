// `/kernels` through a real daemon (unix socket, typed client) and the real
// `vessel kernel` CLI: pull (real apt download), ls, rm, and rm refused while an
// instance record references the kernel. That record is inserted straight into
// the daemon's SQLite store (no VM is booted): the check is on records.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { VesselClient, type Kernel } from '../../src/client/index.js';
import { defaultConfig } from '../../src/core/config.js';
import { isVesselError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { Daemon } from '../../src/daemon/index.js';
import { InstancesRepo, openDatabase, type Db } from '../../src/store/index.js';
import { cli } from '../helpers/cli.js';

const KERNEL = 'debian-cloud-6.1';

/** A raw request over the unix socket (for bodies the typed client cannot send). */
function raw(
  socketPath: string,
  method: string,
  url: string,
  body?: string,
): Promise<{ status: number; code: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path: url,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            code: (JSON.parse(text) as { code: string }).code,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('kernels over the daemon API and the CLI', () => {
  let dir: string;
  let daemon: Daemon;
  let client: VesselClient;
  let db: Db;
  let env: Record<string, string>;
  let pulled: Kernel | undefined;
  let skipReason: string | undefined;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-kapi-'));
    daemon = new Daemon({ config: defaultConfig(dir), logger: silentLogger() });
    await daemon.start();
    client = new VesselClient({ socketPath: daemon.paths.socket });
    // A second connection to the daemon's store, as another process would open it.
    db = openDatabase(daemon.paths.database);
    env = { VESSEL_DATA_DIR: dir };
  });

  after(async () => {
    db?.close();
    await client?.close();
    await daemon?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('bad input is a clear 4xx before anything is pulled', async () => {
    assert.deepEqual(JSON.parse((await cli(['kernel', 'ls', '--json'], env)).stdout), []);
    const sock = daemon.paths.socket;
    assert.deepEqual(await raw(sock, 'POST', '/kernels', '{"nme": "x"}'), {
      status: 400,
      code: 'invalid_argument',
    });
    assert.deepEqual(await raw(sock, 'POST', '/kernels', '{"name": "Bad Name"}'), {
      status: 400,
      code: 'invalid_argument',
    });
    assert.deepEqual(await raw(sock, 'DELETE', '/kernels/..%2Fetc'), {
      status: 400,
      code: 'invalid_argument',
    });
    assert.deepEqual(await raw(sock, 'DELETE', `/kernels/${KERNEL}?version=..%2F..`), {
      status: 400,
      code: 'invalid_argument',
    });
    await assert.rejects(client.pullKernel('no-such-kernel'), (err) => {
      assert.ok(isVesselError(err, 'not_found'));
      assert.match(err.message, /kernel "no-such-kernel" is not in the catalog \(known: /);
      return true;
    });
    const missing = await cli(['kernel', 'pull', 'no-such-kernel'], env);
    assert.equal(missing.code, 4, 'not in the catalog exits 4');
    assert.match(missing.stderr, /kernel "no-such-kernel" is not in the catalog/);
    const invalid = await cli(['kernel', 'pull', 'Bad'], env);
    assert.equal(invalid.code, 2, 'an invalid name exits 2');
    const notInstalled = await cli(['kernel', 'rm', KERNEL], env);
    assert.equal(notInstalled.code, 4);
    assert.match(notInstalled.stderr, /kernel "debian-cloud-6\.1" is not installed/);
  });

  test('vessel kernel pull (default kernel, real apt download), then ls as a table and as JSON', async (t) => {
    try {
      await fs.access('/usr/bin/apt-get');
    } catch {
      skipReason = `${KERNEL} comes from apt and /usr/bin/apt-get is missing`;
      return t.skip(skipReason);
    }
    const t0 = performance.now();
    const pull = await cli(['kernel', 'pull'], env);
    const ms = Math.round(performance.now() - t0);
    assert.equal(pull.code, 0, pull.stderr);
    assert.match(pull.stdout, /^debian-cloud-6\.1\/6\.1\.\d+-\d+-cloud-amd64 {2}apt {2}\d/);
    console.log(`# vessel kernel pull: ${ms} ms`);

    const ls = await cli(['kernel', 'ls'], env);
    assert.equal(ls.code, 0, ls.stderr);
    const [header, row, ...rest] = ls.stdout.trimEnd().split('\n');
    assert.match(header ?? '', /^NAME\s+VERSION\s+SOURCE\s+SIZE\s+USED BY\s+CREATED$/);
    assert.match(
      row ?? '',
      /^debian-cloud-6\.1\s+6\.1\.\S+\s+apt\s+\d+(\.\d)? MB\s+-\s+\d+[smhd] ago$/,
    );
    assert.deepEqual(rest, []);

    const listed = JSON.parse((await cli(['kernel', 'ls', '--json'], env)).stdout) as Kernel[];
    assert.equal(listed.length, 1);
    pulled = listed[0];
    assert.ok(pulled);
    assert.equal(pulled.name, KERNEL);
    assert.deepEqual(pulled.in_use_by, []);
    assert.match(pulled.package ?? '', /^linux-image-6\.1\.0-\d+-cloud-amd64$/);
    assert.ok(pulled.size_bytes > 5_000_000);
    assert.ok(pulled.modules.includes('virtio_blk.ko'));
    assert.deepEqual(await client.listKernels(), listed);
  });

  test('rm is refused while an instance record (inserted directly in the store, no VM) references the kernel', async (t) => {
    if (!pulled) return t.skip(skipReason ?? 'the pull test did not publish a kernel');
    const ref = `${pulled.name}/${pulled.version}`;
    const repo = new InstancesRepo(db);
    const now = new Date().toISOString();
    repo.insert({
      id: 'kapi-holder-0001',
      name: 'holds-kernel',
      image: 'docker.io/library/busybox:latest',
      image_digest: `sha256:${'1'.repeat(64)}`,
      state: 'Stopped',
      state_error: null,
      kernel: ref,
      hypervisor: 'qemu',
      accel: null,
      vcpus: 1,
      memory_mib: 256,
      disk_bytes: 1024 ** 3,
      guest: {},
      pid: null,
      sockets: null,
      exit_code: null,
      created_at: now,
      started_at: null,
      stopped_at: now,
      cid: null,
      source_id: null,
    });

    const listed = JSON.parse((await cli(['kernel', 'ls', '--json'], env)).stdout) as Kernel[];
    assert.deepEqual(listed[0]?.in_use_by, ['holds-kernel']);
    assert.match((await cli(['kernel', 'ls'], env)).stdout, /\sholds-kernel\s/);

    for (const arg of [KERNEL, ref]) {
      const rm = await cli(['kernel', 'rm', arg], env);
      assert.equal(rm.code, 5, `rm ${arg} is a conflict (exit 5): ${rm.stderr}`);
      assert.equal(
        rm.stderr,
        `error: kernel "${ref}" is used by instance "holds-kernel"; remove it first\n`,
      );
    }
    await assert.rejects(client.deleteKernel(KERNEL, pulled.version), (err) => {
      assert.ok(isVesselError(err, 'kernel_in_use'));
      assert.equal(err.details?.status, 409);
      assert.deepEqual(err.details?.instances, ['holds-kernel']);
      return true;
    });
    assert.equal((await client.listKernels()).length, 1, 'the kernel is still there');

    repo.delete('kapi-holder-0001');
    const rm = await cli(['kernel', 'rm', ref], env);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(rm.stdout, `removed ${ref}\n`);
    assert.deepEqual(await client.listKernels(), []);
    await assert.rejects(fs.access(path.join(dir, 'kernels', KERNEL, pulled.version)));
  });

  test('the OpenAPI document describes /kernels', async () => {
    const doc = (await client.openapi()) as {
      paths: Record<string, Record<string, { operationId?: string }>>;
      components: { schemas: Record<string, unknown> };
    };
    assert.equal(doc.paths['/kernels']?.get?.operationId, 'listKernels');
    assert.equal(doc.paths['/kernels']?.post?.operationId, 'pullKernel');
    assert.equal(doc.paths['/kernels/{name}']?.delete?.operationId, 'deleteKernel');
    assert.ok(doc.components.schemas.Kernel && doc.components.schemas.PullKernelRequest);
  });
});
