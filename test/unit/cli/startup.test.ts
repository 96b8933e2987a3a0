// What a CLI command loads before it does anything (bench P8: `vessel ps` within 2.5× a bare
// `node`). The real binary runs under a module-resolution hook that logs every module it
// loads; `ps` talks to a stub daemon on a unix socket (two routes), so no daemon is started.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { COMMAND_MODULES, modulesFor } from '../../../src/cli/main.js';
import { BIN } from '../../helpers/cli.js';

const DIST_SRC = fileURLToPath(new URL('../../../src/', import.meta.url));

/** Packages any command may load before it runs: the argument parser, nothing else. */
const LIGHT_PACKAGES = ['commander'];
/** Subsystems of the client side (ARCHITECTURE.md); `main.js` is the entry point. */
const CLIENT_SIDE = ['cli', 'client', 'core'];

const HOOKS = `import fs from 'node:fs';
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  fs.appendFileSync(process.env.VESSEL_TEST_MODULE_LOG, r.url + '\\n');
  return r;
}
`;
const REGISTER = `import { register } from 'node:module';
register('./hooks.mjs', import.meta.url);
`;

interface Loaded {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** Packages under node_modules, by name. */
  readonly packages: string[];
  /** Compiled project modules, relative to dist/src/ (`cli/main.js`). */
  readonly modules: string[];
}

let dir: string;
let server: http.Server;

async function loaded(args: readonly string[]): Promise<Loaded> {
  const log = path.join(dir, `modules-${Math.random().toString(36).slice(2)}.log`);
  await fs.writeFile(log, '');
  const { VESSEL_HOST: _host, VESSEL_TOKEN: _token, ...env } = process.env;
  const child = spawn(
    process.execPath,
    ['--import', pathToFileURL(path.join(dir, 'register.mjs')).href, BIN, ...args],
    { env: { ...env, VESSEL_TEST_MODULE_LOG: log }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number>((resolve) => child.on('close', (c) => resolve(c ?? -1)));
  const urls = new Set((await fs.readFile(log, 'utf8')).split('\n').filter(Boolean));
  const packages = new Set<string>();
  const modules = new Set<string>();
  for (const url of urls) {
    if (!url.startsWith('file:')) continue;
    const file = fileURLToPath(url);
    const pkg = /[\\/]node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(file)?.[1];
    if (pkg) packages.add(pkg.replace(/\\/g, '/'));
    else if (file.startsWith(DIST_SRC)) modules.add(path.relative(DIST_SRC, file));
  }
  return { code, stdout, stderr, packages: [...packages].sort(), modules: [...modules].sort() };
}

function assertClientSideOnly(r: Loaded, what: string): void {
  // The hook must have seen the CLI, or the other checks prove nothing.
  assert.ok(
    r.modules.includes(path.join('cli', 'main.js')),
    `${what}: hook saw ${r.modules.join(', ')}`,
  );
  assert.deepEqual(
    r.packages.filter((p) => !LIGHT_PACKAGES.includes(p)),
    [],
    `${what} loaded packages beyond ${LIGHT_PACKAGES.join(', ')}`,
  );
  const outside = r.modules.filter(
    (m) => m !== 'main.js' && !CLIENT_SIDE.includes(m.split(path.sep)[0]!),
  );
  assert.deepEqual(outside, [], `${what} loaded modules outside ${CLIENT_SIDE.join(', ')}`);
}

describe('CLI startup loads only what the command needs', () => {
  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-startup-'));
    await fs.writeFile(path.join(dir, 'hooks.mjs'), HOOKS);
    await fs.writeFile(path.join(dir, 'register.mjs'), REGISTER);
    server = http.createServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      if (req.url === '/health') {
        res.end(JSON.stringify({ status: 'ok', version: 'stub', uptime_seconds: 1 }));
      } else if (req.url === '/instances') res.end('[]');
      else {
        res.statusCode = 404;
        res.end(JSON.stringify({ code: 'not_found', message: `stub has no ${req.url}` }));
      }
    });
    await new Promise<void>((resolve) => server.listen(path.join(dir, 'vessel.sock'), resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('`vessel ps` against a daemon: commander, cli, client and core only', async () => {
    const r = await loaded(['--data-dir', dir, 'ps']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ID\s+NAME/);
    assertClientSideOnly(r, 'vessel ps');
    assert.ok(r.modules.includes(path.join('client', 'transport.js')), 'ps went over the client');
  });

  test('`vessel --version`: no command module at all', async () => {
    const r = await loaded(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assertClientSideOnly(r, 'vessel --version');
    assert.deepEqual(
      r.modules.filter((m) => m.startsWith(`cli${path.sep}commands`)),
      [],
      'no command module for --version',
    );
  });

  test('`vessel --help` registers every command, each module light', async () => {
    const r = await loaded(['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const m of COMMAND_MODULES) {
      for (const name of m.names) assert.match(r.stdout, new RegExp(`^  ${name}\\b`, 'm'));
    }
    assertClientSideOnly(r, 'vessel --help');
  });

  test('`vessel daemon --help` does not load the daemon', async () => {
    const r = await loaded(['daemon', '--help']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /--ready-fd/);
    assertClientSideOnly(r, 'vessel daemon --help');
  });
});

describe('command modules', () => {
  test('each module registers exactly the top-level names COMMAND_MODULES lists', async () => {
    const seen = new Set<string>(['daemon']);
    for (const m of COMMAND_MODULES) {
      const program = new Command().enablePositionalOptions();
      (await m.load())(
        program,
        () => ({}),
        () => {},
      );
      const names = program.commands.flatMap((c) => [c.name(), ...c.aliases()]);
      assert.deepEqual([...names].sort(), [...m.names].sort());
      for (const n of names) {
        assert.ok(!seen.has(n), `"${n}" is registered twice`);
        seen.add(n);
      }
    }
  });

  test('modulesFor picks the module that owns the command', () => {
    const owner = (name: string) => COMMAND_MODULES.filter((m) => m.names.includes(name));
    assert.deepEqual(modulesFor(['ps']), owner('ps'));
    assert.deepEqual(modulesFor(['--data-dir', '/d', '--json', 'ps', '-a']), owner('ps'));
    assert.deepEqual(modulesFor(['--data-dir=/d', '-H', 'h:1', '--token', 't', 'image', 'ls']), [
      ...owner('image'),
    ]);
    assert.deepEqual(modulesFor(['help', 'wait']), owner('wait'));
    assert.deepEqual(modulesFor(['ps', '--help']), owner('ps'));
    assert.deepEqual(modulesFor(['--version']), []);
    assert.deepEqual(modulesFor(['daemon', '--ready-fd', '3']), []);
    // Help and unknown commands list everything.
    for (const argv of [[], ['--help'], ['help'], ['nope'], ['-x', 'ps']]) {
      assert.deepEqual(modulesFor(argv), COMMAND_MODULES, argv.join(' '));
    }
  });
});
