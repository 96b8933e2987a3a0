// The SDK and the typed client it is built on, checked against the daemon's own OpenAPI
// document: every request they make (recorded by a fake daemon on a real unix socket) must
// be an operation of /openapi.json with a valid path, query and body; exec WebSocket
// messages must pass the schemas the daemon validates them with. A route the SDK uses that
// is renamed or removed, or a field it sends that the API no longer takes, fails here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Ajv } from 'ajv';
import { WebSocketServer } from 'ws';
import { Sandbox, Vessel, VesselClient } from '../../../packages/sdk/src/index.js';
import {
  ExecControlSchemas,
  ExecStartSchema,
  decodeExecData,
} from '../../../src/core/exec-stream.js';
import { buildTestApp } from '../../helpers/test-app.js';
import { makeImageEnv, makeInstanceManager, type ImageEnv } from '../../helpers/image-env.js';

type Json = Record<string, unknown>;

interface Recorded {
  readonly method: string;
  readonly url: URL;
  readonly contentType: string | undefined;
  readonly body: Buffer;
  /** Exec WebSocket messages, client → daemon. */
  readonly messages: { text?: string; binary?: Buffer }[];
}

/** Routes the API serves but leaves out of its own document. */
const UNDOCUMENTED = new Set(['GET /openapi.json']);

const INSTANCE = {
  id: 'i0000000001',
  name: 'box',
  image: 'docker.io/library/busybox:latest',
  state: 'Running',
  network: { mode: 'none' },
};

/** The operation of `doc` for a request: literal paths before templated ones. */
function operationOf(doc: Json, method: string, pathname: string) {
  const paths = doc.paths as Record<string, Record<string, Json>>;
  const templates = Object.keys(paths).sort((a, b) => a.split('{').length - b.split('{').length);
  for (const t of templates) {
    const names: string[] = [];
    const re = new RegExp(
      `^${t.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{(\w+)\}/g, (_m, n: string) => (names.push(n), '([^/]+)'))}$`,
    );
    const m = re.exec(pathname);
    const op = m && paths[t]?.[method.toLowerCase()];
    if (op) {
      const params = Object.fromEntries(names.map((n, i) => [n, decodeURIComponent(m[i + 1]!)]));
      return { template: t, op, params };
    }
  }
  return undefined;
}

/** Inline `#/components/schemas/*` references. */
function inline(schema: unknown, doc: Json): unknown {
  if (Array.isArray(schema)) return schema.map((s) => inline(s, doc));
  if (typeof schema !== 'object' || schema === null) return schema;
  const ref = (schema as { $ref?: string }).$ref;
  if (typeof ref === 'string') {
    const name = ref.replace('#/components/schemas/', '');
    return inline(((doc.components as Json).schemas as Json)[name], doc);
  }
  return Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, inline(v, doc)]));
}

