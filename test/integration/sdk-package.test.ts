// The SDK as another Node project gets it: `npm pack` of packages/sdk, installed into a fresh
// temp project (offline, from the npm cache the root install filled, through a lockfile made
// from the root one), type-checked there, and run there against a real daemon and microVM.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VesselClient } from '../../src/client/index.js';
import { defaultConfig } from '../../src/core/config.js';
import { silentLogger } from '../../src/core/logger.js';
import { run } from '../../src/core/process.js';
import { Daemon } from '../../src/daemon/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { seedKernel } from '../helpers/vm-daemon.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const SDK = path.join(ROOT, 'packages/sdk');
const why = await vmSkipReason();

type LockEntry = { dependencies?: Record<string, string> } & Record<string, unknown>;

/** A project depending on `tarball` only, with a lockfile whose other entries are the root's. */
async function writeProject(dir: string, tarball: string, integrity: string): Promise<void> {
  const rootLock = JSON.parse(await fs.readFile(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, LockEntry>;
  };
  const sdk = JSON.parse(await fs.readFile(path.join(SDK, 'package.json'), 'utf8')) as {
    version: string;
    dependencies: Record<string, string>;
  };
  const spec = `file:${path.relative(dir, tarball)}`;
  const packages: Record<string, LockEntry> = {
    '': { name: 'sdk-consumer', dependencies: { '@vessel/sdk': spec } },
    'node_modules/@vessel/sdk': {
      version: sdk.version,
      resolved: spec,
      integrity,
      dependencies: sdk.dependencies,
    },
  };
  const todo = Object.keys(sdk.dependencies);
  for (let name = todo.pop(); name !== undefined; name = todo.pop()) {
    const key = `node_modules/${name}`;
    if (packages[key]) continue;
    const entry = rootLock.packages[key];
    assert.ok(entry, `${name} is not in the root package-lock.json`);
    packages[key] = entry;
    todo.push(...Object.keys(entry.dependencies ?? {}));
  }
  const manifest = {
    name: 'sdk-consumer',
    private: true,
    type: 'module',
    dependencies: { '@vessel/sdk': spec },
  };
  await fs.writeFile(path.join(dir, 'package.json'), JSON.stringify(manifest, null, 2));
  await fs.writeFile(
    path.join(dir, 'package-lock.json'),
    JSON.stringify({ name: 'sdk-consumer', lockfileVersion: 3, requires: true, packages }, null, 2),
  );
}

/** The consumer's program: plain JavaScript, the package's public entry point only. */
const SCRIPT = `
import { createHash } from 'node:crypto';
import { Sandbox, Vessel, isVesselError } from '@vessel/sdk';

const sha = (b) => createHash('sha256').update(b).digest('hex');
const vessel = new Vessel(); // VESSEL_DATA_DIR names the daemon, as for the CLI
const sandbox = await Sandbox.create({ vessel, image: process.env.IMAGE, name: 'packed', network: { mode: 'none' } });
try {
  const data = Buffer.alloc(256 * 1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 8)) & 255;
  const r = await sandbox.commands.run(['/bin/sh', '-c', 'cat; echo to-stderr >&2; exit 5'], { stdin: data });
  const raw = await sandbox.commands.run("printf '\\\\000\\\\377\\\\001'");
  let missing = null;
  await sandbox.commands.run(['/no/such/program']).catch((e) => (missing = isVesselError(e) ? e.code : String(e)));
  console.log(JSON.stringify({
    state: sandbox.state,
    sha: sha(r.stdoutBytes),
    want: sha(data),
    stderr: r.stderr,
    exitCode: r.exitCode,
    raw: raw.stdoutBytes.toString('hex'),
    missing,
  }));
} finally {
  await sandbox.delete();
  await vessel.close();
}
`;

/** The same API from TypeScript: the package's declarations must resolve and type-check. */
const TYPED = `
import { Sandbox, Vessel, isVesselError, type CommandResult, type Instance } from '@vessel/sdk';
const vessel = new Vessel({ baseUrl: 'http://127.0.0.1:7420', token: 'x'.repeat(16) });
const sandbox: Sandbox = await Sandbox.create({ vessel, image: 'alpine', memoryMib: 256 });
const r: CommandResult = await sandbox.commands.run(['cat'], { stdin: Buffer.from('x'), timeoutMs: 1000 });
const bytes: Buffer = r.stdoutBytes;
const code: number = r.exitCode;
const text: string = await sandbox.files.read('/etc/hostname');
const raw: Buffer = await sandbox.files.read('/bin/sh', { format: 'bytes' });
const all: Instance[] = await Sandbox.list({ vessel });
for await (const e of vessel.events({ types: ['state'] })) console.log(e.new_state);
console.log(bytes, code, text, raw, all, isVesselError(null, 'not_found'));
`;

describe('the packed SDK in a fresh project', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let daemon: Daemon;
  let client: VesselClient;
  let image: string;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-sdk-pkg-'));
    const data = path.join(dir, 'data');
    await seedKernel(data);
    const config = defaultConfig(data);
    daemon = new Daemon({
      config: { ...config, dns: { ...config.dns, enabled: false } },
      logger: silentLogger(),
    });
    await daemon.start();
    client = new VesselClient({ socketPath: daemon.paths.socket });
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'sdkpkg/busybox:1');
    image = (await client.importImage(createReadStream(archive))).name;
  });

  after(async () => {
    for (const i of (await client?.listInstances().catch(() => [])) ?? [])
      await client.deleteInstance(i.id).catch(() => undefined);
    await client?.close();
    await daemon?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('npm pack, install offline, type-check, and run: bytes, stderr, exit code', async () => {
    const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], {
      cwd: SDK,
      timeoutMs: 120_000,
    });
    const [info] = JSON.parse(packed.stdout) as { filename: string; integrity: string }[];
    assert.ok(info);
    const project = path.join(dir, 'consumer');
    await fs.mkdir(project);
    await writeProject(project, path.join(dir, info.filename), info.integrity);
    await run('npm', ['ci', '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], {
      cwd: project,
      timeoutMs: 300_000,
    });
    const installed = await fs.readdir(path.join(project, 'node_modules'));
    assert.deepEqual(installed.filter((n) => !n.startsWith('.')).sort(), [
      '@sinclair',
      '@vessel',
      'ws',
    ]);

    await fs.writeFile(path.join(project, 'typed.ts'), TYPED);
    await fs.writeFile(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          types: ['node'],
          typeRoots: [path.join(ROOT, 'node_modules/@types')],
        },
        files: ['typed.ts'],
      }),
    );
    const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
    const typed = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], {
      cwd: project,
      timeoutMs: 300_000,
      allowFailure: true,
    });
    assert.equal(typed.code, 0, typed.stdout + typed.stderr);

    await fs.writeFile(path.join(project, 'main.mjs'), SCRIPT);
    const out = await run(process.execPath, ['main.mjs'], {
      cwd: project,
      env: { PATH: process.env.PATH ?? '', VESSEL_DATA_DIR: path.join(dir, 'data'), IMAGE: image },
      timeoutMs: 300_000,
      allowFailure: true,
    });
    assert.equal(out.code, 0, out.stderr);
    const r = JSON.parse(out.stdout) as Record<string, unknown>;
    assert.equal(r.state, 'Running');
    assert.equal(r.sha, r.want);
    assert.equal(r.stderr, 'to-stderr\n');
    assert.equal(r.exitCode, 5);
    assert.equal(r.raw, '00ff01');
    assert.equal(r.missing, 'not_found');
    assert.deepEqual(await client.listInstances(), [], 'the script deleted its sandbox');
  });
});
