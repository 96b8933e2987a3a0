import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { VesselError } from '../../core/errors.js';
import { STDIO_MEDIA_TYPE, StdioKind, encodeStdioHeader } from '../../core/stdio-stream.js';
import { ExecRequestSchema, ExecResultSchema, type ExecRequestWire } from '../../core/wire.js';
import type { LogChunk, LogSource } from '../../instances/index.js';
import type { ApiDeps } from '../app.js';
import { toHttpError } from '../errors.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import { drained, openSse } from '../sse.js';

const LOG_SOURCES = ['app', 'console', 'vmm', 'daemon', 'hypeman'] as const;
/** hypeman's default for `tail` (Server-Sent Events); the byte stream sends everything. */
const SSE_DEFAULT_TAIL = 100;

const LogsQuery = Type.Object(
  {
    follow: Type.Optional(Type.Boolean({ description: 'Keep streaming until the instance stops' })),
    tail: Type.Optional(
      Type.Integer({
        minimum: 0,
        default: SSE_DEFAULT_TAIL,
        description: `Only the last N lines of the existing log (default ${SSE_DEFAULT_TAIL} for Server-Sent Events, all for the byte stream)`,
      }),
    ),
    source: Type.Optional(
      Type.Union(
        LOG_SOURCES.map((s) => Type.Literal(s)),
        {
          description:
            "app: the main command's stdout and stderr (default in exec mode); console: the serial console without boot markers, i.e. kernel and vessel-init messages (default when the image's own init runs); vmm: the hypervisor process output; daemon (or hypeman): this instance's lifecycle operations",
        },
      ),
    ),
  },
  { additionalProperties: false },
);

/** The JSON exec result holds at most this much output; the byte stream has no cap. */
export const EXEC_JSON_MAX_BYTES = 64 * 1024 * 1024;
const SIGKILL = 9;

const STREAM_FORMAT = `With \`Accept: ${STDIO_MEDIA_TYPE}\` the response is a byte stream of frames \`u8 kind | 3 zero bytes | u32 length (big endian) | payload\` (Docker's multiplexed-stream header): kind 1 stdout, 2 stderr, 3 log text (console, vmm, daemon sources), 0x10 exit \`{"exit_code","signal"}\`, 0x11 error (the REST error body), 0x12 the instance (JSON) when a log stream ends.`;

function wantsStream(request: FastifyRequest): boolean {
  return (request.headers.accept ?? '').includes(STDIO_MEDIA_TYPE);
}

/** Take over the response as a framed byte stream (back-pressure via `write`). */
function openStream(reply: FastifyReply): ServerResponse {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': STDIO_MEDIA_TYPE, 'cache-control': 'no-cache' });
  return res;
}

/** Write one frame; resolves once the socket can take more (or is gone). */
async function writeFrame(res: ServerResponse, kind: number, payload: Buffer): Promise<void> {
  if (res.destroyed) return;
  res.write(encodeStdioHeader(kind, payload.length));
  res.write(payload);
  await drained(res);
}

function isUtf8(buf: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
}

