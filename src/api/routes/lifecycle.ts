import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import {
  ForkRequestSchema,
  InstanceSchema,
  InstanceStateSchema,
  LIFECYCLE_EVENT_TYPES,
  LifecycleEventSchema,
  WaitResultSchema,
  type ForkRequestWire,
} from '../../core/wire.js';
import { parseDurationOrSeconds } from '../../core/duration.js';
import {
  StandbyInstanceRequestSchema,
  type StandbyInstanceRequestWire,
} from '../../core/wire-ops.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import { offWhen, unsupportedFields, type Unsupported } from '../unsupported.js';
import { optionalBody } from './instances.js';
import { openSse } from '../sse.js';
import type { ApiDeps } from '../app.js';

const WaitQuery = Type.Object(
  {
    state: InstanceStateSchema,
    timeout: Type.Optional(
      Type.String({
        maxLength: 32,
        default: '60s',
        description:
          'How long to wait: a Go duration ("30s", "2m") or seconds (default 60s; capped at 1h)',
      }),
    ),
  },
  { additionalProperties: false },
);

/** Waits longer than this are cut to it (hypeman caps at 5 minutes; Vessel allows an hour). */
const MAX_WAIT_MS = 3_600_000;

const EventsQuery = Type.Object(
  {
    instance: Type.Optional(
      Type.String({ minLength: 1, maxLength: 128, description: 'Only this instance (id or name)' }),
    ),
    type: Type.Optional(
      Type.String({
        pattern: `^(${LIFECYCLE_EVENT_TYPES.join('|')})(,(${LIFECYCLE_EVENT_TYPES.join('|')}))*$`,
        description: `Comma-separated event types: ${LIFECYCLE_EVENT_TYPES.join(', ')}`,
      }),
    ),
  },
  { additionalProperties: false },
);

type Action = 'pause' | 'resume' | 'restore';

const ACTIONS: Record<Action, string> = {
  pause: 'Pause a Running instance (vCPUs stop; memory stays)',
  resume: 'Resume a Paused instance',
  restore:
    'Start a Standby instance from its snapshot (→ Running); refused when the VMM version, kernel or VM shape changed',
};

const STANDBY_UNSUPPORTED: readonly Unsupported[] = [
  {
    field: 'compression',
    reason: 'snapshot compression is not supported',
    noop: (v) =>
      offWhen('enabled', false)(v) ||
      (typeof v === 'object' && v !== null && (v as { enabled?: unknown }).enabled === false),
  },
];

/** Lifecycle actions, `wait`, and the `/events` stream. */
export function lifecycleRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const instances = deps.instances;
  const tags = ['instances'];

  for (const action of Object.keys(ACTIONS) as Action[]) {
    app.post(
      `/instances/:id/${action}`,
      {
        schema: {
          operationId: `${action}Instance`,
          summary: ACTIONS[action],
          tags,
          params: InstanceIdParams,
          response: { 200: InstanceSchema, ...errorResponses },
        },
      },
      (request) => instances[action]((request.params as InstanceIdParamsT).id),
    );
  }

  const standbyBody = unsupportedFields(STANDBY_UNSUPPORTED);
  app.post(
    '/instances/:id/standby',
    {
      preValidation: async (request) => {
        await optionalBody(request);
        await standbyBody.preValidation(request);
      },
      schema: {
        operationId: 'standbyInstance',
        summary:
          'Snapshot a Running or Paused instance to disk and stop its VMM (→ Standby); restore brings it back with its memory',
        description:
          'The body is optional; snapshots are not compressed (compression.enabled must be false).',
        tags,
        params: InstanceIdParams,
        body: StandbyInstanceRequestSchema,
        'x-body-optional': true,
        'x-unsupported-fields': standbyBody.doc,
        response: { 200: InstanceSchema, ...errorResponses },
      },
    },
    (request) => {
      const body = request.body as StandbyInstanceRequestWire;
      if (body.compression_delay !== undefined)
        parseDurationOrSeconds(body.compression_delay, 'compression_delay');
      return instances.standby((request.params as InstanceIdParamsT).id);
    },
  );

  app.post(
    '/instances/:id/fork',
    {
      schema: {
        operationId: 'forkInstance',
        summary: 'Fork an instance: a new instance with a copy of its writable disk (and snapshot)',
        description:
          'The source must be Stopped or Standby, or Running with from_running (it goes to standby for the copy and is restored). The fork ends in target_state, by default the source state at fork time.',
        tags,
        params: InstanceIdParams,
        body: ForkRequestSchema,
        'x-body-optional': true,
        response: { 201: InstanceSchema, ...errorResponses },
      },
      preValidation: optionalBody,
    },
    async (request, reply) => {
      const body = request.body as ForkRequestWire;
      const forked = await instances.forkTo((request.params as InstanceIdParamsT).id, body);
      return reply.status(201).send(forked);
    },
  );

  app.get(
    '/instances/:id/wait',
    {
      schema: {
        operationId: 'waitForInstanceState',
        summary: 'Wait until the instance reaches a state, or the timeout passes',
        description:
          'Returns the state and `timed_out`. Woken by the lifecycle bus (no polling), with a slow re-read as a fallback. 404 if the instance is deleted while waiting.',
        tags,
        params: InstanceIdParams,
        querystring: WaitQuery,
        response: { 200: WaitResultSchema, ...errorResponses },
      },
    },
    async (request) => {
      const q = request.query as Static<typeof WaitQuery>;
      const id = (request.params as InstanceIdParamsT).id;
      const ms = Math.min(MAX_WAIT_MS, parseDurationOrSeconds(q.timeout ?? '60s', 'timeout'));
      const result = await instances.waitForState(id, q.state, ms);
      return { ...result, state_error: instances.get(id).state_error };
    },
  );

  app.get(
    '/events',
    {
      // A stream has no HEAD: Fastify's automatic one would run the handler and never end.
      exposeHeadRoute: false,
      schema: {
        operationId: 'streamEvents',
        summary: 'Server-Sent Events: instance lifecycle events as they happen',
        description:
          'Each event is `event: <type>` with a LifecycleEvent as data. A client too slow to keep up loses events (counted in vessel_lifecycle_events_dropped_total) rather than slowing the daemon; `seq` shows the gap.',
        tags: ['events'],
        querystring: EventsQuery,
        'x-produces': 'text/event-stream',
        response: {
          200: { ...LifecycleEventSchema, description: 'event: <type> (data: LifecycleEvent)' },
          ...errorResponses,
        },
      },
    },
    (request, reply) => {
      const q = request.query as Static<typeof EventsQuery>;
      // Resolve the name now: the stream follows that instance even if renamed or deleted.
      const only = q.instance === undefined ? undefined : instances.get(q.instance).id;
      const types = q.type === undefined ? undefined : new Set(q.type.split(','));
      const sse = openSse(request, reply);
      const sub = instances.subscribeLifecycle(
        async (e) => {
          sse.send(e.type, e);
          await sse.drained();
        },
        {
          name: 'sse',
          filter: (e) =>
            (only === undefined || e.instance_id === only) &&
            (types === undefined || types.has(e.type)),
        },
      );
      sse.onClose(() => sub.close());
    },
  );
}
