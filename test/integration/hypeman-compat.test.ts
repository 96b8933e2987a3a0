// The hypeman API as a hypeman client uses it: a real daemon process on TCP with a bearer token,
// driven with plain HTTP and only request/response shapes from hypeman's openapi.yaml — real
// microVMs for what needs one: create and wait (Go durations), stat, stats, PATCH, standby with
// a body, restore, fork from Running, start with a command override, exit_code/exit_message,
// and TTL expiry that survives a daemon restart. Networking stays off (no guest address).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

type Json = Record<string, unknown>;

const why = await vmSkipReason();
const TOKEN = 'hypeman-compat-token-0123456789';

async function freePort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => srv.once('listening', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the hypeman API over TCP with a bearer token', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let d: SpawnedDaemon;
  let port: number;
  let image: string;

  /** Start the daemon with a TCP listener (127.0.0.1 only) that needs the token. */
  async function start(): Promise<void> {
    process.env.VESSEL_API_TCP = `127.0.0.1:${port}`;
    process.env.VESSEL_API_TOKENS = TOKEN;
    try {
      d = await startDaemon(dir);
    } finally {
      delete process.env.VESSEL_API_TCP;
      delete process.env.VESSEL_API_TOKENS;
    }
  }

  async function api(
    method: string,
    url: string,
    body?: unknown,
    token: string | null = TOKEN,
  ): Promise<{ status: number; body: Json & Json[] }> {
    const res = await fetch(`http://127.0.0.1:${port}${url}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as Json & Json[] };
  }

  async function ok(method: string, url: string, status: number, body?: unknown): Promise<Json> {
    const res = await api(method, url, body);
    assert.equal(res.status, status, `${method} ${url}: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-hm-'));
    await seedKernel(dir);
    port = await freePort();
    await start();
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'hm/busybox:1');
    image = (await d.client.importImage(createReadStream(archive))).name;
  });

  after(async () => {
    if (d) {
      for (const i of await d.client.listInstances().catch(() => []))
        await d.client.deleteInstance(i.id).catch(() => undefined);
      await d.stop();
    }
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('health, capabilities, resources, images; no token is a 401 Error', async () => {
    assert.equal((await ok('GET', '/health', 200)).status, 'ok');
    const caps = await ok('GET', '/capabilities', 200);
    assert.equal((caps.default_runtime as Json).name, 'qemu-microvm');
    assert.deepEqual((caps.images as Json).platforms, [
      `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`,
    ]);
    const res = await ok('GET', '/resources', 200);
    assert.ok(((res.cpu as Json).capacity as number) > 0);
    assert.ok(Array.isArray(res.allocations));
    const denied = await api('GET', '/instances', undefined, null);
    assert.equal(denied.status, 401);
    assert.equal(denied.body.code, 'unauthorized');
    assert.equal(typeof denied.body.message, 'string');
    const images = (await ok('GET', '/images', 200)) as unknown as Json[];
    assert.ok(images.some((i) => i.name === image && i.status === 'ready'));
    const one = await ok('GET', `/images/${encodeURIComponent(image)}`, 200);
    assert.deepEqual(one.tags, {});
  });

  test(
    'create with a hypeman body, wait with a Go duration, get, list by tags',
    { timeout: 240_000 },
    async () => {
      const created = await ok('POST', '/instances', 201, {
        name: 'hm-a',
        image,
        cmd: [
          'sh',
          '-c',
          'echo data > /root/f; ln -s /etc/hostname /root/link; while :; do sleep 1; done',
        ],
        env: { GREETING: 'hi' },
        size: '256MB',
        overlay_size: '1GB',
        vcpus: 1,
        tags: { suite: 'hypeman', role: 'main' },
        network: { enabled: false },
        hypervisor: 'qemu-microvm',
        skip_guest_agent: false,
      });
      assert.equal(created.name, 'hm-a');
      assert.equal(created.size, '256MB');
      assert.equal(created.overlay_size, '1GB');
      assert.equal((created.env as Json).GREETING, 'hi');
      assert.equal(created.expires_at, null);
      const waited = await ok('GET', '/instances/hm-a/wait?state=Running&timeout=180s', 200);
      assert.deepEqual(waited, { state: 'Running', state_error: null, timed_out: false });
      const inst = await ok('GET', '/instances/hm-a', 200);
      assert.equal(inst.state, 'Running');
      assert.ok(inst.started_at);
      const boot = inst.boot_durations_ms as {
        vmm_start: number;
        guest_boot: number;
        agent_ready: number;
        total: number;
      };
      assert.ok(
        boot.vmm_start >= 0 && boot.guest_boot > 0 && boot.agent_ready >= 0,
        JSON.stringify(boot),
      );
      assert.equal(boot.total, boot.vmm_start + boot.guest_boot + boot.agent_ready);
      assert.ok((inst.phase_durations_ms as Record<string, number>).initializing! > 0);
      assert.equal(inst.current_phase, 'running');
      const listed = (await ok(
        'GET',
        '/instances?state=Running&tags[suite]=hypeman',
        200,
      )) as unknown as Json[];
      assert.deepEqual(
        listed.map((i) => i.name),
        ['hm-a'],
      );
      assert.deepEqual(await ok('GET', '/instances?tags[suite]=other', 200), []);
    },
  );

  test(
    'stat (PathInfo) and stats (InstanceStats) of the running VM',
    { timeout: 60_000 },
    async () => {
      let f: Json = {};
      // The shell creates the file before it writes it: wait for both.
      for (let i = 0; i < 100 && (f.exists !== true || f.size !== 5); i++) {
        f = await ok('GET', '/instances/hm-a/stat?path=/root/f', 200);
        if (f.exists !== true || f.size !== 5) await sleep(100);
      }
      assert.deepEqual(
        { ...f },
        {
          exists: true,
          is_dir: false,
          is_file: true,
          is_symlink: false,
          link_target: null,
          mode: 0o644,
          size: 5,
          error: null,
        },
      );
      let link = await ok('GET', '/instances/hm-a/stat?path=/root/link&follow_links=false', 200);
      for (let i = 0; i < 50 && link.exists !== true; i++) {
        await sleep(100);
        link = await ok('GET', '/instances/hm-a/stat?path=/root/link&follow_links=false', 200);
      }
      assert.equal(link.is_symlink, true);
      assert.equal(link.link_target, '/etc/hostname');
      const followed = await ok(
        'GET',
        '/instances/hm-a/stat?path=/root/link&follow_links=true',
        200,
      );
      assert.equal(followed.is_file, true);
      assert.equal(followed.is_symlink, false);
      const dirInfo = await ok('GET', '/instances/hm-a/stat?path=/etc', 200);
      assert.equal(dirInfo.is_dir, true);
      const missing = await ok('GET', '/instances/hm-a/stat?path=/nope', 200);
      assert.equal(missing.exists, false);
      assert.equal(missing.error, null);

      const s = await ok('GET', '/instances/hm-a/stats', 200);
      assert.equal(s.instance_name, 'hm-a');
      assert.ok((s.cpu_seconds as number) > 0, JSON.stringify(s));
      assert.ok((s.memory_rss_bytes as number) > 0);
      assert.ok((s.memory_vms_bytes as number) >= (s.memory_rss_bytes as number));
      assert.equal(s.allocated_vcpus, 1);
      assert.equal(s.allocated_memory_bytes, 256 * 1024 * 1024);
      assert.ok((s.memory_utilization_ratio as number) > 0);
      // No NIC: the VM sent and received nothing.
      assert.equal(s.network_rx_bytes, 0);
      assert.equal(s.network_tx_bytes, 0);
      assert.ok((s.disk_read_bytes as number) > 0, 'the guest read its root disk');
      assert.deepEqual(s.unavailable, {});

      // The CLI's views of the same: `vessel inspect` and `vessel stats`.
      const inspected = await d.cli(['inspect', 'hm-a']);
      assert.equal(inspected.code, 0, inspected.stderr);
      const doc = JSON.parse(inspected.stdout) as Json;
      assert.equal(doc.name, 'hm-a');
      assert.ok(doc.boot_durations_ms);
      const stats = await d.cli(['stats', 'hm-a', '--json']);
      assert.equal(stats.code, 0, stats.stderr);
      const [row] = JSON.parse(stats.stdout) as Json[];
      assert.equal(row?.instance_name, 'hm-a');
      assert.equal(typeof row?.cpu_percent, 'number');
      const table = await d.cli(['stats']);
      assert.match(table.stdout, /^NAME\s+STATE\s+CPU %/);
      assert.match(table.stdout, /\nhm-a\s+Running\s+\d/);
    },
  );

  test('PATCH, standby with a body, restore, fork from Running', { timeout: 240_000 }, async () => {
    const patched = await ok('PATCH', '/instances/hm-a', 200, {
      env: { GREETING: 'hello' },
      tags: { suite: 'hypeman', role: 'primary' },
    });
    assert.equal((patched.env as Json).GREETING, 'hello');
    assert.deepEqual(patched.tags, { suite: 'hypeman', role: 'primary' });
    const sb = await ok('POST', '/instances/hm-a/standby', 200, {
      compression: { enabled: false },
    });
    assert.equal(sb.state, 'Standby');
    assert.equal(sb.has_snapshot, true);
    const restored = await ok('POST', '/instances/hm-a/restore', 200);
    assert.equal(restored.state, 'Running');
    assert.equal(restored.has_snapshot, false);
    const conflict = await api('POST', '/instances/hm-a/fork', { name: 'hm-b' });
    assert.equal(conflict.status, 409);
    const fork = await ok('POST', '/instances/hm-a/fork', 201, {
      name: 'hm-b',
      from_running: true,
      target_state: 'Stopped',
    });
    assert.equal(fork.name, 'hm-b');
    assert.equal(fork.state, 'Stopped');
    assert.equal((await ok('GET', '/instances/hm-a', 200)).state, 'Running');
  });

  test(
    'start with a command override; exit_code and exit_message',
    { timeout: 240_000 },
    async () => {
      const started = await ok('POST', '/instances/hm-b/start', 200, {
        cmd: ['sh', '-c', 'exit 3'],
      });
      assert.deepEqual(started.cmd, ['sh', '-c', 'exit 3']);
      const w = await ok('GET', '/instances/hm-b/wait?state=Stopped&timeout=3m', 200);
      assert.equal(w.timed_out, false, JSON.stringify(w));
      const b = await ok('GET', '/instances/hm-b', 200);
      assert.equal(b.exit_code, 3);
      assert.equal(b.exit_message, 'exit code 3');
      assert.ok(b.stopped_at);
      assert.ok((b.phase_durations_ms as Record<string, number>).stopped! > 0);
    },
  );

  test(
    'TTL: instances are deleted when they expire, across a daemon restart',
    { timeout: 180_000 },
    async () => {
      const a = await ok('GET', '/instances/hm-a', 200);
      const pid = a.pid as number;
      assert.ok(alive(pid));
      await ok('PATCH', '/instances/hm-b', 200, { ttl: '2s' });
      const patched = await ok('PATCH', '/instances/hm-a', 200, { ttl: '25s' });
      assert.ok(Date.parse(String(patched.expires_at)) > Date.now() + 20_000);
      await d.stop(); // the VM keeps running; hm-b expires while no daemon runs
      await sleep(2500);
      await start();
      // Expired while the daemon was down: gone once it is up, with an expire event.
      const gone = await api('GET', '/instances/hm-b');
      assert.equal(gone.status, 404);
      assert.equal(gone.body.code, 'not_found');
      const metrics = await (
        await fetch(`http://127.0.0.1:${port}/metrics`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        })
      ).text();
      assert.match(metrics, /vessel_lifecycle_events_total\{type="expire"\} 1/);
      // hm-a was re-adopted; the restarted daemon's timer deletes it, VM and all.
      assert.equal((await ok('GET', '/instances/hm-a', 200)).state, 'Running');
      const events = await fetch(
        `http://127.0.0.1:${port}/events?instance=hm-a&type=expire,delete`,
        {
          headers: { authorization: `Bearer ${TOKEN}` },
        },
      );
      const reader = events.body!.getReader();
      let text = '';
      while (!text.includes('event: delete')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += Buffer.from(value).toString();
      }
      await reader.cancel();
      assert.ok(
        text.indexOf('event: expire') >= 0 &&
          text.indexOf('event: expire') < text.indexOf('event: delete'),
        text,
      );
      assert.equal((await api('GET', '/instances/hm-a')).status, 404);
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      assert.equal(alive(pid), false, 'the expired VM is gone');
    },
  );
});
