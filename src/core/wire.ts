import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ERROR_CODES } from './errors.js';

/**
 * The API's wire types, as JSON schemas (TypeBox) with their static types.
 * The daemon validates and documents with them; the typed client and the
 * subsystems that produce these objects use the static types, so the two
 * sides cannot drift apart.
 */

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
export const ErrorSchema = Type.Object(
  {
    code: Type.String({
      description: 'Stable machine-readable code',
      enum: Object.keys(ERROR_CODES),
    }),
    message: Type.String({ description: 'What went wrong, naming the thing involved' }),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  },
  { title: 'Error' },
);

export const ImageStatusSchema = Type.Union(
  [
    Type.Literal('pending'),
    Type.Literal('pulling'),
    Type.Literal('converting'),
    Type.Literal('ready'),
    Type.Literal('failed'),
  ],
  { description: 'pending → pulling → converting → ready | failed' },
);

export const ImageSchema = Type.Object(
  {
    name: Type.String({
      description: 'Normalised reference, e.g. docker.io/library/alpine:latest',
    }),
    digest: Nullable(Type.String({ description: 'Manifest digest once resolved' })),
    platform: Nullable(Type.String()),
    status: ImageStatusSchema,
    queue_position: Nullable(Type.Integer()),
    error: Nullable(Type.String({ description: 'The real failure when status is failed' })),
    error_code: Nullable(Type.String()),
    source: Type.Union([Type.Literal('registry'), Type.Literal('import')]),
    format: Nullable(Type.Union([Type.Literal('erofs'), Type.Literal('ext4')])),
    size_bytes: Nullable(Type.Integer()),
    entrypoint: Nullable(Type.Array(Type.String())),
    cmd: Nullable(Type.Array(Type.String())),
    env: Type.Record(Type.String(), Type.String()),
    working_dir: Nullable(Type.String()),
    user: Nullable(Type.String()),
    exposed_ports: Type.Array(Type.String()),
    layers: Type.Array(Type.String()),
    created_at: Type.String({ format: 'date-time' }),
    updated_at: Type.String({ format: 'date-time' }),
  },
  { title: 'Image' },
);

export const GcResultSchema = Type.Object({
  removed_blobs: Type.Integer(),
  removed_disks: Type.Integer(),
  freed_bytes: Type.Integer(),
});

export const HealthSchema = Type.Object({
  status: Type.Literal('ok'),
  version: Type.String(),
  uptime_seconds: Type.Number(),
});

const CheckSchema = Type.Object({
  id: Type.String(),
  title: Type.String(),
  status: Type.Union([Type.Literal('ok'), Type.Literal('warn'), Type.Literal('fail')]),
  detail: Type.String(),
  fix: Type.Optional(Type.String()),
});

export const ResourcesSchema = Type.Object({
  host: Type.Object({
    cpus: Type.Integer(),
    memory_bytes: Type.Integer(),
    memory_free_bytes: Type.Integer(),
    arch: Type.String(),
    kernel: Type.String(),
    disk: Type.Object({
      path: Type.String(),
      total_bytes: Type.Integer(),
      free_bytes: Type.Integer(),
    }),
  }),
  accelerators: Type.Object({
    kvm: Type.Object({
      usable: Type.Boolean(),
      reason: Type.String(),
      device_present: Type.Boolean(),
      kvm_ms: Type.Optional(Type.Number()),
      tcg_ms: Type.Optional(Type.Number()),
    }),
    tcg: Type.Boolean(),
  }),
  hypervisors: Type.Array(
    Type.Object({
      name: Type.String(),
      path: Nullable(Type.String()),
      version: Nullable(Type.String()),
    }),
  ),
  checks: Type.Array(CheckSchema),
  images: Type.Record(Type.String(), Type.Integer()),
});

export const LayerProgressSchema = Type.Object({
  digest: Type.String(),
  current: Type.Integer(),
  total: Nullable(Type.Integer()),
});

export type WireImage = Static<typeof ImageSchema>;
export type WireImageStatus = Static<typeof ImageStatusSchema>;
export type Health = Static<typeof HealthSchema>;
export type Resources = Static<typeof ResourcesSchema>;
export type GcResult = Static<typeof GcResultSchema>;
export type LayerProgress = Static<typeof LayerProgressSchema>;
export type ErrorResponse = Static<typeof ErrorSchema>;

/** Instance states, named as in the hypeman API. */
export const INSTANCE_STATE_NAMES = [
  'Created',
  'Initializing',
  'Running',
  'Paused',
  'Shutdown',
  'Stopped',
  'Standby',
  'Unknown',
] as const;

export const InstanceStateSchema = Type.Union(
  INSTANCE_STATE_NAMES.map((s) => Type.Literal(s)),
  { description: 'Running only after the guest program started and its agent is ready' },
);

const Port = Type.Integer({ minimum: 1, maximum: 65535 });
const PortProtocolSchema = Type.Union([Type.Literal('tcp'), Type.Literal('udp')]);

