// hypeman-shaped requests through app.inject() against real managers on a temp store (no VM
// boots): durations, filters, PATCH, unsupported fields, the error body, stat and stats of an
// instance without a VM, capabilities and resources, image and ingress tags and rules.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import type { HostReport } from '../../../src/host/index.js';
import type { InstanceManager } from '../../../src/instances/index.js';
import { InstancesRepo, type InstanceRow } from '../../../src/store/index.js';
import { buildTestApp } from '../../helpers/test-app.js';
import { makeImageEnv, makeInstanceManager, type ImageEnv } from '../../helpers/image-env.js';

type Json = Record<string, unknown>;

const REPORT: HostReport = {
  resources: {
    cpus: 8,
    memory_bytes: 16 * 1024 ** 3,
    memory_free_bytes: 8 * 1024 ** 3,
    disk: { path: '/data', total_bytes: 100 * 1024 ** 3, free_bytes: 50 * 1024 ** 3 },
    arch: 'x86_64',
    kernel: '6.1.0-test',
  },
  accelerators: { kvm: { usable: false, reason: 'no /dev/kvm', device_present: false }, tcg: true },
  hypervisors: [{ name: 'qemu', path: '/usr/bin/qemu-system-x86_64', version: '7.2.0' }],
  checks: [
    { id: 'qemu', title: 'QEMU', status: 'ok', detail: '' },
    { id: 'qemu-microvm', title: 'microvm', status: 'ok', detail: '' },
  ],
};

function row(id: string, over: Partial<InstanceRow> = {}): InstanceRow {
  return {
    id,
    name: id,
    image: 'docker.io/library/busybox:latest',
    image_digest: `sha256:${'b'.repeat(64)}`,
    state: 'Stopped',
    state_error: null,
    kernel: 'debian-cloud-6.1/6.1.0-1',
    hypervisor: 'qemu',
    accel: 'tcg',
    vcpus: 2,
    memory_mib: 512,
    disk_bytes: 4 * 1024 ** 3,
    guest: { entrypoint: [], cmd: ['sh'], env: ['PATH=/bin', 'A=1'] },
    pid: null,
    sockets: null,
    exit_code: null,
    created_at: new Date().toISOString(),
    started_at: null,
    stopped_at: null,
    cid: null,
    source_id: null,
    ...over,
  };
}