/** An instance's bytes: one-shot exec, logs and attach (the exec WebSocket is in exec-stream.ts). */
export function instanceIoRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const instances = deps.instances;
  const tags = ['instances'];

  app.post(
    '/instances/:id/exec',
    {
      schema: {
        operationId: 'execInstance',
        summary: 'Run a command in an instance and return its output (non-interactive)',
        description: `Waits for an instance that is still booting. The JSON result carries text, plus \`stdout_base64\`/\`stderr_base64\` when the bytes are not valid UTF-8 (at most ${EXEC_JSON_MAX_BYTES / 1024 / 1024} MiB of output). ${STREAM_FORMAT} The byte stream has no size cap and applies back-pressure to the command.`,
        tags,
        params: InstanceIdParams,
        body: ExecRequestSchema,
        'x-produces': ['application/json', STDIO_MEDIA_TYPE],
        response: { 200: ExecResultSchema, ...errorResponses },
      },
    },
    async (request, reply) => {
      const body = request.body as ExecRequestWire;
      const input =
        body.stdin_base64 !== undefined
          ? Buffer.from(body.stdin_base64, 'base64')
          : body.stdin !== undefined
            ? Buffer.from(body.stdin, 'utf8')
            : undefined;
      const session = await instances.exec((request.params as InstanceIdParamsT).id, {
        argv: body.argv,
        ...(body.env ? { env: body.env } : {}),
        ...(body.cwd ? { cwd: body.cwd } : {}),
        ...(body.user ? { user: body.user } : {}),
        stdin: input !== undefined,
      });
      if (input !== undefined) session.stdin.end(input);
      const kill = (): void => {
        try {
          session.signal(SIGKILL);
        } catch {
          // the channel is gone: so is the command
        }
      };
      if (wantsStream(request)) {
        const res = openStream(reply);
        let ended = false;
        res.on('close', () => {
          if (!ended) kill();
        });
        const pump = async (stream: Readable, kind: number): Promise<void> => {
          for await (const chunk of stream as AsyncIterable<Buffer>)
            await writeFrame(res, kind, chunk);
        };
        try {
          const [status] = await Promise.all([
            session.result,
            pump(session.stdout, StdioKind.stdout),
            pump(session.stderr, StdioKind.stderr),
          ]);
          ended = true;
          await writeFrame(
            res,
            StdioKind.exit,
            Buffer.from(JSON.stringify({ exit_code: status.code, signal: status.signal })),
          );
        } catch (err) {
          ended = true;
          const { body: e } = toHttpError(err);
          await writeFrame(res, StdioKind.error, Buffer.from(JSON.stringify(e)));
        }
        res.end();
        return reply;
      }
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let total = 0;
      let tooLarge = false;
      const take = (into: Buffer[]) => (d: Buffer) => {
        total += d.length;
        if (total > EXEC_JSON_MAX_BYTES) {
          if (!tooLarge) kill();
          tooLarge = true;
          return;
        }
        into.push(d);
      };
      session.stdout.on('data', take(out));
      session.stderr.on('data', take(err));
      const status = await session.result;
      if (tooLarge)
        throw new VesselError(
          'output_too_large',
          `the command wrote more than ${EXEC_JSON_MAX_BYTES / 1024 / 1024} MiB; it was killed. Ask for Accept: ${STDIO_MEDIA_TYPE} to stream any amount`,
        );
      const stdout = Buffer.concat(out);
      const stderr = Buffer.concat(err);
      return {
        stdout: stdout.toString('utf8'),
        stderr: stderr.toString('utf8'),
        ...(isUtf8(stdout) ? {} : { stdout_base64: stdout.toString('base64') }),
        ...(isUtf8(stderr) ? {} : { stderr_base64: stderr.toString('base64') }),
        exit_code: status.code,
        signal: status.signal,
      };
    },
  );

  app.get(
    '/instances/:id/logs',
    {
      // A stream has no HEAD: Fastify's automatic one would run the handler and never end.
      exposeHeadRoute: false,
      schema: {
        operationId: 'getInstanceLogs',
        summary:
          "An instance's logs: by default Server-Sent Events, one `data:` line per log line (a JSON string, as hypeman sends); with follow, live output until it stops",
        description: `${STREAM_FORMAT} Only the byte stream keeps stdout and stderr apart and every byte exact; SSE decodes text lossily.`,
        tags,
        params: InstanceIdParams,
        querystring: LogsQuery,
        'x-produces': ['text/event-stream', STDIO_MEDIA_TYPE],
        response: {
          200: {
            type: 'string',
            description: 'data: a JSON string per log line',
          },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const inst = instances.get((request.params as InstanceIdParamsT).id);
      const q = request.query as Static<typeof LogsQuery>;
      const source: LogSource =
        q.source === 'hypeman' ? 'daemon' : (q.source ?? instances.defaultLogSource(inst.id));
      const stream = wantsStream(request);
      // The default tail is filled in by the schema; only an explicit one limits the byte stream.
      const explicitTail = new URL(request.url, 'http://x').searchParams.has('tail');
      const tail = stream && !explicitTail ? undefined : q.tail;
      const abort = new AbortController();
      const chunks = instances.logs(inst.id, source, {
        ...(q.follow ? { follow: true } : {}),
        ...(tail === undefined ? {} : { tail }),
        signal: abort.signal,
      });
      if (stream) {
        const res = openStream(reply);
        res.on('close', () => abort.abort());
        for await (const c of chunks) await writeFrame(res, kindOf(c), c.data);
        await writeFrame(res, StdioKind.state, Buffer.from(JSON.stringify(instances.get(inst.id))));
        res.end();
        return reply;
      }
      const sse = openSse(request, reply);
      sse.onClose(() => abort.abort());
      // SSE carries text, a line per event: bytes that are not UTF-8 are decoded lossily, a
      // line still open when the stream ends goes out as it is (the byte stream keeps both).
      const lines = new LineSplitter();
      for await (const c of chunks) {
        for (const line of lines.push(c.data)) sse.data(line);
        await sse.drained();
      }
      const rest = lines.end();
      if (rest !== undefined) sse.data(rest);
      sse.close();
      return reply;
    },
  );
}

/** Bytes to text lines (without their newline), UTF-8 decoded across chunk boundaries. */
class LineSplitter {
  private readonly decoder = new TextDecoder('utf-8');
  private partial = '';

  push(data: Buffer): string[] {
    const parts = (this.partial + this.decoder.decode(data, { stream: true })).split('\n');
    this.partial = parts.pop() ?? '';
    return parts;
  }

  end(): string | undefined {
    const rest = this.partial + this.decoder.decode();
    this.partial = '';
    return rest.length > 0 ? rest : undefined;
  }
}

function kindOf(c: LogChunk): number {
  return c.stream === 'stdout'
    ? StdioKind.stdout
    : c.stream === 'stderr'
      ? StdioKind.stderr
      : StdioKind.console;
}
