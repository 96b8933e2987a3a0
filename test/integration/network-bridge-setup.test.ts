// The bridge network's host side without VMs: bridge, TAP pool, nftables ruleset and set
// elements, all driven inside a network namespace this test creates (every `ip`/`nft`
// runs through `ip netns exec`), then a 50-cycle attach/release leak check and teardown.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { run } from '../../src/core/process.js';
import { BridgeNetwork, POOL_PREFIX, TAP_PREFIX, type Runner } from '../../src/network/index.js';
import { listLinks } from '../../src/network/links.js';

async function skipReason(): Promise<string | false> {
  if (process.getuid?.() !== 0) return 'needs root (ip netns, TAP devices)';
  try {
    await run('ip', ['netns', 'list']);
    await run('nft', ['--version']);
  } catch {
    return 'ip netns or nft is not available';
  }
  return false;
}

const why = await skipReason();

describe('bridge network host setup in a namespace', { skip: why }, () => {
  const ns = `vessel-test-${randomBytes(4).toString('hex')}`;
  const exec: Runner = (file, args, options = {}) =>
    run('ip', ['netns', 'exec', ns, file, ...args], {
      timeoutMs: 30_000,
      ...(options.allowFailure ? { allowFailure: true } : {}),
    });
  const opts = { bridge: 'vbtest0', subnet: '10.99.0.0/24', tapPoolSize: 3, exec };
  let bn: BridgeNetwork | undefined;

  const links = async () => (await listLinks(exec)).map((l) => l.ifname);
  const nftSet = async (family: string, set: string) =>
    (await exec('nft', ['-j', 'list', 'set', family, 'vessel', set])).stdout;
  const isolated = async (tap: string) =>
    /isolated on/.test((await exec('bridge', ['-d', 'link', 'show', 'dev', tap])).stdout);

  before(async () => {
    await run('ip', ['netns', 'add', ns]);
  });

  after(async () => {
    await bn?.close({ teardown: true }).catch(() => undefined);
    await run('ip', ['netns', 'del', ns], { allowFailure: true });
  });

  test('start creates the bridge with the gateway, the ruleset, forwarding and a warm pool', async () => {
    bn = await BridgeNetwork.start(opts);
    await bn.settled();
    assert.equal(bn.backend, 'nftables');
    const addr = (await exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'vbtest0'])).stdout;
    assert.match(addr, /inet 10\.99\.0\.1\/24/);
    const pool = (await listLinks(exec)).filter((l) => l.ifname.startsWith(POOL_PREFIX));
    assert.equal(pool.length, 3);
    for (const l of pool) {
      assert.equal(l.master, 'vbtest0');
      assert.ok(!l.flags?.includes('UP'), `${l.ifname} is kept down`);
      assert.ok(await isolated(l.ifname));
    }
    assert.equal((await exec('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim(), '1');
    const tables = (await exec('nft', ['list', 'tables'])).stdout;
    assert.match(tables, /table inet vessel/);
    assert.match(tables, /table bridge vessel/);
    assert.deepEqual(bn.poolStats(), {
      idle: 3,
      creating: 0,
      target: 3,
      created: 3,
      hits: 0,
      misses: 0,
    });
  });

  test('starting again is idempotent: same rules, the idle TAPs are adopted, none created', async () => {
    const before = (await exec('nft', ['list', 'ruleset'])).stdout;
    await bn!.close({ teardown: false });
    bn = await BridgeNetwork.start(opts);
    await bn.settled();
    assert.equal((await exec('nft', ['list', 'ruleset'])).stdout, before);
    assert.equal(bn.poolStats().created, 0);
    assert.equal(bn.poolStats().idle, 3);
  });

  test('attach: pool hit, TAP renamed and up; egress and group peers become set elements', async () => {
    const n = bn!;
    const a = await n.attach({
      id: 'aaaaaaaaaaaaaaaa',
      ip: '10.99.0.2',
      egress: true,
      group: null,
      ports: [],
    });
    const b = await n.attach({
      id: 'bbbbbbbbbbbbbbbb',
      ip: '10.99.0.3',
      egress: false,
      group: 'g',
      ports: [],
    });
    const c = await n.attach({
      id: 'cccccccccccccccc',
      ip: '10.99.0.4',
      egress: false,
      group: 'g',
      ports: [],
    });
    assert.deepEqual(
      [a, b, c],
      [`${TAP_PREFIX}aaaaaaaaaaaa`, `${TAP_PREFIX}bbbbbbbbbbbb`, `${TAP_PREFIX}cccccccccccc`],
    );
    assert.equal(n.poolStats().hits, 3);
    assert.ok(await isolated(a), 'an ungrouped TAP is isolated');
    assert.ok(!(await isolated(b)), 'a grouped TAP is not');
    assert.match(await nftSet('inet', 'egress'), /"10\.99\.0\.2"/);
    const peers = await nftSet('bridge', 'peers');
    assert.match(peers, new RegExp(`"${b}".*"${c}"|"${c}".*"${b}"`));
    assert.doesNotMatch(peers, new RegExp(a));
    await n.release('cccccccccccccccc');
    assert.doesNotMatch(await nftSet('bridge', 'peers'), /"elem"/);
    await n.release('aaaaaaaaaaaaaaaa');
    await n.release('bbbbbbbbbbbbbbbb');
    await n.release('bbbbbbbbbbbbbbbb'); // idempotent
    assert.doesNotMatch(await nftSet('inet', 'egress'), /"elem"/);
    assert.equal(n.attachedCount(), 0);
  });

  test('50 attach/release cycles leave no TAP beyond the pool and no set element', async () => {
    const n = bn!;
    const t0 = Date.now();
    for (let i = 0; i < 50; i++) {
      const id = randomBytes(8).toString('hex');
      const ip = n.allocate(new Set());
      await n.attach({ id, ip, egress: i % 2 === 0, group: i % 3 === 0 ? 'x' : null, ports: [] });
      if (i % 5 === 0) {
        // Two group members at once, so peer pairs are added and removed too.
        const id2 = randomBytes(8).toString('hex');
        await n.attach({
          id: id2,
          ip: n.allocate(new Set([ip])),
          egress: false,
          group: 'x',
          ports: [],
        });
        await n.release(id2);
      }
      await n.release(id);
    }
    await n.settled();
    const ms = Date.now() - t0;
    const names = await links();
    assert.deepEqual(
      names.filter((l) => l.startsWith(TAP_PREFIX)),
      [],
    );
    assert.equal(names.filter((l) => l.startsWith(POOL_PREFIX)).length, 3);
    assert.doesNotMatch(await nftSet('inet', 'egress'), /"elem"/);
    assert.doesNotMatch(await nftSet('bridge', 'peers'), /"elem"/);
    console.log(`# 50 attach/release cycles: ${ms} ms, pool ${JSON.stringify(n.poolStats())}`);
  });

  test('teardown removes the TAPs, the bridge and both tables', async () => {
    await bn!.close({ teardown: true });
    bn = undefined;
    const names = await links();
    assert.deepEqual(
      names.filter((l) => l !== 'lo'),
      [],
    );
    assert.doesNotMatch((await exec('nft', ['list', 'tables'])).stdout, /vessel/);
  });
});
