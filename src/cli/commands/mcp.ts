/**
 * `vessel mcp`: a Model Context Protocol server on stdio (the official
 * `@modelcontextprotocol/sdk`) that lets an AI agent create sandboxes, run commands and
 * move files in them. Built on the SDK facade (`packages/sdk`), which sits on the typed
 * client. The MCP SDK, zod and the facade are loaded only when `vessel mcp` runs.
 */
import type { Readable } from 'node:stream';
import type { Command } from 'commander';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { z as Zod } from 'zod';
import type { Sandbox, Vessel } from '../../../packages/sdk/src/index.js';
import { VesselError, errorMessage, isVesselError } from '../../core/errors.js';
import { VERSION } from '../../core/version.js';
import { connect, type GlobalOptions } from '../connect.js';

/** Output kept per stream of an exec, and the largest file read_file returns. */
const MAX_OUTPUT_BYTES = 1024 * 1024;
const MAX_READ_BYTES = 8 * 1024 * 1024;

const INSTRUCTIONS = [
  'Vessel sandboxes are microVMs booted from OCI images: create_sandbox (it returns once the VM is Running),',
  'then exec commands in it and read_file/write_file; delete_sandbox when done.',
  'Output that is not valid UTF-8 comes back base64-encoded (the *_encoding fields say which).',
].join(' ');

export function registerMcpCommand(program: Command, globals: () => GlobalOptions): void {
  program
    .command('mcp')
    .description('serve sandboxes to AI agents: a Model Context Protocol server on stdin/stdout')
    .action(async () => serveMcp(globals()));
}

/** Serve until stdin closes. Nothing but protocol messages goes to stdout. */
export async function serveMcp(g: GlobalOptions): Promise<void> {
  const client = await connect(g);
  const [{ McpServer }, { StdioServerTransport }, { z }, sdk] = await Promise.all([
    import('@modelcontextprotocol/sdk/server/mcp.js'),
    import('@modelcontextprotocol/sdk/server/stdio.js'),
    import('zod'),
    import('../../../packages/sdk/src/index.js'),
  ]);
  const vessel = new sdk.Vessel({ client });
  const server = new McpServer(
    { name: 'vessel', version: VERSION },
    { instructions: INSTRUCTIONS },
  );
  registerTools(server, z, vessel, sdk.Sandbox);
  const stdinClosed = new Promise<void>((resolve) => {
    process.stdin.once('end', resolve);
    process.stdin.once('close', resolve);
  });
  await server.connect(new StdioServerTransport());
  await stdinClosed;
  await server.close();
  await vessel.close();
}

/** A tool answer: the object as JSON text (for any client) and as structured content. */
function ok(value: Record<string, unknown>): CallToolResult {
  return {
    content: [{ type: 'text', text: JSON.stringify(value, null, 2) }],
    structuredContent: value,
  };
}

/** A tool error the agent can read: the API's code and message. */
function failed(err: unknown): CallToolResult {
  const text = isVesselError(err) ? `${err.code}: ${err.message}` : errorMessage(err);
  return { content: [{ type: 'text', text }], isError: true };
}

function guarded<A>(
  fn: (args: A) => Promise<CallToolResult>,
): (args: A) => Promise<CallToolResult> {
  return async (args) => {
    try {
      return await fn(args);
    } catch (err) {
      return failed(err);
    }
  };
}

/** Text when the bytes are valid UTF-8, else base64; says which. */
function encode(bytes: Buffer): { text: string; encoding: 'utf8' | 'base64' } {
  try {
    return { text: new TextDecoder('utf-8', { fatal: true }).decode(bytes), encoding: 'utf8' };
  } catch {
    return { text: bytes.toString('base64'), encoding: 'base64' };
  }
}

/** Read all of `s`, keeping the first `max` bytes (the rest is read and dropped, so the command never stalls). */
async function capped(s: Readable, max: number): Promise<{ bytes: Buffer; truncated: boolean }> {
  const parts: Buffer[] = [];
  let kept = 0;
  let truncated = false;
  for await (const chunk of s as AsyncIterable<Buffer>) {
    const room = max - kept;
    if (chunk.length > room) truncated = true;
    if (room > 0) {
      parts.push(chunk.subarray(0, room));
      kept += Math.min(room, chunk.length);
    }
  }
  return { bytes: Buffer.concat(parts), truncated };
}

