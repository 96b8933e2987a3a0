import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ERROR_CODES } from './errors.js';
import { INSTANCE_STATE_NAMES, LIFECYCLE_EVENT_TYPES } from './wire-names.js';

export { INSTANCE_STATE_NAMES, LIFECYCLE_EVENT_TYPES };

/**
 * The API's wire types, as JSON schemas (TypeBox) with their static types.
 * The daemon validates and documents with them; the typed client and the
 * subsystems that produce these objects use the static types, so the two
 * sides cannot drift apart.
 */

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

/** One more error, or the cause of one (the hypeman API's ErrorDetail). */
export const ErrorDetailSchema = Type.Object(
  {
    code: Type.Optional(Type.String({ description: 'Lower-level code' })),
    message: Type.Optional(Type.String()),
  },
  { title: 'ErrorDetail' },
);

/** The error body of every non-2xx JSON response (the hypeman API's Error, plus `context`). */
export const ErrorSchema = Type.Object(
  {
    code: Type.String({
      description: 'Stable machine-readable code',
      enum: Object.keys(ERROR_CODES),
    }),
    message: Type.String({ description: 'What went wrong, naming the thing involved' }),
    details: Type.Optional(
      Type.Array(ErrorDetailSchema, {
        description: 'Further errors, e.g. one per invalid request field',
      }),
    ),
    inner_error: Type.Optional(ErrorDetailSchema),
    context: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description: 'Vessel: structured facts about the error (instance, field, states, port...)',
      }),
    ),
  },
  { title: 'Error' },
);

/** User-defined key-value tags (the hypeman API's Tags). */
export const TagsSchema = Type.Record(
  Type.String({ pattern: '^[A-Za-z0-9 _.:/=+@-]{1,128}$' }),
  Type.String({ maxLength: 256, pattern: '^[A-Za-z0-9 _.:/=+@-]*$' }),
  { maxProperties: 50, description: 'User-defined key-value tags' },
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
    source: Type.Union([Type.Literal('registry'), Type.Literal('import'), Type.Literal('build')]),
    format: Nullable(Type.Union([Type.Literal('erofs'), Type.Literal('ext4')])),
    size_bytes: Nullable(Type.Integer()),
    entrypoint: Nullable(Type.Array(Type.String())),
    cmd: Nullable(Type.Array(Type.String())),
    env: Type.Record(Type.String(), Type.String()),
    working_dir: Nullable(Type.String()),
    user: Nullable(Type.String()),
    exposed_ports: Type.Array(Type.String()),
    layers: Type.Array(Type.String()),
    tags: TagsSchema,
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

/** One resource's capacity and allocation (the hypeman API's ResourceStatus). */
export const ResourceStatusSchema = Type.Object(
  {
    type: Type.String({ description: 'cpu, memory, disk or network' }),
    capacity: Type.Integer({ description: 'Host capacity (vCPUs, bytes, bytes/s)' }),
    effective_limit: Type.Integer({ description: 'capacity × oversub_ratio' }),
    allocated: Type.Integer({
      description: 'Held by instances with a VMM (disk: by every instance)',
    }),
    available: Type.Integer({
      description:
        'effective_limit − allocated; negative when overcommitted (Vessel does not refuse)',
    }),
    oversub_ratio: Type.Number(),
    source: Type.Optional(Type.String({ description: 'How capacity was found' })),
  },
  { title: 'ResourceStatus' },
);

export const ResourceAllocationSchema = Type.Object(
  {
    instance_id: Type.String(),
    instance_name: Type.String(),
    cpu: Type.Integer({ description: 'vCPUs' }),
    memory_bytes: Type.Integer(),
    disk_bytes: Type.Integer({ description: 'Writable overlay disk size' }),
  },
  { title: 'ResourceAllocation' },
);

export const ResourcesSchema = Type.Object(
  {
    cpu: ResourceStatusSchema,
    memory: ResourceStatusSchema,
    disk: ResourceStatusSchema,
    network: ResourceStatusSchema,
    allocations: Type.Array(ResourceAllocationSchema),
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
  },
  { title: 'Resources' },
);

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

/** hypeman's `VolumeMount`: a volume (id or name) to attach at create. */
export const VolumeMountSchema = Type.Object(
  {
    volume_id: Type.String({ minLength: 1, maxLength: 128, description: 'Volume id or name' }),
    mount_path: Type.String({
      minLength: 1,
      maxLength: 4096,
      description: 'Absolute, normalized guest path; not /, /proc, /dev, /sys or below them',
    }),
    readonly: Type.Optional(Type.Boolean({ default: false })),
    overlay: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          'A private copy-on-write layer over the volume (the volume itself is only read)',
      }),
    ),
    overlay_size: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 32,
        description: 'Size of the private layer ("1GB"); default: the volume\'s size',
      }),
    ),
  },
  { additionalProperties: false, title: 'VolumeMount' },
);
export type VolumeMountWire = Static<typeof VolumeMountSchema>;

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
    enabled: Type.Boolean({ description: 'The instance has a NIC (mode is not none)' }),
    name: Type.Optional(
      Type.String({
        description: 'Network name when enabled: the bridge group, else "default"',
      }),
    ),
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

