import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import fs from 'node:fs';
import { errnoCode } from '../../core/errors.js';
import { ExecRequestSchema, ExecResultSchema, type ExecRequestWire } from '../../core/wire.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import { openSse } from '../sse.js';
import type { ApiDeps } from '../app.js';

const LogsQuery = Type.Object(
  {
    follow: Type.Optional(Type.Boolean({ description: 'Keep streaming until the instance stops' })),
    tail: Type.Optional(
      Type.Integer({ minimum: 0, description: 'Only the last N lines of the existing log' }),
    ),
    source: Type.Optional(
      Type.Union([Type.Literal('app'), Type.Literal('vmm'), Type.Literal('daemon')], {
        description:
          "app (default): the serial console without boot markers; vmm: the hypervisor process output; daemon: this instance's lifecycle operations",
      }),
    ),
  },
  { additionalProperties: false },
);

function tailLines(text: string, n: number | undefined): string {
  if (n === undefined) return text;
  const lines = text.split('\n');
  const trailing = lines.at(-1) === '' ? 1 : 0;
  return lines.slice(Math.max(0, lines.length - trailing - n)).join('\n');
}

/** An instance's bytes: one-shot exec and logs (the exec WebSocket is in exec-stream.ts). */
export function instanceIoRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const instances = deps.instances;
  const tags = ['instances'];

  app.post(
    '/instances/:id/exec',
    {
      schema: {
        operationId: 'execInstance',
        summary: 'Run a command in a Running instance and return its output (non-interactive)',
        tags,
        params: InstanceIdParams,
        body: ExecRequestSchema,
        response: { 200: ExecResultSchema, ...errorResponses },
      },
    },
    async (request) => {
      const body = request.body as ExecRequestWire;
      const session = instances.exec((request.params as InstanceIdParamsT).id, {
        argv: body.argv,
        ...(body.env ? { env: body.env } : {}),
        ...(body.cwd ? { cwd: body.cwd } : {}),
        ...(body.user ? { user: body.user } : {}),
        stdin: body.stdin !== undefined,
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      session.stdout.on('data', (d: Buffer) => out.push(d));
      session.stderr.on('data', (d: Buffer) => err.push(d));
      if (body.stdin !== undefined) session.stdin.end(Buffer.from(body.stdin));
      const status = await session.result;
      return {
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        exit_code: status.code,
        signal: status.signal,
      };
    },
  );

  app.get(
    '/instances/:id/logs',
    {
      schema: {
        operationId: 'streamInstanceLogs',
        summary:
          'Server-Sent Events: the app log (serial console without boot markers); with follow, live output and state changes until Stopped',
        tags,
        params: InstanceIdParams,
        querystring: LogsQuery,
        'x-produces': 'text/event-stream',
        response: {
          200: {
            type: 'string',
            description: 'event: log (data: JSON string) | state (data: Instance)',
          },
          ...errorResponses,
        },
      },
    },
    (request, reply) => {
      const inst = instances.get((request.params as InstanceIdParamsT).id);
      const q = request.query as Static<typeof LogsQuery>;
      const sse = openSse(request, reply);
      // Subscribe, then read the file: log bytes are appended synchronously before they are
      // published, so everything before the subscription is in the file and nothing is doubled.
      const source = q.source ?? 'app';
      const unsubscribe = q.follow
        ? instances.subscribe((e) => {
            if (e.id !== inst.id) return;
            if (e.type === 'log') {
              if (source === 'app') sse.send('log', e.data.toString('utf8'));
            } else if (e.type === 'daemon-log') {
              if (source === 'daemon') sse.send('log', e.line);
            } else if (e.type === 'state') {
              sse.send('state', e.instance);
              if (e.instance.state === 'Stopped') sse.close();
            } else sse.close();
          })
        : () => undefined;
      sse.onClose(unsubscribe);
      let existing = '';
      try {
        existing = fs.readFileSync(instances.logPath(inst.id, source), 'utf8');
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
      const head = tailLines(existing, q.tail);
      if (head) sse.send('log', head);
      const now = instances.get(inst.id);
      sse.send('state', now);
      if (!q.follow || now.state === 'Stopped') sse.close();
    },
  );
}
