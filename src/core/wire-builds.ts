/**
 * Wire types of builds (`/builds`), shaped after hypeman's `Build`,
 * `BuildStatus` and `BuildEvent`; Vessel adds the step list and a failing
 * RUN's exit code.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TagsSchema } from './wire.js';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const BuildStatusSchema = Type.Union(
  ['queued', 'building', 'pushing', 'ready', 'failed', 'cancelled'].map((s) => Type.Literal(s)),
  { title: 'BuildStatus', description: 'Build job status (Vessel never pushes: no pushing)' },
);

export const BuildStepSchema = Type.Object(
  {
    stage: Type.Integer({ description: 'Stage index (0-based)' }),
    line: Type.Integer({ description: 'Dockerfile line (1-based)' }),
    text: Type.String({ description: 'The instruction' }),
    status: Type.Union(
      ['pending', 'running', 'cached', 'done', 'failed', 'skipped'].map((s) => Type.Literal(s)),
    ),
    duration_ms: Nullable(Type.Integer()),
  },
  { title: 'BuildStep' },
);

export const BuildSchema = Type.Object(
  {
    id: Type.String(),
    status: BuildStatusSchema,
    tags: TagsSchema,
    queue_position: Nullable(Type.Integer({ description: 'Position in the queue when queued' })),
    image_ref: Type.String({ description: 'The image the build makes (normalised reference)' }),
    image_digest: Nullable(Type.String({ description: 'Manifest digest once ready' })),
    error: Nullable(Type.String({ description: 'Why the build failed' })),
    error_code: Nullable(Type.String()),
    exit_code: Nullable(Type.Integer({ description: 'Vessel: the exit code of a failing RUN' })),
    provenance: Type.Object(
      {
        base_image_digest: Type.Optional(Type.String()),
        source_hash: Type.Optional(Type.String({ description: 'sha256 of the uploaded context' })),
        timestamp: Type.Optional(Type.String({ format: 'date-time' })),
      },
      { additionalProperties: true },
    ),
    steps: Type.Array(BuildStepSchema),
    created_at: Type.String({ format: 'date-time' }),
    started_at: Nullable(Type.String({ format: 'date-time' })),
    completed_at: Nullable(Type.String({ format: 'date-time' })),
    duration_ms: Nullable(Type.Integer()),
    builder_instance_id: Nullable(
      Type.String({ description: 'The builder VM running a RUN step right now' }),
    ),
  },
  { title: 'Build' },
);
export type WireBuild = Static<typeof BuildSchema>;

export const BuildEventSchema = Type.Object(
  {
    seq: Type.Integer({ description: 'Vessel: 1, 2, ... in order' }),
    type: Type.Union(['log', 'status', 'step', 'heartbeat'].map((s) => Type.Literal(s))),
    timestamp: Type.String({ format: 'date-time' }),
    content: Type.Optional(Type.String({ description: 'log: one line of output' })),
    status: Type.Optional(BuildStatusSchema),
    steps: Type.Optional(Type.Array(BuildStepSchema)),
  },
  { title: 'BuildEvent' },
);
export type WireBuildEvent = Static<typeof BuildEventSchema>;

export const CatalogEntrySchema = Type.Object(
  {
    name: Type.String({ description: 'What `vessel run NAME` takes' }),
    description: Type.String(),
    default: Type.Boolean({ description: 'The image `vessel run -- CMD` runs' }),
    image: Type.String({ description: 'The reference it is stored under' }),
    source: Type.String({ description: 'How it is made, e.g. "mmdebstrap bookworm"' }),
    packages: Type.Array(Type.String()),
    local: Type.Boolean({ description: 'Built and ready in the local store' }),
    digest: Nullable(Type.String()),
    built_at: Nullable(Type.String({ format: 'date-time' })),
    build_id: Nullable(Type.String({ description: 'A build of it in progress' })),
  },
  { title: 'CatalogEntry' },
);
export type WireCatalogEntry = Static<typeof CatalogEntrySchema>;