/** Hypervisor names as the hypeman API spells them. */
export const HYPERVISOR_NAMES = [
  'cloud-hypervisor',
  'firecracker',
  'qemu',
  'qemu-microvm',
  'vz',
] as const;
export const HypervisorNameSchema = Type.Union(
  HYPERVISOR_NAMES.map((h) => Type.Literal(h)),
  { description: 'Vessel runs QEMU with the microvm board: qemu-microvm' },
);

/** How long the latest cold boot spent in each phase (Vessel). */
export const BootDurationsSchema = Type.Object(
  {
    vmm_start: Type.Integer({
      description: 'Boot requested → hypervisor process running (disks, initramfs, VMM start)',
    }),
    guest_boot: Type.Integer({
      description: "VMM running → the guest program's program-start marker (kernel, init)",
    }),
    agent_ready: Type.Integer({
      description: 'program-start → Running (agent-ready marker and the agent said hello)',
    }),
    total: Type.Integer({ description: 'Boot requested → Running' }),
  },
  { title: 'BootDurations' },
);

export const InstanceSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    image: Type.String(),
    image_digest: Type.String(),
    platform: Type.String({ description: 'Image platform as os/arch, e.g. linux/amd64' }),
    state: InstanceStateSchema,
    state_error: Nullable(Type.String()),
    hypervisor: HypervisorNameSchema,
    accel: Nullable(Type.String({ description: 'kvm, or tcg (software emulation)' })),
    kernel: Type.String(),
    vcpus: Type.Integer(),
    size: Type.String({ description: 'Memory size, human-readable (e.g. "512MB")' }),
    memory_mib: Type.Integer(),
    overlay_size: Type.String({ description: 'Writable overlay disk size, human-readable' }),
    disk_io_bps: Type.Optional(
      Type.String({ description: 'Disk I/O limit over all the VM\'s disks ("100MB/s")' }),
    ),
    disk_bytes: Type.Integer(),
    entrypoint: Type.Array(Type.String()),
    cmd: Type.Array(Type.String()),
    env: Type.Record(Type.String(), Type.String(), {
      description:
        "Environment of the main command (image env merged with the request's); exec inherits it",
    }),
    tags: TagsSchema,
    pid: Nullable(Type.Integer()),
    exit_code: Nullable(
      Type.Integer({ description: 'Exit code of the main command once it exited' }),
    ),
    exit_message: Type.Optional(
      Type.String({
        description:
          'How the main command ended, for people: "success", "command not found", "killed by signal 9 (SIGKILL)"; absent until it ended',
      }),
    ),
    has_snapshot: Type.Boolean({ description: 'A standby snapshot exists (state Standby)' }),
    network: InstanceNetworkSchema,
    ports: Type.Array(PortMappingSchema),
    cid: Nullable(Type.Integer({ description: 'Guest context id, unique per instance' })),
    source_id: Nullable(Type.String({ description: 'The instance this one was forked from' })),
    created_at: Type.String({ format: 'date-time' }),
    expires_at: Nullable(
      Type.String({
        format: 'date-time',
        description: 'TTL: the instance is deleted at this time; null: never',
      }),
    ),
    started_at: Nullable(Type.String({ format: 'date-time' })),
    stopped_at: Nullable(Type.String({ format: 'date-time' })),
    phase_durations_ms: Type.Record(Type.String(), Type.Integer(), {
      description:
        'Cumulative milliseconds spent in each state (keys: states in lower case), including the current one up to now',
    }),
    current_phase: Type.String({ description: 'The current state in lower case' }),
    current_phase_since: Type.String({ format: 'date-time' }),
    boot_durations_ms: Nullable(BootDurationsSchema),
  },
  { title: 'Instance' },
);

