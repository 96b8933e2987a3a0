// Two real VMs behind the ingress: a daemon inside a network namespace this test creates
// (and deletes), two busybox httpd guests with published ports (user-mode networking, which
// works everywhere), an exact route and a `{instance}` pattern route, requests sent from
// inside the namespace.
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import {
  netnsSkipReason,
  startNetnsDaemon,
  waitForState,
  type NetnsDaemon,
} from '../helpers/netns.js';

const why = await netnsSkipReason();
const INGRESS_PORT = 18000;

describe('ingress to two VMs in a network namespace', { skip: why }, () => {
  let d: NetnsDaemon;
  const tmp = path.join(os.tmpdir(), `vessel-ingress-vms-${process.pid}`);

  /** GET through the ingress from inside the namespace: status and body. */
  const get = async (host: string): Promise<{ status: number; body: string }> => {
    const script = `require('http').get({host:'127.0.0.1',port:${INGRESS_PORT},path:'/',headers:{host:${JSON.stringify(host)}}},(r)=>{let b='';r.on('data',(d)=>b+=d);r.on('end',()=>process.stdout.write(JSON.stringify({status:r.statusCode,body:b})))}).on('error',(e)=>{process.stdout.write(JSON.stringify({status:-1,body:e.code}))})`;
    const r = await d.ns.exec(process.execPath, ['-e', script]);
    return JSON.parse(r.stdout) as { status: number; body: string };
  };

  before(async () => {
    await fs.mkdir(tmp, { recursive: true });
    d = await startNetnsDaemon({ config: { network: { default_mode: 'user' } } });
    const spec = await busyboxImage();
    spec.layers.push([
      { path: 'www', type: 'dir' },
      { path: 'www/one', type: 'dir' },
      { path: 'www/one/index.html', content: 'page of one\n' },
      { path: 'www/two', type: 'dir' },
      { path: 'www/two/index.html', content: 'page of two\n' },
    ]);
    const archive = path.join(tmp, 'image.tar');
    await writeDockerArchive(archive, spec, 'ingress/busybox:1');
    const image = (await d.client.importImage(createReadStream(archive))).name;
    for (const [name, port] of [
      ['one', 18081],
      ['two', 18082],
    ] as const) {
      await d.client.createInstance({
        image,
        name,
        cmd: ['busybox', 'httpd', '-f', '-p', '80', '-h', `/www/${name}`],
        ports: [{ host_port: port, guest_port: 80 }],
      });
    }
  });

  after(async () => {
    await d?.close();
    await fs.rm(tmp, { recursive: true, force: true });
  });

  test('two hostnames reach two VMs; a pattern picks the VM by label; unknown names are clear errors', async () => {
    await waitForState(d.client, 'one', 'Running');
    await waitForState(d.client, 'two', 'Running');
    await d.client.createIngress({
      name: 'front',
      instance: 'one',
      hostname: 'front.test',
      guest_port: 80,
      host_port: INGRESS_PORT,
    });
    const c = await d.cli([
      'ingress',
      'create',
      'vms',
      '--hostname',
      '{instance}.vms.test',
      '--guest-port',
      '80',
      '--host-port',
      String(INGRESS_PORT),
    ]);
    assert.equal(c.code, 0, c.stderr);
    // httpd may need a moment after Running; retry the first request briefly.
    const deadline = Date.now() + 60_000;
    let front = await get('front.test');
    while (front.status !== 200 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      front = await get('front.test');
    }
    assert.deepEqual(front, { status: 200, body: 'page of one\n' });
    assert.deepEqual(await get('TWO.vms.test:18000'), { status: 200, body: 'page of two\n' });
    assert.deepEqual(await get('one.vms.test'), { status: 200, body: 'page of one\n' });
    const ghost = await get('ghost.vms.test');
    assert.equal(ghost.status, 502);
    assert.match(ghost.body, /instance "ghost" not found/);
    assert.equal((await get('elsewhere.test')).status, 404);
    // A stopped VM: its published port is closed, so the backend refuses.
    await d.client.stopInstance('two');
    const down = await get('two.vms.test');
    assert.equal(down.status, 502);
    assert.match(down.body, /backend 127\.0\.0\.1:18082 of instance "two" failed/);
  });
});
