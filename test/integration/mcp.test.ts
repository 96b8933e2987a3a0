// `vessel mcp` as an agent host runs it: the official MCP SDK's Client spawns
// `node bin/vessel.js mcp --data-dir <dir>` over stdio, against a real daemon and a real
// microVM: list the tools, create a sandbox, exec (text, binary, stdin, errors, timeout),
// write and read files byte for byte, list, delete.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { VesselClient } from '../../src/client/index.js';
import { defaultConfig } from '../../src/core/config.js';
import { silentLogger } from '../../src/core/logger.js';
import { Daemon } from '../../src/daemon/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { seedKernel } from '../helpers/vm-daemon.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/vessel.js');
const why = await vmSkipReason();

interface ToolResult {
  content: { type: string; text?: string }[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

describe('vessel mcp: an MCP client over stdio, a real VM', { skip: why, timeout: 900_000 }, () => {
  let dir: string;
  let daemon: Daemon;
  let api: VesselClient;
  let image: string;
  let mcp: Client;
  let stderr = '';

  const call = async (name: string, args: Record<string, unknown> = {}): Promise<ToolResult> =>
    (await mcp.callTool({ name, arguments: args })) as ToolResult;
  const ok = async (name: string, args: Record<string, unknown> = {}) => {
    const r = await call(name, args);
    assert.ok(!r.isError, `${name}: ${r.content[0]?.text ?? ''}`);
    assert.ok(r.structuredContent);
    assert.deepEqual(JSON.parse(r.content[0]?.text ?? ''), r.structuredContent);
    return r.structuredContent;
  };
  const failure = async (name: string, args: Record<string, unknown>): Promise<string> => {
    const r = await call(name, args);
    assert.equal(r.isError, true, `${name} should fail`);
    return r.content[0]?.text ?? '';
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-mcp-'));
    await seedKernel(dir);
    const config = defaultConfig(dir);
    daemon = new Daemon({
      config: { ...config, dns: { ...config.dns, enabled: false } },
      logger: silentLogger(),
    });
    await daemon.start();
    api = new VesselClient({ socketPath: daemon.paths.socket });
    const archive = path.join(dir, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'mcp/busybox:1');
    image = (await api.importImage(createReadStream(archive))).name;

    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [BIN, 'mcp', '--data-dir', dir],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: os.tmpdir() },
      stderr: 'pipe',
    });
    transport.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    mcp = new Client({ name: 'vessel-test', version: '1.0.0' });
    await mcp.connect(transport);
  });

  after(async () => {
    await mcp?.close();
    for (const i of (await api?.listInstances().catch(() => [])) ?? [])
      await api.deleteInstance(i.id).catch(() => undefined);
    await api?.close();
    await daemon?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('the server names itself and lists its tools with input schemas', async () => {
    assert.equal(mcp.getServerVersion()?.name, 'vessel');
    const { tools } = await mcp.listTools();
    assert.deepEqual(tools.map((t) => t.name).sort(), [
      'create_sandbox',
      'delete_sandbox',
      'exec',
      'list_sandboxes',
      'read_file',
      'write_file',
    ]);
    const exec = tools.find((t) => t.name === 'exec');
    assert.deepEqual(exec?.inputSchema.required?.sort(), ['command', 'id']);
    assert.ok(exec?.outputSchema, 'exec has an output schema');
  });

  test('create, exec, files, list and delete on a real VM', { timeout: 300_000 }, async () => {
    const created = await ok('create_sandbox', {
      image,
      name: 'agent',
      network: 'none',
      memory_mib: 256,
    });
    assert.deepEqual([created.name, created.state], ['agent', 'Running']);

    const shell = await ok('exec', { id: 'agent', command: 'echo hi; echo err >&2; exit 3' });
    assert.deepEqual(
      [shell.exit_code, shell.stdout, shell.stderr, shell.stdout_encoding],
      [3, 'hi\n', 'err\n', 'utf8'],
    );
    const binary = await ok('exec', {
      id: 'agent',
      command: ['/bin/sh', '-c', "printf '\\377\\000'"],
    });
    assert.equal(binary.stdout_encoding, 'base64');
    assert.equal(Buffer.from(binary.stdout as string, 'base64').toString('hex'), 'ff00');
    const piped = await ok('exec', {
      id: 'agent',
      command: ['cat'],
      stdin: 'piped ✓',
      env: { X: '1' },
    });
    assert.equal(piped.stdout, 'piped ✓');

    const blob = randomBytes(64 * 1024);
    const written = await ok('write_file', {
      id: created.id,
      path: '/tmp/agent/blob.bin',
      content: blob.toString('base64'),
      encoding: 'base64',
    });
    assert.equal(written.size, blob.length);
    const read = await ok('read_file', { id: 'agent', path: '/tmp/agent/blob.bin' });
    assert.equal(read.encoding, 'base64');
    assert.equal(sha256(Buffer.from(read.content as string, 'base64')), sha256(blob));
    await ok('write_file', { id: 'agent', path: '/tmp/agent/note.txt', content: 'héllo\n' });
    assert.deepEqual(await ok('read_file', { id: 'agent', path: '/tmp/agent/note.txt' }), {
      path: '/tmp/agent/note.txt',
      content: 'héllo\n',
      encoding: 'utf8',
      size: 7,
    });

    const listed = await ok('list_sandboxes');
    assert.deepEqual(listed.sandboxes, [
      { id: created.id, name: 'agent', image, state: 'Running' },
    ]);

    assert.match(await failure('exec', { id: 'nope', command: 'true' }), /^not_found: .*nope/);
    assert.match(await failure('read_file', { id: 'agent', path: '/tmp/none' }), /^not_found: /);
    assert.match(
      await failure('exec', { id: 'agent', command: 'sleep 30', timeout_seconds: 1 }),
      /^timeout: /,
    );
    assert.match(
      await failure('exec', { id: 'agent', command: ['/no/such/program'] }),
      /^not_found: /,
    );
    assert.match(
      await failure('create_sandbox', { image, name: 'Bad Name!' }),
      /^invalid_argument: /,
    );

    assert.deepEqual(await ok('delete_sandbox', { id: 'agent' }), { deleted: 'agent' });
    assert.deepEqual((await ok('list_sandboxes')).sandboxes, []);
    assert.equal(stderr, '', 'nothing on stderr');
  });
});