/** A fake daemon: records every request and answers from the document's response shapes. */
async function fakeDaemon(doc: Json, socket: string) {
  const recorded: Recorded[] = [];
  const wss = new WebSocketServer({ noServer: true });
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://vessel');
      const entry: Recorded = {
        method: req.method ?? 'GET',
        url,
        contentType: req.headers['content-type'],
        body: Buffer.concat(parts),
        messages: [],
      };
      recorded.push(entry);
      answer(entry, res);
    });
  });
  const answer = (r: Recorded, res: http.ServerResponse): void => {
    const found = operationOf(doc, r.method, r.url.pathname);
    if (!found) {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({ code: 'not_found', message: `no route ${r.method} ${r.url.pathname}` }),
      );
      return;
    }
    const id = found.op.operationId as string;
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (id === 'waitForInstanceState')
      return json(200, { state: r.url.searchParams.get('state'), timed_out: false });
    if (id === 'listInstances') return json(200, [INSTANCE]);
    // GET /files: a directory listing (JSON) for /tmp, a file's bytes for anything else.
    if (id === 'readInstanceFile') {
      if (r.url.searchParams.get('path') === '/tmp')
        return json(200, [
          { name: 'x', type: 'file', size: 1, mode: 420, mtime: 0, link_target: null },
        ]);
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(Buffer.from([0, 255]));
      return;
    }
    if (id === 'health') return json(200, { status: 'ok', version: 'test', uptime_seconds: 1 });
    const responses = found.op.responses as Record<string, Json>;
    const status = Object.keys(responses).find((s) => s.startsWith('2')) ?? '200';
    const content = responses[status]?.content as Record<string, Json> | undefined;
    if (!content) {
      res.writeHead(Number(status));
      res.end();
    } else if (content['text/event-stream']) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const event = {
        seq: 1,
        type: 'state',
        instance_id: INSTANCE.id,
        instance_name: 'box',
        old_state: 'Initializing',
        new_state: 'Running',
        time: new Date().toISOString(),
        state_error: null,
      };
      res.end(id === 'streamEvents' ? `event: state\ndata: ${JSON.stringify(event)}\n\n` : '');
    } else if (/Instance/.test(id)) {
      json(Number(status), INSTANCE);
    } else {
      const schema = inline(content['application/json']?.schema, doc) as { type?: string };
      json(Number(status), schema?.type === 'array' ? [] : {});
    }
  };
  server.on('upgrade', (req, sock, head) => {
    const entry: Recorded = {
      method: req.method ?? 'GET',
      url: new URL(req.url ?? '/', 'http://vessel'),
      contentType: undefined,
      body: Buffer.alloc(0),
      messages: [],
    };
    recorded.push(entry);
    const found = operationOf(doc, entry.method, entry.url.pathname);
    if (!found) {
      sock.end(
        'HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"code":"not_found","message":"no such route"}',
      );
      return;
    }
    wss.handleUpgrade(req, sock, head, (ws) => {
      if (found.op.operationId !== 'execInstanceStream') {
        if (found.op.operationId === 'attachSession')
          ws.send(
            JSON.stringify({
              type: 'attached',
              start: 0,
              from: 0,
              end: 0,
              tty: false,
              input: true,
              running: true,
            }),
          );
        ws.send(JSON.stringify({ type: 'exit', code: 0, signal: null }));
        ws.close(1000);
        return;
      }
      let stdin = false;
      const echoed: Buffer[] = [];
      const exit = (): void => {
        if (echoed.length) ws.send(Buffer.concat([Buffer.from([1]), ...echoed]));
        ws.send(JSON.stringify({ type: 'exit', code: 0, signal: null }));
        ws.close(1000);
      };
      ws.on('message', (data: Buffer, isBinary) => {
        entry.messages.push(isBinary ? { binary: data } : { text: data.toString() });
        if (isBinary) return void echoed.push(decodeExecData(data).data);
        const m = JSON.parse(data.toString()) as { type: string; stdin?: boolean };
        if (m.type === 'exec') {
          stdin = m.stdin === true;
          if (!stdin) {
            ws.send(Buffer.concat([Buffer.from([1]), Buffer.from('ok\n')]));
            exit();
          }
        } else if (m.type === 'eof' && stdin) exit();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    recorded,
    close: () =>
      new Promise<void>((resolve) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function drain(it: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of it) {
    // consume
  }
}

async function execOnce(
  c: VesselClient,
  req: Parameters<VesselClient['execStream']>[1],
): Promise<void> {
  const s = await c.execStream('box', req);
  s.resize(30, 100);
  s.signal(2);
  s.stdin.end(Buffer.from('in'));
  await Promise.all([drain(s.stdout), drain(s.stderr), s.result]);
}

type PublicMethod = {
  [K in keyof VesselClient]: VesselClient[K] extends (...args: never[]) => unknown ? K : never;
}[keyof VesselClient];

/**
 * One call of every public client method (a method added to the client without a line
 * here does not compile): the SDK hands `vessel.api` to its users.
 */
const CLIENT_CALLS: Record<
  Exclude<PublicMethod, 'close'>,
  (c: VesselClient) => Promise<unknown>
> = {
  health: (c) => c.health(),
  resources: (c) => c.resources({ refresh: true }),
  pullImage: (c) => c.pullImage('busybox:latest'),
  listImages: (c) => c.listImages(),
  getImage: (c) => c.getImage('docker.io/library/busybox:latest'),
  deleteImage: (c) => c.deleteImage('busybox:latest'),
  gcImages: (c) => c.gcImages(),
  importImage: (c) => c.importImage(Readable.from([Buffer.from('not a tar')]), 'imported:1'),
  pullKernel: (c) => c.pullKernel('debian-cloud-6.1'),
  listKernels: (c) => c.listKernels(),
  deleteKernel: (c) => c.deleteKernel('debian-cloud-6.1', '6.1.0-1-cloud-amd64'),
  createIngress: (c) =>
    c.createIngress({
      name: 'web',
      instance: 'box',
      hostname: 'a.example.com',
      guest_port: 80,
      host_port: 8080,
    }),
  listIngresses: (c) => c.listIngresses(),
  getIngress: (c) => c.getIngress('web'),
  deleteIngress: (c) => c.deleteIngress('web'),
  listVolumes: (c) => c.listVolumes({ tags: { team: 'web' } }),
  createVolume: (c) => c.createVolume({ name: 'data', size_gb: 1, tags: { team: 'web' } }),
  createVolumeFromArchive: (c) =>
    c.createVolumeFromArchive(Readable.from([Buffer.alloc(1024)]), { name: 'data', size_gb: 1 }),
  getVolume: (c) => c.getVolume('data'),
  deleteVolume: (c) => c.deleteVolume('data'),
  attachVolume: (c) =>
    c.attachVolume('box', 'data', { mount_path: '/data', readonly: true, overlay: false }),
  detachVolume: (c) => c.detachVolume('box', 'data'),
  metrics: (c) => c.metrics(),
  openapi: (c) => c.openapi(),
  capabilities: (c) => c.capabilities(),
  updateInstance: (c) =>
    c.updateInstance('box', { env: { A: '2' }, tags: { team: 'web' }, ttl: '1h' }),
  statInstancePath: (c) => c.statInstancePath('box', '/etc/hosts', true),
  getInstanceArchive: async (c) => drain((await c.getInstanceArchive('box', '/etc')).stream),
  putInstanceArchive: (c) =>
    c.putInstanceArchive('box', '/tmp', Readable.from([Buffer.alloc(1024)])),
  prepareWorkspace: (c) =>
    c.prepareWorkspace('box', Readable.from([Buffer.alloc(1024)]), {
      path: '/work',
      head: 'a'.repeat(40),
      branch: 'main',
    }),
  workspacePatch: async (c) => drain(await c.workspacePatch('box', '/work')),
  readInstanceFile: async (c) => drain(await c.readInstanceFile('box', '/etc/hosts')),
  listInstanceFiles: (c) => c.listInstanceFiles('box', '/tmp'),
  writeInstanceFile: (c) => c.writeInstanceFile('box', '/tmp/a b', 'hi', { mode: 0o600 }),
  removeInstanceFile: (c) => c.removeInstanceFile('box', '/tmp/a b', { recursive: true }),
  instanceStats: (c) => c.instanceStats('box'),
  createInstance: (c) =>
    c.createInstance({
      image: 'busybox',
      name: 'box',
      cmd: ['sleep', '1'],
      env: ['A=1'],
      vcpus: 1,
      memory_mib: 128,
      network: { mode: 'none' },
      ports: [{ host_port: 8080, guest_port: 80 }],
    }),
  listInstances: (c) => c.listInstances({ state: 'Running', tags: { team: 'web' } }),
  getInstance: (c) => c.getInstance('box'),
  deleteInstance: (c) => c.deleteInstance('box', { deleteSnapshots: true }),
  startInstance: (c) => c.startInstance('box'),
  stopInstance: (c) => c.stopInstance('box', 5),
  execInstance: (c) =>
    c.execInstance('box', { argv: ['true'], env: ['A=1'], cwd: '/', stdin: 'x' }),
  execStream: (c) =>
    execOnce(c, {
      argv: ['cat'],
      env: ['A=1'],
      cwd: '/',
      tty: true,
      rows: 24,
      cols: 80,
      stdin: true,
    }),
  execBytes: (c) =>
    c.execBytes(
      'box',
      { argv: ['true'], stdin: 'x' },
      { stdout: () => undefined, stderr: () => undefined },
    ),
  instanceLogBytes: (c) =>
    drain(c.instanceLogBytes('box', { follow: true, tail: 10, source: 'app' })),
  listSessions: (c) => c.listSessions('box'),
  startSession: (c) =>
    c.startSession('box', {
      name: 'dev',
      command: ['sh', '-c', 'sleep 1'],
      env: ['A=1'],
      cwd: '/',
      tty: true,
      rows: 30,
      cols: 100,
      buffer_bytes: 65536,
      input: 'shared',
    }),
  getSession: (c) => c.getSession('box', 'dev'),
  signalSession: (c) => c.signalSession('box', 'dev', 2),
  deleteSession: (c) => c.deleteSession('box', 'dev', { force: true }),
  sessionLogs: async (c) => drain(await c.sessionLogs('box', 'dev', { from: 3, follow: true })),
  attachSession: async (c) => {
    const s = await c.attachSession('box', 'dev', { from: 0, input: true, follow: false });
    await Promise.all([drain(s.stdout), drain(s.stderr), s.result]);
  },
  attach: async (c) => {
    const s = await c.attach('box', { logs: false });
    await Promise.all([drain(s.stdout), drain(s.stderr), s.result]);
  },
  instanceAction: async (c) => {
    for (const a of ['pause', 'resume', 'standby', 'restore'] as const)
      await c.instanceAction('box', a);
  },
  forkInstance: (c) => c.forkInstance('box', 'copy'),
  createSnapshot: (c) =>
    c.createSnapshot('box', {
      kind: 'Standby',
      name: 'base',
      tags: { team: 'web' },
      compression: { enabled: true, algorithm: 'zstd', level: 3 },
    }),
  listSnapshots: (c) =>
    c.listSnapshots({ instance: 'box', kind: 'Standby', name: 'base', tags: { team: 'web' } }),
  getSnapshot: (c) => c.getSnapshot('base'),
  deleteSnapshot: (c) => c.deleteSnapshot('base'),
  restoreSnapshot: (c) => c.restoreSnapshot('box', 'base', { target_state: 'Running' }),
  forkSnapshot: (c) => c.forkSnapshot('base', { name: 'copy', target_state: 'Standby' }),
  waitInstance: (c) => c.waitInstance('box', 'Running', 5),
  events: (c) => drain(c.events({ instance: 'box', types: ['state', 'delete'] })),
  instanceLogs: (c) => drain(c.instanceLogs('box', { follow: true, tail: 10, source: 'app' })),
  imageEvents: (c) => drain(c.imageEvents('docker.io/library/busybox:latest')),
  createBuild: (c) =>
    c.createBuild(
      {
        image: 'app:1',
        dockerfile: 'FROM busybox\nRUN true\n',
        dockerfile_path: 'Dockerfile',
        build_args: { A: '1' },
        target: 'app',
        no_cache: true,
        network: 'egress',
        tags: { team: 'web' },
      },
      Readable.from([Buffer.alloc(1024)]),
    ),
  listBuilds: (c) => c.listBuilds(),
  getBuild: (c) => c.getBuild('build-1'),
  cancelBuild: (c) => c.cancelBuild('build-1'),
  buildEvents: (c) => drain(c.buildEvents('build-1')),
  listCatalog: (c) => c.listCatalog(),
  buildCatalogImage: (c) => c.buildCatalogImage('debian-bookworm'),
};

describe('SDK and client requests match the daemon’s OpenAPI document', () => {
  let env: ImageEnv;
  let doc: Json;
  let dir: string;
  let fake: Awaited<ReturnType<typeof fakeDaemon>>;
  const strict = new Ajv({ coerceTypes: false, strict: false, allErrors: true });
  const coercing = new Ajv({ coerceTypes: 'array', strict: false, allErrors: true });

  before(async () => {
    env = await makeImageEnv();
    const app = await buildTestApp(env, {
      instances: makeInstanceManager(env),
      version: 'test',
      probeHost: () => Promise.reject(new Error('not probed')),
    });
    doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json<Json>();
    await app.close();
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-sdk-drift-'));
    fake = await fakeDaemon(doc, path.join(dir, 'vessel.sock'));
  });

  after(async () => {
    await fake?.close();
    await env?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Problems of one recorded request against the document; empty when it conforms. */
  function problems(r: Recorded): string[] {
    const what = `${r.method} ${r.url.pathname}`;
    if (UNDOCUMENTED.has(what)) return [];
    const found = operationOf(doc, r.method, r.url.pathname);
    if (!found) return [`${what}: no such operation in /openapi.json`];
    const out: string[] = [];
    const params = (found.op.parameters ?? []) as {
      name: string;
      in: string;
      required?: boolean;
      schema: Json;
    }[];
    const check = (ajv: Ajv, schema: unknown, value: unknown, where: string): void => {
      const validate = ajv.compile(inline(schema, doc) as Json);
      if (!validate(value))
        out.push(
          `${what} (${found.op.operationId as string}): ${where}: ${ajv.errorsText(validate.errors)}`,
        );
    };
    for (const p of params.filter((x) => x.in === 'path'))
      check(coercing, p.schema, found.params[p.name], `path {${p.name}}`);
    const query = params.filter((x) => x.in === 'query');
    for (const [k, v] of r.url.searchParams) {
      // deepObject style: `tags[team]=web` is key `team` of the object parameter `tags`.
      const deep = /^(\w+)\[(.+)\]$/.exec(k);
      const p = deep
        ? query.find((x) => x.name === deep[1] && (x as { style?: string }).style === 'deepObject')
        : query.find((x) => x.name === k);
      if (!p) out.push(`${what}: query parameter "${k}" is not in the document`);
      else if (deep) check(coercing, p.schema, { [deep[2]!]: v }, `query ${k}`);
      else check(coercing, { type: 'object', properties: { v: p.schema } }, { v }, `query ${k}`);
    }
    for (const p of query.filter((x) => x.required && !r.url.searchParams.has(x.name)))
      out.push(`${what}: required query parameter "${p.name}" is missing`);
    const body = found.op.requestBody as
      { content: Record<string, { schema: unknown }> } | undefined;
    if (!body) {
      if (r.body.length > 0) out.push(`${what}: sends a body the operation does not take`);
    } else {
      const type = (r.contentType ?? '').split(';')[0]!.trim();
      const media = body.content[type];
      const json = inline(body.content['application/json']?.schema, doc) as { required?: string[] };
      // No body where every field is optional: the daemon treats it as `{}`.
      if (r.body.length === 0 && type === '' && json && !json.required?.length) return out;
      if (!media)
        out.push(`${what}: content type "${type}" not in ${Object.keys(body.content).join(', ')}`);
      else if (type === 'application/json')
        check(strict, media.schema, JSON.parse(r.body.toString() || 'null'), 'body');
    }
    for (const [i, m] of r.messages.entries()) {
      if (m.binary) {
        if (decodeExecData(m.binary).stream !== 'stdin')
          out.push(`${what}: message ${i} is not stdin`);
        continue;
      }
      const msg = JSON.parse(m.text!) as { type: keyof typeof ExecControlSchemas | 'exec' };
      const schema =
        i === 0 ? ExecStartSchema : ExecControlSchemas[msg.type as keyof typeof ExecControlSchemas];
      if (!schema) out.push(`${what}: message ${i} has unknown type ${msg.type}`);
      else check(strict, schema, msg, `message ${i}`);
    }
    return out;
  }

  test('every request of the SDK facade is an operation of the document', async () => {
    fake.recorded.length = 0;
    const vessel = new Vessel({ dataDir: dir });
    const sb = await Sandbox.create({
      vessel,
      image: 'busybox',
      name: 'box',
      env: { A: '1' },
      vcpus: 1,
      memoryMib: 128,
      diskBytes: 64 * 1024 * 1024,
      workdir: '/',
      user: '0:0',
      network: { mode: 'none' },
      ports: [{ hostPort: 8080, guestPort: 80, protocol: 'tcp', hostIp: '127.0.0.1' }],
      timeoutMs: 5000,
    });
    await sb.commands.run('echo hi', { env: { B: '2' }, cwd: '/tmp', user: 'root' });
    await sb.commands.run(['cat'], { stdin: Buffer.from([0, 1, 2]) });
    await (await sb.commands.start('top', { tty: { rows: 24, cols: 80 } })).wait();
    await sb.files.write('/tmp/x', Buffer.from([255]));
    await sb.files.read('/tmp/x', { format: 'bytes' });
    await sb.files.list('/tmp');
    await Sandbox.connect('box', { vessel });
    await Sandbox.list({ vessel });
    await sb.getInfo();
    await sb.stop({ timeoutSeconds: 5 });
    await sb.kill();
    await sb.start({ timeoutMs: 5000 });
    await sb.pause();
    await sb.resume();
    await sb.standby();
    await sb.restore();
    await sb.waitFor('Running', { timeoutMs: 5000 });
    await drain(sb.events({ types: ['state'] }));
    await drain(vessel.events({ instance: 'box', types: ['create', 'delete'] }));
    await vessel.health();
    await sb.delete();
    await vessel.close();

    const ops = new Set(
      fake.recorded.map((r) => operationOf(doc, r.method, r.url.pathname)?.op.operationId),
    );
    for (const op of [
      'createInstance',
      'waitForInstanceState',
      'execInstanceStream',
      'streamEvents',
      'deleteInstance',
      'standbyInstance',
      'restoreInstance',
      'stopInstance',
    ])
      assert.ok(ops.has(op), `the facade did not call ${op}`);
    assert.deepEqual(fake.recorded.flatMap(problems), []);
  });

  test('every request of every public client method is an operation of the document', async () => {
    const client = new VesselClient({ socketPath: path.join(dir, 'vessel.sock') });
    try {
      for (const [name, call] of Object.entries(CLIENT_CALLS)) {
        fake.recorded.length = 0;
        // Only the requests matter here, not what the fake answers.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          call(client).catch(() => undefined),
          new Promise((resolve) => (timer = setTimeout(resolve, 5000))),
        ]);
        clearTimeout(timer);
        assert.ok(fake.recorded.length > 0, `${name} made no request`);
        assert.deepEqual(fake.recorded.flatMap(problems), [], name);
      }
    } finally {
      await client.close();
    }
  });

  test('the check itself: a renamed route, an unknown field and an unknown query parameter fail', () => {
    const rec = (method: string, url: string, body?: unknown): Recorded => ({
      method,
      url: new URL(url, 'http://vessel'),
      contentType: body === undefined ? undefined : 'application/json',
      body: Buffer.from(body === undefined ? '' : JSON.stringify(body)),
      messages: [],
    });
    assert.match(problems(rec('POST', '/sandboxes', { image: 'x' })).join(), /no such operation/);
    assert.match(problems(rec('POST', '/instances', { image: 'x', memory: 1 })).join(), /body/);
    assert.match(problems(rec('GET', '/instances/box/wait?state=Running&secs=1')).join(), /"secs"/);
    assert.match(problems(rec('GET', '/instances/box/wait?state=Flying')).join(), /query state/);
    assert.deepEqual(problems(rec('POST', '/instances', { image: 'x', memory_mib: 128 })), []);
  });
});