/** A published port as requested: `host_ip` defaults to 127.0.0.1, `protocol` to tcp. */
export const PortMappingRequestSchema = Type.Object(
  {
    host_port: Port,
    guest_port: Port,
    protocol: Type.Optional(PortProtocolSchema),
    host_ip: Type.Optional(
      Type.String({
        pattern: '^[0-9]{1,3}([.][0-9]{1,3}){3}$',
        description: 'Host IPv4 address to listen on',
      }),
    ),
  },
  { additionalProperties: false, title: 'PortMappingRequest' },
);

export const PortMappingSchema = Type.Object(
  { host_ip: Type.String(), host_port: Port, guest_port: Port, protocol: PortProtocolSchema },
  { title: 'PortMapping' },
);

export const InstanceNetworkSchema = Type.Object(
  {
    mode: Type.Union([Type.Literal('bridge'), Type.Literal('user'), Type.Literal('none')], {
      description:
        'bridge: TAP on the Vessel bridge with NAT; user: QEMU user-mode networking (no root, no TAP); none: loopback only',
    }),
    ip: Nullable(Type.String({ description: 'The guest IPv4 address' })),
    gateway: Nullable(Type.String()),
    mac: Nullable(Type.String()),
    egress: Type.Boolean({
      description:
        'The guest may open connections out (and, in user mode, reach host loopback services)',
    }),
    group: Type.Optional(
      Nullable(
        Type.String({
          description: 'Bridge mode: instances of one network group reach each other',
        }),
      ),
    ),
  },
  { title: 'InstanceNetwork' },
);

export const InstanceSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    image: Type.String(),
    image_digest: Type.String(),
    state: InstanceStateSchema,
    state_error: Nullable(Type.String()),
    hypervisor: Type.String(),
    accel: Nullable(Type.String({ description: 'kvm, or tcg (software emulation)' })),
    kernel: Type.String(),
    vcpus: Type.Integer(),
    memory_mib: Type.Integer(),
    disk_bytes: Type.Integer(),
    entrypoint: Type.Array(Type.String()),
    cmd: Type.Array(Type.String()),
    env: Type.Array(Type.String()),
    pid: Nullable(Type.Integer()),
    exit_code: Nullable(
      Type.Integer({ description: 'Exit code of the main command once it exited' }),
    ),
    network: InstanceNetworkSchema,
    ports: Type.Array(PortMappingSchema),
    cid: Nullable(Type.Integer({ description: 'Guest context id, unique per instance' })),
    source_id: Nullable(Type.String({ description: 'The instance this one was forked from' })),
    created_at: Type.String({ format: 'date-time' }),
    started_at: Nullable(Type.String({ format: 'date-time' })),
    stopped_at: Nullable(Type.String({ format: 'date-time' })),
  },
  { title: 'Instance' },
);