/** Environment variables: `["KEY=VALUE", ...]` (Vessel) or `{"KEY": "VALUE"}` (hypeman). */
export const EnvSchema = Type.Union([
  Type.Array(Type.String({ pattern: '^[^=]+=', maxLength: 65536 }), { maxItems: 4096 }),
  Type.Record(Type.String({ pattern: '^[^=]+$' }), Type.String({ maxLength: 65536 }), {
    maxProperties: 4096,
  }),
]);

export const CreateInstanceRequestSchema = Type.Object(
  {
    image: Type.String({ minLength: 1, maxLength: 512 }),
    name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
    cmd: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { maxItems: 4096 })),
    entrypoint: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { maxItems: 4096 })),
    env: Type.Optional(EnvSchema),
    workdir: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
    user: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
    stdin: Type.Optional(
      Type.Boolean({
        description:
          "Keep the main command's stdin open for an attached client (`run -i`); default: /dev/null",
      }),
    ),
    tty: Type.Optional(
      Type.Boolean({
        description:
          'Run the main command under a pseudo-terminal (`run -t`): stdout and stderr merge',
      }),
    ),
    vcpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 64 })),
    memory_mib: Type.Optional(Type.Integer({ minimum: 64, maximum: 1024 * 1024 })),
    size: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 32,
        description: 'Memory, human-readable ("512MB", "1GB"); instead of memory_mib',
      }),
    ),
    disk_bytes: Type.Optional(Type.Integer({ minimum: 16 * 1024 * 1024 })),
    disk_io_bps: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 32,
        description:
          'Disk I/O limit over all the VM\'s disks, reads and writes together ("100MB/s"; at least 1MB/s)',
      }),
    ),
    overlay_size: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 32,
        description: 'Writable overlay disk size, human-readable ("10GB"); instead of disk_bytes',
      }),
    ),
    tags: Type.Optional(TagsSchema),
    ttl: Type.Optional(
      Type.Union([Type.String({ maxLength: 64 }), Type.Number({ minimum: 0 })], {
        description:
          'Lifetime from creation: a Go duration ("24h", "90m") or seconds; the instance is deleted when it expires. "0s": never',
      }),
    ),
    expires_at: Type.Optional(
      Type.String({
        format: 'date-time',
        description: 'Absolute expiry (in the future); instead of ttl',
      }),
    ),
    hypervisor: Type.Optional(HypervisorNameSchema),
    platform: Type.Optional(
      Type.String({
        pattern: '^[a-z0-9]+/[a-z0-9]+(/[a-z0-9.]+)?$',
        description: 'os/arch[/variant]; only the host platform (e.g. linux/amd64) is accepted',
      }),
    ),
    skip_guest_agent: Type.Optional(
      Type.Boolean({
        description:
          "Accepted for hypeman compatibility: Vessel's agent is part of its init, so there is no install step to skip (exec and stat keep working)",
      }),
    ),
    skip_kernel_headers: Type.Optional(
      Type.Boolean({
        description:
          'Vessel never installs kernel headers in the guest: true is accepted, false is refused',
      }),
    ),
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
            Type.Union(
              [
                Type.Boolean(),
                Type.Object(
                  {
                    enabled: Type.Optional(Type.Boolean()),
                    enforcement: Type.Optional(
                      Type.Object(
                        {
                          mode: Type.Optional(
                            Type.Union([Type.Literal('all'), Type.Literal('http_https_only')]),
                          ),
                        },
                        { additionalProperties: false },
                      ),
                    ),
                  },
                  { additionalProperties: false },
                ),
              ],
              {
                description:
                  'true: let the guest open connections out (default false: only published ports reach it). The hypeman object form is accepted with enabled false (host-mediated egress is not supported)',
              },
            ),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    ports: Type.Optional(Type.Array(PortMappingRequestSchema, { maxItems: 256 })),
    volumes: Type.Optional(Type.Array(VolumeMountSchema, { maxItems: 32 })),
  },
  { additionalProperties: false, title: 'CreateInstanceRequest' },
);