async function freePort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('hypeman API shapes through inject', () => {
  let env: ImageEnv;
  let app: FastifyInstance;
  let instances: InstanceManager;
  let repo: InstancesRepo;
  let ingressPort: number;

  before(async () => {
    env = await makeImageEnv();
    instances = makeInstanceManager(env);
    repo = new InstancesRepo(env.db);
    ingressPort = await freePort();
    app = await buildTestApp(env, {
      instances: instances,
      version: '1.2.3-test',
      probeHost: () => Promise.resolve(REPORT),
    });
    repo.insert(row('web-a', { tags: { team: 'web', env: 'dev' } }));
    repo.insert(row('web-b', { tags: { team: 'web', env: 'prod' }, state: 'Standby' }));
    repo.insert(row('db-a', { tags: { team: 'db' } }));
  });
  after(async () => {
    await instances?.shutdown();
    await app?.close();
    await env?.close();
  });

  const call = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: unknown) =>
    app.inject({ method, url, ...(payload === undefined ? {} : { payload: payload as Json }) });

  function error(res: LightMyRequestResponse, status: number, code: string): Json {
    assert.equal(res.statusCode, status, res.body);
    const body = res.json<Json>();
    assert.equal(body.code, code, res.body);
    assert.equal(typeof body.message, 'string');
    return body;
  }

  test('wait takes Go durations (the issue: "timeout must be number") and numbers', async () => {
    for (const t of ['120s', '1m30s', '500ms', '2', '0']) {
      const res = await call('GET', `/instances/web-a/wait?state=Stopped&timeout=${t}`);
      assert.equal(res.statusCode, 200, `${t}: ${res.body}`);
      assert.deepEqual(res.json(), { state: 'Stopped', state_error: null, timed_out: false });
    }
    const timedOut = await call('GET', '/instances/web-a/wait?state=Running&timeout=10ms');
    assert.deepEqual(timedOut.json(), { state: 'Stopped', state_error: null, timed_out: true });
    const bad = error(
      await call('GET', '/instances/web-a/wait?state=Running&timeout=2x'),
      400,
      'invalid_argument',
    );
    assert.match(String(bad.message), /^timeout must be a duration .*"2x"/);
    error(await call('GET', '/instances/nope/wait?state=Running&timeout=120s'), 404, 'not_found');
  });

  test('list filters by state and by tags (deepObject)', async () => {
    const names = async (q: string) =>
      (await call('GET', `/instances${q}`))
        .json<{ name: string }[]>()
        .map((i) => i.name)
        .sort();
    assert.deepEqual(await names(''), ['db-a', 'web-a', 'web-b']);
    assert.deepEqual(await names('?state=Stopped'), ['db-a', 'web-a']);
    assert.deepEqual(await names('?tags[team]=web'), ['web-a', 'web-b']);
    assert.deepEqual(await names('?tags%5Bteam%5D=web&tags%5Benv%5D=prod'), ['web-b']);
    assert.deepEqual(await names('?state=Stopped&tags[team]=web'), ['web-a']);
    error(await call('GET', '/instances?state=Sleeping'), 400, 'invalid_argument');
  });

  test('the instance shape: env map, sizes, tags, expiry, phases, hypervisor', async () => {
    const i = (await call('GET', '/instances/web-a')).json<Json>();
    assert.deepEqual(i.env, { PATH: '/bin', A: '1' });
    assert.equal(i.size, '512MB');
    assert.equal(i.overlay_size, '4GB');
    assert.deepEqual(i.tags, { team: 'web', env: 'dev' });
    assert.equal(i.expires_at, null);
    assert.equal(i.hypervisor, 'qemu-microvm');
    assert.equal(i.has_snapshot, false);
    assert.equal(i.current_phase, 'stopped');
    assert.equal(typeof (i.phase_durations_ms as Json).stopped, 'number');
    assert.equal('exit_message' in i, false);
    assert.deepEqual(i.network, {
      mode: 'none',
      enabled: false,
      ip: null,
      gateway: null,
      mac: null,
      egress: false,
    });
    assert.equal((await call('GET', '/instances/web-b')).json<Json>().has_snapshot, true);
  });

  test('PATCH merges env, replaces tags, sets and clears the expiry', async () => {
    let res = await call('PATCH', '/instances/db-a', {
      env: { A: '2', NEW: 'x' },
      tags: { team: 'db', tier: 'gold' },
      ttl: '6h',
    });
    assert.equal(res.statusCode, 200, res.body);
    let i = res.json<Json>();
    assert.deepEqual(i.env, { PATH: '/bin', A: '2', NEW: 'x' });
    assert.deepEqual(i.tags, { team: 'db', tier: 'gold' });
    const left = Date.parse(String(i.expires_at)) - Date.now();
    assert.ok(left > 6 * 3600_000 - 60_000 && left <= 6 * 3600_000, String(i.expires_at));
    // Vessel's shapes too: env as a list, ttl in seconds.
    res = await call('PATCH', '/instances/db-a', { env: ['B=3'], ttl: 60 });
    i = res.json<Json>();
    assert.equal((i.env as Json).B, '3');
    assert.ok(Date.parse(String(i.expires_at)) - Date.now() <= 60_000);
    res = await call('PATCH', '/instances/db-a', { ttl: '0s' });
    assert.equal(res.json<Json>().expires_at, null);
    const at = new Date(Date.now() + 86_400_000).toISOString();
    res = await call('PATCH', '/instances/db-a', { expires_at: at });
    assert.equal(res.json<Json>().expires_at, at);
    // Switched-off policies are fine; switched-on ones are not.
    res = await call('PATCH', '/instances/db-a', { restart_policy: { policy: 'never' } });
    assert.equal(res.statusCode, 200, res.body);
    const ctx = error(
      await call('PATCH', '/instances/db-a', {
        auto_standby: { enabled: true, idle_timeout: '5m' },
      }),
      400,
      'unsupported_field',
    );
    assert.match(String(ctx.message), /^auto_standby: automatic standby is not supported/);
    assert.deepEqual(ctx.context, { field: 'auto_standby' });
    error(
      await call('PATCH', '/instances/db-a', { ttl: '1h', expires_at: at }),
      400,
      'invalid_argument',
    );
    error(
      await call('PATCH', '/instances/db-a', { expires_at: '2001-01-01T00:00:00Z' }),
      400,
      'invalid_argument',
    );
    error(await call('PATCH', '/instances/db-a', { ttl: 'soon' }), 400, 'invalid_argument');
    error(await call('PATCH', '/instances/nope', { ttl: '1h' }), 404, 'not_found');
  });

  test('PATCH of an expired instance is a conflict', async () => {
    repo.insert(row('old', { expires_at: new Date(Date.now() - 1000).toISOString() }));
    error(await call('PATCH', '/instances/old', { ttl: '1h' }), 409, 'conflict');
  });

  test('create: hypeman fields Vessel cannot honour are refused by name', async () => {
    const base = { name: 'x1', image: 'docker.io/library/alpine:latest' };
    const cases: [Json, string][] = [
      [{ gpu: { profile: 'L40S-1Q' } }, 'gpu'],
      [{ devices: ['l4-gpu'] }, 'devices'],
      [{ hotplug_size: '2GB' }, 'hotplug_size'],
      [{ network: { bandwidth_download: '1Gbps' } }, 'network.bandwidth_download'],
      [{ network: { egress: { enabled: true } } }, 'network.egress.enabled'],
      [{ credentials: { K: { source: { env: 'K' }, inject: [] } } }, 'credentials'],
      [{ health_check: { type: 'http', http: { port: 80 } } }, 'health_check'],
      [{ hypervisor: 'firecracker' }, 'hypervisor'],
      [{ platform: 'linux/s390x' }, 'platform'],
      [{ skip_kernel_headers: false }, 'skip_kernel_headers'],
    ];
    for (const [extra, field] of cases) {
      const body = error(
        await call('POST', '/instances', { ...base, ...extra }),
        400,
        'unsupported_field',
      );
      assert.ok(String(body.message).startsWith(`${field}: `), `${field}: ${String(body.message)}`);
      assert.deepEqual(body.context, { field });
    }
  });

  test('create: the rest of a hypeman body is understood (fails only at the image)', async () => {
    // An unparseable image reference fails locally, after every field was accepted.
    const res = await call('POST', '/instances', {
      name: 'x2',
      image: 'Not A Reference',
      size: '1GB',
      overlay_size: '10GB',
      vcpus: 2,
      env: { PORT: '3000' },
      tags: { team: 'web' },
      ttl: '24h',
      network: { enabled: false, egress: { enabled: false } },
      devices: [],
      volumes: [],
      restart_policy: { policy: 'never' },
      hypervisor: 'qemu-microvm',
      skip_guest_agent: true,
      skip_kernel_headers: true,
      entrypoint: ['/bin/sh', '-c'],
      cmd: ['echo hello'],
    });
    error(res, 400, 'invalid_reference');
    const bad: [Json, RegExp][] = [
      [{ size: 'lots' }, /^size must be a size/],
      [{ size: '1MB' }, /^size "1MB" is below/],
      [{ size: '1GB', memory_mib: 512 }, /give size or memory_mib, not both/],
      [{ ttl: '3 days' }, /^ttl must be a duration/],
      [{ ttl: '1h', expires_at: '2099-01-01T00:00:00Z' }, /give ttl or expires_at/],
      [{ expires_at: '2001-01-01T00:00:00Z' }, /not in the future/],
    ];
    for (const [extra, message] of bad) {
      const body = error(
        await call('POST', '/instances', { image: 'x', ...extra }),
        400,
        'invalid_argument',
      );
      assert.match(String(body.message), message);
    }
  });

  test('the error body: hypeman Error, with details per invalid field and Vessel context', async () => {
    const res = await call('POST', '/instances', { image: 'alpine', bogus: 1 });
    const body = error(res, 400, 'invalid_argument');
    assert.equal(body.message, 'body has an unknown field "bogus"');
    assert.deepEqual(body.details, [
      { code: 'invalid_field', message: 'body has an unknown field "bogus"' },
    ]);
    const wrongType = error(
      await call('POST', '/instances', { image: 'alpine', vcpus: 'two' }),
      400,
      'invalid_argument',
    );
    assert.match(String(wrongType.message), /^body\.vcpus must be integer/);
    const notFound = error(await call('GET', '/instances/nope'), 404, 'not_found');
    assert.deepEqual(notFound.context, { instance: 'nope' });
  });

  test('stat needs a Running instance; stats of one without a VM says why each number is null', async () => {
    error(await call('GET', '/instances/web-a/stat?path=/etc/hosts'), 409, 'conflict');
    error(await call('GET', '/instances/web-a/stat'), 400, 'invalid_argument');
    error(await call('GET', '/instances/web-a/stat?path=relative'), 400, 'invalid_argument');
    error(await call('GET', '/instances/nope/stat?path=/'), 404, 'not_found');
    const s = (await call('GET', '/instances/web-a/stats')).json<Json>();
    assert.equal(s.instance_name, 'web-a');
    assert.equal(s.allocated_vcpus, 2);
    assert.equal(s.allocated_memory_bytes, 512 * 1024 * 1024);
    assert.equal(s.cpu_seconds, null);
    assert.equal(s.memory_utilization_ratio, null);
    assert.equal(
      (s.unavailable as Json).network_rx_bytes,
      'instance is Stopped: no hypervisor process',
    );
  });

  test('standby and fork bodies are checked before anything happens', async () => {
    const sb = error(
      await call('POST', '/instances/web-a/standby', {
        compression: { enabled: true, algorithm: 'zstd' },
      }),
      400,
      'unsupported_field',
    );
    assert.match(String(sb.message), /^compression: snapshot compression is not supported/);
    error(
      await call('POST', '/instances/web-a/standby', { compression_delay: 'later' }),
      400,
      'invalid_argument',
    );
    error(
      await call('POST', '/instances/web-a/fork', { name: 'f', target_state: 'Paused' }),
      400,
      'invalid_argument',
    );
    // A Running source needs from_running.
    repo.insert(row('live', { state: 'Running' }));
    const live = error(await call('POST', '/instances/live/fork', { name: 'f' }), 409, 'conflict');
    assert.match(String(live.message), /from_running/);
  });

  test('/capabilities and the hypeman part of /resources', async () => {
    const c = (await call('GET', '/capabilities')).json<Json>();
    assert.deepEqual(c.server, { version: '1.2.3-test', api_version: '1.2.3-test' });
    assert.equal((c.host as Json).os, 'linux');
    assert.deepEqual(c.default_runtime, { name: 'qemu-microvm', available: true });
    assert.deepEqual((c.runtimes as Json[])[0]?.features, ['standby', 'fork', 'pause']);
    assert.equal(c.accelerator, 'tcg');
    assert.ok((c.features as string[]).includes('instances'));
    repo.insert(row('running-1', { state: 'Running', vcpus: 3, memory_mib: 1024 }));
    const r = (await call('GET', '/resources')).json<Json>();
    assert.deepEqual(r.cpu, {
      type: 'cpu',
      capacity: 8,
      effective_limit: 8,
      allocated: 3 + 2, // running-1 and live
      available: 3,
      oversub_ratio: 1,
      source: 'detected',
    });
    assert.equal((r.memory as Json).allocated, 1536 * 1024 * 1024);
    assert.equal((r.network as Json).source, 'not tracked: Vessel sets no bandwidth limits');
    assert.deepEqual(
      (r.allocations as Json[]).map((a) => a.instance_name),
      ['live', 'running-1'],
    );
    assert.ok(r.host, 'Vessel fields stay');
  });

  test('images: create with tags, list by tags, refused credentials and platforms', async () => {
    // Nothing listens on port 9: the pull fails in the background, the record keeps its tags.
    const res = await call('POST', '/images', {
      name: '127.0.0.1:9/tagged/app:1',
      tags: { team: 'web' },
    });
    assert.equal(res.statusCode, 202, res.body);
    assert.deepEqual(res.json<Json>().tags, { team: 'web' });
    const listed = (await call('GET', '/images?tags[team]=web')).json<Json[]>();
    assert.deepEqual(
      listed.map((i) => i.name),
      ['127.0.0.1:9/tagged/app:1'],
    );
    assert.deepEqual((await call('GET', '/images?tags[team]=db')).json(), []);
    const cred = error(
      await call('POST', '/images', {
        name: 'alpine',
        credentials: { username: 'u', password: 'p' },
      }),
      400,
      'unsupported_field',
    );
    assert.match(String(cred.message), /^credentials: /);
    error(
      await call('POST', '/images', { name: 'alpine', platform: 'linux/riscv64' }),
      400,
      'unsupported_field',
    );
    await env.manager.drain();
  });

  test('ingresses: hypeman rules in and out, tags, refused TLS and extra rules', async () => {
    const rule = (host: string) => ({
      match: { hostname: host, port: ingressPort },
      target: { instance: 'web-a', port: 8080 },
    });
    const res = await call('POST', '/ingresses', {
      name: 'api',
      rules: [rule('api.example.com')],
      tags: { team: 'web' },
    });
    assert.equal(res.statusCode, 201, res.body);
    const ing = res.json<Json>();
    assert.deepEqual(ing.rules, [{ ...rule('api.example.com'), tls: false, redirect_http: false }]);
    assert.deepEqual(ing.tags, { team: 'web' });
    assert.equal(ing.hostname, 'api.example.com'); // Vessel's flat fields stay
    assert.deepEqual(
      (await call('GET', '/ingresses?tags[team]=web')).json<Json[]>().map((i) => i.name),
      ['api'],
    );
    const two = error(
      await call('POST', '/ingresses', {
        name: 'two',
        rules: [rule('a.example.com'), rule('b.example.com')],
      }),
      400,
      'unsupported_field',
    );
    assert.match(String(two.message), /exactly one rule/);
    const tls = error(
      await call('POST', '/ingresses', {
        name: 'tls',
        rules: [{ ...rule('t.example.com'), tls: true }],
      }),
      400,
      'unsupported_field',
    );
    assert.match(String(tls.message), /^rules\[0\]\.tls: /);
    assert.equal((await call('DELETE', '/ingresses/api')).statusCode, 204);
  });
});
