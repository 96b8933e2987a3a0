/**
 * Wire types of named snapshots (`/instances/{id}/snapshots`, `/snapshots`),
 * shaped after hypeman's `Snapshot`, `CreateSnapshotRequest`,
 * `RestoreSnapshotRequest` and `ForkSnapshotRequest`.
 */
import { Type, type Static } from '@sinclair/typebox';
import { TagsSchema } from './wire.js';

/** hypeman's `SnapshotKind`: `Standby` = memory + disk, `Stopped` = disk only. */
export const SnapshotKindSchema = Type.Union([Type.Literal('Standby'), Type.Literal('Stopped')], {
  description:
    'Standby: the full VM (memory and disk; source Running, Paused or Standby); Stopped: the writable disk only (source Stopped)',
});
export type SnapshotKind = Static<typeof SnapshotKindSchema>;

export const SnapshotTargetStateSchema = Type.Union(
  [Type.Literal('Stopped'), Type.Literal('Standby'), Type.Literal('Running')],
  {
    description:
      'Final state after restore or fork (default: Running for Standby snapshots, Stopped for Stopped ones)',
  },
);
export type SnapshotTargetState = Static<typeof SnapshotTargetStateSchema>;

/** hypeman's values; `compressing` covers a compression queued or running. */
export const SNAPSHOT_COMPRESSION_STATES = ['none', 'compressing', 'compressed', 'error'] as const;
export type SnapshotCompressionState = (typeof SNAPSHOT_COMPRESSION_STATES)[number];

export const SnapshotCompressionConfigSchema = Type.Object(
  {
    enabled: Type.Boolean(),
    algorithm: Type.Optional(Type.Union([Type.Literal('zstd'), Type.Literal('lz4')])),
    level: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 19,
        description: 'zstd 1-19 (default 1), lz4 0-9 (default 0)',
      }),
    ),
  },
  { additionalProperties: false, title: 'SnapshotCompressionConfig' },
);
export type SnapshotCompressionConfig = Static<typeof SnapshotCompressionConfigSchema>;

const Nullable = <T extends ReturnType<typeof Type.Integer> | ReturnType<typeof Type.String>>(
  t: T,
) => Type.Union([t, Type.Null()]);

export const SnapshotSchema = Type.Object(
  {
    id: Type.String(),
    name: Nullable(Type.String({ description: 'Unique per source instance' })),
    kind: SnapshotKindSchema,
    tags: Type.Optional(TagsSchema),
    source_instance_id: Type.String(),
    source_instance_name: Type.String(),
    source_hypervisor: Type.Union(
      ['cloud-hypervisor', 'firecracker', 'qemu', 'qemu-microvm', 'vz'].map((h) => Type.Literal(h)),
    ),
    source_instance_exists: Type.Boolean({
      description:
        'Vessel: false once the source instance was deleted (the snapshot can still be forked)',
    }),
    created_at: Type.String({ format: 'date-time' }),
    size_bytes: Type.Integer({ description: 'Bytes on disk (disk copy, memory state, metadata)' }),
    vmm_version: Nullable(
      Type.String({ description: 'Vessel: the VMM version that saved the state' }),
    ),
    kernel: Type.String({ description: 'Vessel: the guest kernel (name/version)' }),
    compression_state: Type.Union(
      SNAPSHOT_COMPRESSION_STATES.map((s) => Type.Literal(s)),
      { description: 'Compression of the memory state (`compressing`: queued or running)' },
    ),
    compression_error: Nullable(Type.String()),
    compression: Type.Optional(SnapshotCompressionConfigSchema),
    compressed_size_bytes: Nullable(Type.Integer()),
    uncompressed_size_bytes: Nullable(Type.Integer()),
  },
  { title: 'Snapshot' },
);
export type Snapshot = Static<typeof SnapshotSchema>;

const SNAPSHOT_NAME = '^[a-z0-9][a-z0-9_.-]{0,62}$';

export const CreateSnapshotRequestSchema = Type.Object(
  {
    kind: SnapshotKindSchema,
    name: Type.Optional(Type.String({ pattern: SNAPSHOT_NAME })),
    tags: Type.Optional(TagsSchema),
    compression: Type.Optional(SnapshotCompressionConfigSchema),
  },
  { additionalProperties: false, title: 'CreateSnapshotRequest' },
);
export type CreateSnapshotRequest = Static<typeof CreateSnapshotRequestSchema>;

/** hypeman's override; only `qemu` (what Vessel runs) is accepted (api/routes/snapshots.ts). */
const TargetHypervisor = Type.Optional(
  Type.String({ description: 'Only qemu, the hypervisor the snapshot was taken with' }),
);

export const RestoreSnapshotRequestSchema = Type.Object(
  { target_state: Type.Optional(SnapshotTargetStateSchema), target_hypervisor: TargetHypervisor },
  { additionalProperties: false, title: 'RestoreSnapshotRequest' },
);
export type RestoreSnapshotRequest = Static<typeof RestoreSnapshotRequestSchema>;

export const ForkSnapshotRequestSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ pattern: SNAPSHOT_NAME })),
    target_state: Type.Optional(SnapshotTargetStateSchema),
    target_hypervisor: TargetHypervisor,
  },
  { additionalProperties: false, title: 'ForkSnapshotRequest' },
);
export type ForkSnapshotRequest = Static<typeof ForkSnapshotRequestSchema>;