export const CreateInstanceRequestSchema = Type.Object(
  {
    image: Type.String({ minLength: 1, maxLength: 512 }),
    name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
    cmd: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { maxItems: 4096 })),
    entrypoint: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { maxItems: 4096 })),
    env: Type.Optional(
      Type.Array(Type.String({ pattern: '^[^=]+=', maxLength: 65536 }), { maxItems: 4096 }),
    ),
    workdir: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    user: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    vcpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memory_mib: Type.Optional(Type.Integer({ minimum: 64, maximum: 1024 * 1024 })),
    disk_bytes: Type.Optional(Type.Integer({ minimum: 16 * 1024 * 1024 })),
    network: Type.Optional(
      Type.Object(
        {
          mode: Type.Optional(
            Type.Union([Type.Literal('bridge'), Type.Literal('user'), Type.Literal('none')], {
              description:
                'bridge (TAP + NAT, needs root), user (rootless), none; default: bridge when the host can make TAPs, else user',
            }),
          ),
          name: Type.Optional(
            Type.String({
              pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$',
              description:
                'Bridge mode network group: instances with the same name may reach each other (default: isolated)',
            }),
          ),
          enabled: Type.Optional(
            Type.Boolean({
              description:
                'User-mode networking (true) or loopback only (false); default: true when ports are published or egress is asked for',
            }),
          ),
          egress: Type.Optional(
            Type.Boolean({
              description:
                'Let the guest open connections out (default false: only published ports reach it)',
            }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    ports: Type.Optional(Type.Array(PortMappingRequestSchema, { maxItems: 256 })),
  },
  { additionalProperties: false, title: 'CreateInstanceRequest' },
);

export const ExecRequestSchema = Type.Object(
  {
    argv: Type.Array(Type.String({ maxLength: 65536 }), { minItems: 1, maxItems: 4096 }),
    env: Type.Optional(Type.Array(Type.String({ pattern: '^[^=]+=' }), { maxItems: 4096 })),
    cwd: Type.Optional(Type.String({ minLength: 1 })),
    user: Type.Optional(Type.String({ minLength: 1 })),
    stdin: Type.Optional(Type.String({ description: 'Bytes (UTF-8) to send to stdin, then EOF' })),
  },
  { additionalProperties: false, title: 'ExecRequest' },
);

export const ExecResultSchema = Type.Object(
  {
    stdout: Type.String(),
    stderr: Type.String(),
    exit_code: Nullable(Type.Integer()),
    signal: Nullable(Type.Integer()),
  },
  { title: 'ExecResult' },
);

export type WireInstance = Static<typeof InstanceSchema>;
export type CreateInstanceRequestWire = Static<typeof CreateInstanceRequestSchema>;
export type ExecRequestWire = Static<typeof ExecRequestSchema>;
export type ExecResult = Static<typeof ExecResultSchema>;
export type PortMappingRequest = Static<typeof PortMappingRequestSchema>;
export type PortMapping = Static<typeof PortMappingSchema>;
export type InstanceNetwork = Static<typeof InstanceNetworkSchema>;

export const LIFECYCLE_EVENT_TYPES = [
  'create',
  'update',
  'start',
  'stop',
  'pause',
  'resume',
  'standby',
  'restore',
  'fork',
  'delete',
  'state',
] as const;

export const LifecycleEventSchema = Type.Object(
  {
    seq: Type.Integer({ description: 'Increases by one per event within one daemon run' }),
    type: Type.Union(LIFECYCLE_EVENT_TYPES.map((t) => Type.Literal(t))),
    instance_id: Type.String(),
    instance_name: Type.String(),
    old_state: Nullable(InstanceStateSchema),
    new_state: Nullable(InstanceStateSchema),
    time: Type.String({ format: 'date-time' }),
    state_error: Nullable(Type.String()),
    source_id: Type.Optional(Type.String()),
  },
  { title: 'LifecycleEvent' },
);

export const WaitResultSchema = Type.Object(
  {
    state: InstanceStateSchema,
    timed_out: Type.Boolean({ description: 'True when the timeout passed before the state' }),
  },
  { title: 'WaitResult' },
);

export const ForkRequestSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
  },
  { additionalProperties: false, title: 'ForkRequest' },
);

export type WireLifecycleEvent = Static<typeof LifecycleEventSchema>;
export type WaitResult = Static<typeof WaitResultSchema>;
export type ForkRequestWire = Static<typeof ForkRequestSchema>;

export const KernelSchema = Type.Object(
  {
    name: Type.String({ description: 'Catalog name, e.g. debian-cloud-6.1' }),
    version: Type.String({ description: 'Kernel release (uname -r), e.g. 6.1.0-56-cloud-amd64' }),
    source_type: Type.Union([Type.Literal('apt'), Type.Literal('path'), Type.Literal('url')]),
    package: Nullable(
      Type.String({ description: 'apt: the concrete package; url: the URL; path: null' }),
    ),
    sha256: Type.String({ description: 'sha256 (hex) of the kernel image' }),
    size_bytes: Type.Integer({
      description: 'Bytes on disk: kernel image, selected modules, cached initramfs files',
    }),
    modules: Type.Array(Type.String(), { description: 'Module files in load order' }),
    in_use_by: Type.Array(Type.String(), {
      description: 'Instances whose record references this version (removal is refused)',
    }),
    created_at: Type.String({ format: 'date-time' }),
  },
  { title: 'Kernel' },
);

export const PullKernelRequestSchema = Type.Object(
  {
    name: Type.Optional(
      Type.String({
        pattern: '^[a-z0-9][a-z0-9._-]{0,63}$',
        description: 'Catalog name; default debian-cloud-6.1. The source decides the version.',
      }),
    ),
  },
  { additionalProperties: false, title: 'PullKernelRequest' },
);

export type WireKernel = Static<typeof KernelSchema>;
export type PullKernelRequestWire = Static<typeof PullKernelRequestSchema>;

export const IngressSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    instance: Type.String({
      description:
        'Instance id or name the traffic goes to, or `{instance}` when the hostname is a pattern',
    }),
    hostname: Type.String({
      description:
        'Host header to match (port stripped, case-insensitive): exact, or a pattern such as `{instance}.example.com`',
    }),
    guest_port: Port,
    host_port: Port,
    listen_address: Type.String({ description: 'Address the ingress listener is bound on' }),
    created_at: Type.String({ format: 'date-time' }),
  },
  { title: 'Ingress' },
);

export const CreateIngressRequestSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' }),
    instance: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 128,
        description:
          'Instance id or name; `{instance}` (the default for a pattern hostname) takes it from the Host header',
      }),
    ),
    hostname: Type.String({ minLength: 1, maxLength: 253 }),
    guest_port: Port,
    host_port: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 65535,
        description: 'Port of the HTTP listener (default 80); one listener per distinct port',
      }),
    ),
  },
  { additionalProperties: false, title: 'CreateIngressRequest' },
);

export type WireIngress = Static<typeof IngressSchema>;
export type CreateIngressRequestWire = Static<typeof CreateIngressRequestSchema>;
