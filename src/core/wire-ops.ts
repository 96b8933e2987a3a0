/**
 * Wire types of the instance operations beyond create/get (PATCH, start,
 * standby, stat, stats), of `/capabilities`, and of the create bodies of
 * images and ingresses, shaped after the hypeman API. See wire.ts.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import {
  EnvSchema,
  HYPERVISOR_NAMES,
  IngressRuleSchema,
  InstanceStateSchema,
  TagsSchema,
} from './wire.js';

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

const Duration = (description: string) =>
  Type.Union([Type.String({ maxLength: 64 }), Type.Number({ minimum: 0 })], { description });

/** `PATCH /instances/{id}`: only the fields given change. */
export const UpdateInstanceRequestSchema = Type.Object(
  {
    env: Type.Optional(EnvSchema),
    tags: Type.Optional(TagsSchema),
    ttl: Type.Optional(
      Duration(
        'Lifetime from now: a Go duration ("6h") or seconds; "0s" turns expiry off. Not with expires_at',
      ),
    ),
    expires_at: Type.Optional(
      Type.String({ format: 'date-time', description: 'Absolute expiry, in the future' }),
    ),
  },
  { additionalProperties: false, title: 'UpdateInstanceRequest' },
);

/** `POST /instances/{id}/start`: command overrides for this and later boots. */
export const StartInstanceRequestSchema = Type.Object(
  {
    entrypoint: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { maxItems: 4096 })),
    cmd: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { maxItems: 4096 })),
  },
  { additionalProperties: false, title: 'StartInstanceRequest' },
);

/** `POST /instances/{id}/standby`: Vessel's snapshots are not compressed. */
export const StandbyInstanceRequestSchema = Type.Object(
  {
    compression: Type.Optional(
      Type.Object(
        {
          enabled: Type.Boolean({ description: 'Only false is accepted' }),
          algorithm: Type.Optional(Type.Union([Type.Literal('zstd'), Type.Literal('lz4')])),
          level: Type.Optional(Type.Integer({ minimum: 0, maximum: 19 })),
        },
        { additionalProperties: false },
      ),
    ),
    compression_delay: Type.Optional(
      Type.String({ maxLength: 64, description: 'A Go duration; moot without compression' }),
    ),
  },
  { additionalProperties: false, title: 'StandbyInstanceRequest' },
);

/** `GET /instances/{id}/stat`: a path in the guest (the hypeman API's PathInfo). */
export const PathInfoSchema = Type.Object(
  {
    exists: Type.Boolean(),
    is_dir: Type.Optional(Type.Boolean()),
    is_file: Type.Optional(Type.Boolean()),
    is_symlink: Type.Optional(Type.Boolean({ description: 'Only with follow_links=false' })),
    link_target: Type.Optional(Nullable(Type.String())),
    mode: Type.Optional(Type.Integer({ description: 'Permission bits, e.g. 420 (0644)' })),
    size: Type.Optional(Type.Integer()),
    error: Type.Optional(
      Nullable(Type.String({ description: 'Why the stat failed, when not simply missing' })),
    ),
  },
  { title: 'PathInfo' },
);

/** `GET /instances/{id}/stats` (the hypeman API's InstanceStats plus Vessel's fields). */
export const InstanceStatsSchema = Type.Object(
  {
    instance_id: Type.String(),
    instance_name: Type.String(),
    cpu_seconds: Nullable(
      Type.Number({ description: 'CPU time of the hypervisor process (user + system)' }),
    ),
    memory_rss_bytes: Nullable(Type.Integer({ description: 'Hypervisor process RSS' })),
    memory_vms_bytes: Nullable(Type.Integer({ description: 'Hypervisor process virtual size' })),
    network_rx_bytes: Nullable(
      Type.Integer({ description: 'Bytes received by the VM (its TAP device, bridge mode)' }),
    ),
    network_tx_bytes: Nullable(Type.Integer({ description: 'Bytes sent by the VM' })),
    allocated_vcpus: Type.Integer(),
    allocated_memory_bytes: Type.Integer(),
    memory_utilization_ratio: Nullable(Type.Number({ description: 'RSS / allocated memory' })),
    disk_read_bytes: Nullable(
      Type.Integer({ description: 'Vessel: bytes the guest read from its disks (QMP)' }),
    ),
    disk_write_bytes: Nullable(
      Type.Integer({ description: 'Vessel: bytes the guest wrote to its disks (QMP)' }),
    ),
    state: InstanceStateSchema,
    pid: Nullable(Type.Integer()),
    collected_at: Type.String({ format: 'date-time' }),
    unavailable: Type.Record(Type.String(), Type.String(), {
      description: 'Vessel: why a field is null, by field name',
    }),
  },
  { title: 'InstanceStats' },
);

