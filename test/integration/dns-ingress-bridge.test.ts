// Names and ingress with bridge networking: a daemon inside a network namespace this test
// creates (and deletes), two VMs on the bridge. Proves `<name>.vm` resolves from another VM
// (through the gateway's port 53) and from the namespace (the daemon's loopback listener),
// and that the ingress routes two hostnames straight to the two guests' addresses.
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import {
  startNetnsDaemon,
  waitForState,
  type NetnsDaemon,
  bridgeSkipReason,
} from '../helpers/netns.js';

const why = await bridgeSkipReason();
const INGRESS_PORT = 18000;
const DNS_PORT = 10053;

describe('DNS names and ingress on the bridge', { skip: why }, () => {
  let d: NetnsDaemon;
  const tmp = path.join(os.tmpdir(), `vessel-dns-bridge-${process.pid}`);

  /** Run a node script inside the namespace and parse its JSON output. */
  const inNs = async <T>(script: string): Promise<T> => {
    const r = await d.ns.exec(process.execPath, ['-e', script]);
    return JSON.parse(r.stdout) as T;
  };
  const get = (host: string) =>
    inNs<{ status: number; body: string }>(
      `require('http').get({host:'127.0.0.1',port:${INGRESS_PORT},path:'/',headers:{host:${JSON.stringify(host)}}},(r)=>{let b='';r.on('data',(d)=>b+=d);r.on('end',()=>process.stdout.write(JSON.stringify({status:r.statusCode,body:b})))}).on('error',(e)=>process.stdout.write(JSON.stringify({status:-1,body:e.code})))`,
    );
  /** An A query from the namespace; the answer's address, or the rcode. */
  const resolve = (server: string, name: string) =>
    inNs<{ rcode: number; ip: string | null }>(
      `const s=require('dgram').createSocket('udp4');const n=${JSON.stringify(name)}.split('.');const q=Buffer.concat([Buffer.from([0,7,1,0,0,1,0,0,0,0,0,0]),...n.map((l)=>Buffer.concat([Buffer.from([l.length]),Buffer.from(l)])),Buffer.from([0,0,1,0,1])]);s.on('message',(m)=>{const rc=m[3]&15;const an=m.readUInt16BE(6);process.stdout.write(JSON.stringify({rcode:rc,ip:an?[...m.subarray(m.length-4)].join('.'):null}));s.close()});setTimeout(()=>{process.stdout.write(JSON.stringify({rcode:-1,ip:null}));process.exit(0)},5000).unref();s.send(q,${DNS_PORT},${JSON.stringify(server)})`,
    );

  before(async () => {
    await fs.mkdir(tmp, { recursive: true });
    d = await startNetnsDaemon({
      config: {
        network: { subnet: '10.99.0.0/24', tap_pool_size: 1, default_mode: 'bridge' },
        // Nothing leaves the namespace: other names go to a dead loopback port.
        dns: { listen: [`127.0.0.1:${DNS_PORT}`], upstream: '127.0.0.1:9', timeout_ms: 500 },
      },
    });
    const spec = await busyboxImage();
    spec.layers.push([
      { path: 'www', type: 'dir' },
      { path: 'www/one', type: 'dir' },
      { path: 'www/one/index.html', content: 'bridge page of one\n' },
      { path: 'www/two', type: 'dir' },
      { path: 'www/two/index.html', content: 'bridge page of two\n' },
    ]);
    const archive = path.join(tmp, 'image.tar');
    await writeDockerArchive(archive, spec, 'dns/busybox:1');
    const image = (await d.client.importImage(createReadStream(archive))).name;
    for (const name of ['one', 'two']) {
      await d.client.createInstance({
        image,
        name,
        cmd: ['busybox', 'httpd', '-f', '-p', '80', '-h', `/www/${name}`],
        network: { mode: 'bridge' },
      });
    }
  });

  after(async () => {
    await d?.close();
    await fs.rm(tmp, { recursive: true, force: true });
  });

  test('<name>.vm resolves from another VM and from the namespace; the ingress reaches both guests', async () => {
    const one = await waitForState(d.client, 'one', 'Running');
    const two = await waitForState(d.client, 'two', 'Running');
    assert.equal(one.network.mode, 'bridge');
    const ipOne = one.network.ip!;
    const ipTwo = two.network.ip!;

    // From the namespace: the daemon's loopback listener and the gateway.
    assert.deepEqual(await resolve('127.0.0.1', 'one.vm'), { rcode: 0, ip: ipOne });
    assert.deepEqual(await resolve('127.0.0.1', 'TWO.VM'), { rcode: 0, ip: ipTwo });
    assert.equal((await resolve('127.0.0.1', 'ghost.vm')).rcode, 3);
    assert.equal((await resolve('127.0.0.1', 'example.com')).rcode, 2, 'dead upstream → SERVFAIL');

    // From VM two, through its configured nameserver (the gateway).
    const conf = await d.client.execInstance('two', { argv: ['cat', '/etc/resolv.conf'] });
    const ns = await d.client.execInstance('two', { argv: ['busybox', 'nslookup', 'one.vm'] });
    assert.match(
      ns.stdout,
      new RegExp(`Address:\\s+${ipOne.replaceAll('.', '\\.')}`),
      `resolv.conf: ${conf.stdout} nslookup: ${ns.stdout} ${ns.stderr}`,
    );

    await d.client.createIngress({
      name: 'br',
      hostname: '{instance}.br.test',
      guest_port: 80,
      host_port: INGRESS_PORT,
    });
    assert.deepEqual(await get('one.br.test'), { status: 200, body: 'bridge page of one\n' });
    assert.deepEqual(await get('two.br.test'), { status: 200, body: 'bridge page of two\n' });
  });
});