function registerTools(
  server: McpServer,
  z: typeof Zod,
  vessel: Vessel,
  Sandboxes: typeof Sandbox,
): void {
  const sandbox = (idOrName: string) => Sandboxes.connect(idOrName, { vessel });
  const id = z.string().min(1).describe('Sandbox id or name');
  const env = z.record(z.string(), z.string()).describe('Environment variables');
  const summary = (i: Sandbox['info']) => ({
    id: i.id,
    name: i.name,
    image: i.image,
    state: i.state,
  });

  server.registerTool(
    'create_sandbox',
    {
      title: 'Create a sandbox',
      description:
        'Boot a microVM from an OCI image (pulled when missing) and return once it is Running. By default its main process is an idle shell loop, so it stays up for exec until deleted.',
      inputSchema: {
        image: z.string().min(1).describe('OCI image reference, e.g. alpine:3.20'),
        name: z.string().optional().describe('Unique name (lowercase letters, digits, . _ -)'),
        vcpus: z.number().int().min(1).max(64).optional(),
        memory_mib: z.number().int().min(64).optional().describe('Memory in MiB'),
        env: env.optional(),
        command: z
          .array(z.string())
          .min(1)
          .optional()
          .describe("Main command (replaces the image's CMD; the sandbox stops when it exits)"),
        network: z
          .enum(['bridge', 'user', 'none'])
          .optional()
          .describe("Network mode (default: the daemon's)"),
      },
      outputSchema: { id: z.string(), name: z.string(), image: z.string(), state: z.string() },
    },
    guarded(async (a) => {
      const sb = await Sandboxes.create({
        vessel,
        image: a.image,
        ...(a.name === undefined ? {} : { name: a.name }),
        ...(a.vcpus === undefined ? {} : { vcpus: a.vcpus }),
        ...(a.memory_mib === undefined ? {} : { memoryMib: a.memory_mib }),
        ...(a.env === undefined ? {} : { env: a.env }),
        ...(a.command === undefined ? {} : { cmd: a.command }),
        ...(a.network === undefined ? {} : { network: { mode: a.network } }),
      });
      return ok(summary(sb.info));
    }),
  );

  server.registerTool(
    'exec',
    {
      title: 'Run a command in a sandbox',
      description:
        'Run a command (an argv array, or a string for /bin/sh -c) and return its stdout, stderr and exit code. Each stream keeps its first 1 MiB.',
      inputSchema: {
        id,
        command: z.union([z.string().min(1), z.array(z.string()).min(1)]),
        stdin: z.string().optional().describe('Text sent to stdin, then EOF'),
        cwd: z.string().optional(),
        env: env.optional(),
        timeout_seconds: z
          .number()
          .positive()
          .max(3600)
          .optional()
          .describe('Kill the command after this long (default 120)'),
      },
      outputSchema: {
        exit_code: z.number().int(),
        signal: z.number().int().nullable(),
        stdout: z.string(),
        stderr: z.string(),
        stdout_encoding: z.enum(['utf8', 'base64']),
        stderr_encoding: z.enum(['utf8', 'base64']),
        stdout_truncated: z.boolean(),
        stderr_truncated: z.boolean(),
      },
    },
    guarded(async (a) => {
      const sb = await sandbox(a.id);
      const handle = await sb.commands.start(a.command, {
        timeoutMs: (a.timeout_seconds ?? 120) * 1000,
        ...(a.stdin === undefined ? {} : { stdin: a.stdin }),
        ...(a.cwd === undefined ? {} : { cwd: a.cwd }),
        ...(a.env === undefined ? {} : { env: a.env }),
      });
      const [out, err, exit] = await Promise.all([
        capped(handle.stdout, MAX_OUTPUT_BYTES),
        capped(handle.stderr, MAX_OUTPUT_BYTES),
        handle.wait(),
      ]);
      const o = encode(out.bytes);
      const e = encode(err.bytes);
      return ok({
        exit_code: exit.exitCode,
        signal: exit.signal,
        stdout: o.text,
        stderr: e.text,
        stdout_encoding: o.encoding,
        stderr_encoding: e.encoding,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
      });
    }),
  );

  server.registerTool(
    'list_sandboxes',
    {
      title: 'List sandboxes',
      description: 'Every sandbox (instance) the daemon knows, with its state.',
      outputSchema: {
        sandboxes: z.array(
          z.object({ id: z.string(), name: z.string(), image: z.string(), state: z.string() }),
        ),
      },
      annotations: { readOnlyHint: true },
    },
    guarded(async () => ok({ sandboxes: (await vessel.api.listInstances()).map(summary) })),
  );

  server.registerTool(
    'delete_sandbox',
    {
      title: 'Delete a sandbox',
      description: 'Kill the VM and remove the sandbox and its files.',
      inputSchema: { id },
      outputSchema: { deleted: z.string() },
      annotations: { destructiveHint: true },
    },
    guarded(async (a) => {
      await vessel.api.deleteInstance(a.id);
      return ok({ deleted: a.id });
    }),
  );

  server.registerTool(
    'read_file',
    {
      title: 'Read a file in a sandbox',
      description: `Return a file's content: UTF-8 text, or base64 when it is not valid UTF-8 (at most ${MAX_READ_BYTES} bytes).`,
      inputSchema: { id, path: z.string().min(1) },
      outputSchema: {
        path: z.string(),
        content: z.string(),
        encoding: z.enum(['utf8', 'base64']),
        size: z.number().int(),
      },
      annotations: { readOnlyHint: true },
    },
    guarded(async (a) => {
      const sb = await sandbox(a.id);
      const { bytes, truncated } = await capped(
        await sb.files.read(a.path, { format: 'stream' }),
        MAX_READ_BYTES,
      );
      if (truncated)
        throw new VesselError(
          'invalid_argument',
          `"${a.path}" is larger than ${MAX_READ_BYTES} bytes; read it in parts with exec`,
        );
      const c = encode(bytes);
      return ok({ path: a.path, content: c.text, encoding: c.encoding, size: bytes.length });
    }),
  );

  server.registerTool(
    'write_file',
    {
      title: 'Write a file in a sandbox',
      description:
        'Create or replace a file (parent directories are created). `encoding: base64` for binary content.',
      inputSchema: {
        id,
        path: z.string().min(1),
        content: z.string(),
        encoding: z
          .enum(['utf8', 'base64'])
          .optional()
          .describe('How content is encoded (default utf8)'),
      },
      outputSchema: { path: z.string(), size: z.number().int() },
    },
    guarded(async (a) => {
      const sb = await sandbox(a.id);
      const bytes = Buffer.from(a.content, a.encoding === 'base64' ? 'base64' : 'utf8');
      await sb.files.write(a.path, bytes);
      return ok({ path: a.path, size: bytes.length });
    }),
  );
}