const Names = (names: readonly string[]) => Type.Array(Type.String(), { examples: [names] });

/** `GET /capabilities` (the hypeman API's Capabilities). */
export const CapabilitiesSchema = Type.Object(
  {
    server: Type.Object({ version: Type.String(), api_version: Type.String() }),
    host: Type.Object({
      os: Type.String(),
      arch: Type.String({ description: 'Go naming: amd64, arm64' }),
    }),
    default_runtime: Type.Object({ name: Type.String(), available: Type.Boolean() }),
    runtimes: Type.Array(
      Type.Object({
        name: Type.String({ description: `One of ${HYPERVISOR_NAMES.join(', ')}` }),
        available: Type.Boolean(),
        features: Names(['standby', 'fork', 'pause']),
        reason: Type.Optional(Type.String({ description: 'Vessel: why it is not available' })),
      }),
    ),
    network: Type.Object({
      model: Type.Union([Type.Literal('bridge'), Type.Literal('nat')], {
        description: 'bridge: TAP per VM on a Linux bridge; nat: user-mode networking',
      }),
      gateway: Type.Optional(Type.String()),
      subnet: Type.Optional(Type.String()),
      guest_to_guest: Type.Boolean(),
    }),
    images: Type.Object({
      platforms: Type.Array(Type.String()),
      default_platform: Type.String(),
    }),
    features: Names(['instances', 'images', 'ingress', 'exec', 'logs']),
    accelerator: Type.Optional(
      Type.String({ description: 'Vessel: kvm, or tcg (software emulation)' }),
    ),
  },
  { title: 'Capabilities' },
);

/** `POST /images`. */
export const CreateImageRequestSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 512, description: 'Image reference to pull' }),
    platform: Type.Optional(
      Type.String({
        pattern: '^[a-z0-9]+/[a-z0-9]+(/[a-z0-9.]+)?$',
        description: 'os/arch[/variant]; only the host platform is accepted',
      }),
    ),
    tags: Type.Optional(TagsSchema),
  },
  { additionalProperties: false, title: 'CreateImageRequest' },
);

/** `POST /ingresses`: hypeman's `rules` (one), or Vessel's flat fields. */
export const CreateIngressBodySchema = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' }),
    rules: Type.Optional(Type.Array(IngressRuleSchema, { minItems: 1 })),
    tags: Type.Optional(TagsSchema),
    instance: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    hostname: Type.Optional(Type.String({ minLength: 1, maxLength: 253 })),
    guest_port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
    host_port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  },
  { additionalProperties: false, title: 'CreateIngressRequest' },
);

export type UpdateInstanceRequestWire = Static<typeof UpdateInstanceRequestSchema>;
export type StartInstanceRequestWire = Static<typeof StartInstanceRequestSchema>;
export type StandbyInstanceRequestWire = Static<typeof StandbyInstanceRequestSchema>;
export type PathInfo = Static<typeof PathInfoSchema>;
export type InstanceStats = Static<typeof InstanceStatsSchema>;
export type Capabilities = Static<typeof CapabilitiesSchema>;
export type CreateImageRequestWire = Static<typeof CreateImageRequestSchema>;
export type CreateIngressBodyWire = Static<typeof CreateIngressBodySchema>;