export const ExecRequestSchema = Type.Object(
  {
    argv: Type.Array(Type.String({ maxLength: 65536 }), { minItems: 1, maxItems: 4096 }),
    env: Type.Optional(Type.Array(Type.String({ pattern: '^[^=]+=' }), { maxItems: 4096 })),
    cwd: Type.Optional(Type.String({ minLength: 1 })),
    user: Type.Optional(Type.String({ minLength: 1 })),
    stdin: Type.Optional(Type.String({ description: 'Text (UTF-8) to send to stdin, then EOF' })),
    stdin_base64: Type.Optional(
      Type.String({
        contentEncoding: 'base64',
        pattern: '^[A-Za-z0-9+/]*={0,2}$',
        description: 'Bytes to send to stdin, then EOF (instead of stdin)',
      }),
    ),
  },
  { additionalProperties: false, title: 'ExecRequest' },
);

export const ExecResultSchema = Type.Object(
  {
    stdout: Type.String({ description: 'stdout as UTF-8 text (see stdout_base64)' }),
    stderr: Type.String({ description: 'stderr as UTF-8 text (see stderr_base64)' }),
    stdout_base64: Type.Optional(
      Type.String({
        contentEncoding: 'base64',
        description:
          'The exact stdout bytes; present when they are not valid UTF-8 (stdout then holds a lossy decoding)',
      }),
    ),
    stderr_base64: Type.Optional(
      Type.String({
        contentEncoding: 'base64',
        description: 'The exact stderr bytes; present when they are not valid UTF-8',
      }),
    ),
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
    state_error: Type.Optional(
      Nullable(Type.String({ description: "The instance's state error when the wait ended" })),
    ),
    timed_out: Type.Boolean({ description: 'True when the timeout passed before the state' }),
  },
  { title: 'WaitForStateResponse' },
);

/** States a fork can be left in (the hypeman API's ForkTargetState). */
export const ForkTargetStateSchema = Type.Union(
  [Type.Literal('Stopped'), Type.Literal('Standby'), Type.Literal('Running')],
  { description: 'Final state of the fork; default: the source state at fork time' },
);

export const ForkRequestSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_.-]{0,62}$' })),
    from_running: Type.Optional(
      Type.Boolean({
        description:
          'Allow a Running source: it goes to standby for the copy and is restored afterwards',
      }),
    ),
    target_state: Type.Optional(ForkTargetStateSchema),
  },
  { additionalProperties: false, title: 'ForkInstanceRequest' },
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

/** One routing rule (the hypeman API's IngressRule); Vessel has one rule per ingress. */
export const IngressRuleSchema = Type.Object(
  {
    match: Type.Object(
      {
        hostname: Type.String({
          minLength: 1,
          maxLength: 253,
          description: 'Host header to match: exact, or a pattern such as `{instance}.example.com`',
        }),
        port: Type.Optional(
          Type.Integer({
            minimum: 1,
            maximum: 65535,
            description: 'Host port to listen on (default 80)',
          }),
        ),
      },
      { additionalProperties: false },
    ),
    target: Type.Object(
      {
        instance: Type.String({
          minLength: 1,
          maxLength: 128,
          description: 'Instance id or name, or `{instance}` for a pattern hostname',
        }),
        port: Port,
      },
      { additionalProperties: false },
    ),
    tls: Type.Optional(
      Type.Boolean({ description: 'TLS termination: not supported (false only)' }),
    ),
    redirect_http: Type.Optional(
      Type.Boolean({ description: 'HTTP→HTTPS redirect: not supported (false only)' }),
    ),
  },
  { additionalProperties: false, title: 'IngressRule' },
);

export const IngressSchema = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    tags: TagsSchema,
    rules: Type.Array(IngressRuleSchema, { description: 'The route as hypeman rules (one)' }),
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
    tags: Type.Optional(TagsSchema),
  },
  { additionalProperties: false, title: 'CreateIngressRoute' },
);

export type WireIngress = Static<typeof IngressSchema>;
export type CreateIngressRequestWire = Static<typeof CreateIngressRequestSchema>;
