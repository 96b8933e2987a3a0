// A hostile guest's network reach (issue 11, item 6): inside a network namespace this test
// creates, a bridge-mode daemon with its TCP API listening on every address, a host service
// listening on every address, and a target VM serving HTTP. Guests in bridge mode, without
// and with --egress, try the API, the service (through the gateway) and the target VM: all
// refused. Controls from inside the namespace show each of them does answer. A user-mode
// guest with --egress tries the same through 10.0.2.2, which QEMU's slirp mapped to the
// host's loopback: refused now that such guests use passt and the egress guard.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { VesselClient } from '../../src/client/index.js';
import { importBusybox } from '../helpers/oci-builder.js';
import {
  addOutsideWorld,
  bridgeSkipReason,
  serveText,
  startNetnsDaemon,
  type NetnsDaemon,
  type OutsideWorld,
} from '../helpers/netns.js';
import { figure } from './suite.js';
import { runningVm, sh } from './fixture.js';

const why = await bridgeSkipReason();

const SUBNET = '10.79.0.0/24';
const GATEWAY = '10.79.0.1';
const API_PORT = 17801;
const SERVICE_PORT = 17802;
const REQUEST = 'GET /health HTTP/1.0\\r\\n\\r\\n';

/** What a guest gets from `host:port` (HTTP request for the API, nothing for the service). */
async function reach(c: VesselClient, id: string, host: string, port: number): Promise<string> {
  const r = await sh(c, id, `printf '${REQUEST}' | busybox nc -w 3 ${host} ${port} 2>&1; true`);
  return r.out.trim();
}

const answered = (out: string): boolean => /HTTP\/1\.[01]|host-service/.test(out);

describe('hostile guest: network reach (namespace)', { skip: why, timeout: 600_000 }, () => {
  let d: NetnsDaemon | undefined;
  let world: OutsideWorld | undefined;
  let c: VesselClient;
  let dir: string;
  const ids: Partial<Record<'target' | 'plain' | 'egress' | 'user', string>> = {};
  let targetIp = '';

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-reach-'));
    d = await startNetnsDaemon({
      config: {
        network: { subnet: SUBNET, tap_pool_size: 2, default_mode: 'auto' },
        api: { tcp: { host: '0.0.0.0', port: API_PORT }, tokens: ['reach-test-token-0123456789'] },
      },
    });
    c = d.client;
    world = await addOutsideWorld(d.ns); // user-mode egress (passt) needs a route out
    // A host service on every address of the namespace; ns.destroy() kills it with the rest.
    serveText(d.ns, '0.0.0.0', SERVICE_PORT, 'host-service');
    const image = await importBusybox(c, dir, 'reach/busybox:1');
    const small = { memory_mib: 128 } as const;
    ids.target = await runningVm(c, image, 'target', {
      ...small,
      cmd: ['busybox', 'httpd', '-f', '-p', '80', '-h', '/'],
      network: { mode: 'bridge' },
    });
    ids.plain = await runningVm(c, image, 'plain', { ...small, network: { mode: 'bridge' } });
    ids.egress = await runningVm(c, image, 'egress', {
      ...small,
      network: { mode: 'bridge', egress: true },
    });
    ids.user = await runningVm(c, image, 'user', {
      ...small,
      network: { mode: 'user', egress: true },
    });
    targetIp = (await c.getInstance(ids.target)).network.ip ?? '';
    assert.match(targetIp, /^10\.79\.0\.\d+$/);
  });

  after(async () => {
    if (d) {
      for (const i of await c.listInstances().catch(() => []))
        await c.deleteInstance(i.id).catch(() => undefined);
      await d.close();
    }
    await world?.destroy();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('controls: the API, the service and the target VM answer inside the namespace', async () => {
    const nc = async (host: string, port: number): Promise<string> =>
      (
        await d!.ns.exec('sh', ['-c', `printf '${REQUEST}' | busybox nc -w 3 ${host} ${port}`], {
          allowFailure: true,
        })
      ).stdout;
    assert.ok(answered(await nc(GATEWAY, API_PORT)), 'the TCP API listens on the gateway');
    assert.ok(answered(await nc(GATEWAY, SERVICE_PORT)), 'the service listens on the gateway');
    assert.ok(answered(await nc(targetIp, 80)), 'the target VM serves');
  });

  for (const who of ['plain', 'egress'] as const) {
    test(`a bridge guest (${who === 'plain' ? 'no egress' : '--egress'}) reaches none of them`, async () => {
      const tries: Array<[string, string, number]> = [
        ['api', GATEWAY, API_PORT],
        ['service', GATEWAY, SERVICE_PORT],
        ['other_vm', targetIp, 80],
      ];
      for (const [what, host, port] of tries) {
        const out = await reach(c, ids[who]!, host, port);
        figure(`reach_bridge_${who}_${what}`, answered(out) ? 'reached' : 'refused');
        assert.ok(!answered(out), `${who} reached ${what} at ${host}:${port}: ${out}`);
      }
    });
  }

  test('a user-mode guest with --egress reaches neither through 10.0.2.2', async () => {
    const api = await reach(c, ids.user!, '10.0.2.2', API_PORT);
    const service = await reach(c, ids.user!, '10.0.2.2', SERVICE_PORT);
    figure('reach_user_egress_api', answered(api) ? 'reached' : 'refused');
    figure('reach_user_egress_service', answered(service) ? 'reached' : 'refused');
    assert.ok(!answered(api) && !answered(service), `api: ${api} / service: ${service}`);
  });
});
