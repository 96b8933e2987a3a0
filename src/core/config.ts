import fs from 'node:fs';
import os from 'node:os';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { VesselError, errnoCode, errorMessage } from './errors.js';
import { DEFAULT_DATA_DIR } from './paths.js';

export { DEFAULT_DATA_DIR };

const HostPort = Type.Object(
  {
    host: Type.String({ minLength: 1 }),
    port: Type.Integer({ minimum: 0, maximum: 65535 }),
  },
  { additionalProperties: false },
);

export const ConfigSchema = Type.Object(
  {
    data_dir: Type.String({ minLength: 1 }),
    log_level: Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    ),
    api: Type.Object(
      {
        /** Group that may use the unix socket (name or gid); socket mode is always 0660. */
        socket_group: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Integer()])),
        /** TCP listener; only started when set, and only with at least one token. */
        tcp: Type.Optional(HostPort),
        tokens: Type.Array(Type.String({ minLength: 16 })),
      },
      { additionalProperties: false },
    ),
    images: Type.Object(
      {
        format: Type.Union([Type.Literal('auto'), Type.Literal('erofs'), Type.Literal('ext4')]),
        max_concurrent_conversions: Type.Integer({ minimum: 1, maximum: 64 }),
        max_concurrent_downloads: Type.Integer({ minimum: 1, maximum: 64 }),
        /** Upper bound on the bytes one image may unpack to (decompression bomb guard). */
        max_unpacked_bytes: Type.Integer({ minimum: 1 }),
        /** Registries (host or host:port) reached over plain HTTP; loopback always is. */
        insecure_registries: Type.Array(Type.String({ minLength: 1 })),
        credentials_file: Type.Optional(Type.String({ minLength: 1 })),
        /**
         * Fast filesystem (tmpfs) where layers are unpacked before mkfs when the image
         * fits; null unpacks in the data directory. Default /dev/shm.
         */
        unpack_staging_dir: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
      },
      { additionalProperties: false },
    ),
    instances: Type.Object(
      {
        /** Per-subscriber queue bound of the lifecycle event bus; a full queue drops and counts. */
        lifecycle_event_buffer_size: Type.Integer({ minimum: 1, maximum: 65536 }),
        /** How long a guest may take from VMM start to agent-ready. */
        boot_timeout_seconds: Type.Integer({ minimum: 1, maximum: 3600 }),
      },
      { additionalProperties: false },
    ),
    network: Type.Object(
      {
        /** Linux bridge Vessel owns for TAP-mode guests (created at daemon start). */
        bridge: Type.String({ minLength: 1, maxLength: 15, pattern: '^[A-Za-z0-9_.-]+$' }),
        /** Guest subnet (IPv4 CIDR); the gateway (first address) sits on the bridge. */
        subnet: Type.String({ minLength: 9 }),
        /** Idle TAP devices kept ready for booting instances. */
        tap_pool_size: Type.Integer({ minimum: 0, maximum: 256 }),
        /** Default mode of instances that ask for networking without naming one. */
        default_mode: Type.Union([
          Type.Literal('auto'),
          Type.Literal('bridge'),
          Type.Literal('user'),
        ]),
      },
      { additionalProperties: false },
    ),
    dns: Type.Object(
      {
        /** Serve `<name>.<suffix>` for the instances and forward other names. */
        enabled: Type.Boolean(),
        /** Zone answered from the instances (`vm` serves `web.vm`). */
        suffix: Type.String({ minLength: 1, maxLength: 200, pattern: '^[A-Za-z0-9.-]+$' }),
        /**
         * Extra `host:port` addresses to serve (UDP and TCP) for the host's resolver; with
         * bridge networking the daemon also serves the bridge gateway on port 53 for guests.
         */
        listen: Type.Array(Type.String({ minLength: 3 })),
        /** `host[:port]` of the resolver other names go to; null: first nameserver of /etc/resolv.conf. */
        upstream: Type.Union([Type.String({ minLength: 1 }), Type.Null()]),
        /** Forwarded queries unanswered after this get SERVFAIL. */
        timeout_ms: Type.Integer({ minimum: 100, maximum: 60_000 }),
      },
      { additionalProperties: false },
    ),
    ingress: Type.Object(
      {
        /** Address every ingress listener binds (one listener per distinct host port). */
        listen_host: Type.String({ minLength: 1 }),
      },
      { additionalProperties: false },
    ),
    builds: Type.Object(
      {
        /** Builds that run at once; the rest queue. */
        max_concurrent: Type.Integer({ minimum: 1, maximum: 16 }),
        /** The builder VM's size (each RUN step boots one). */
        vcpus: Type.Integer({ minimum: 1, maximum: 64 }),
        memory_mib: Type.Integer({ minimum: 128, maximum: 1048576 }),
        /** Upper bound on the unpacked size of an uploaded build context. */
        max_context_bytes: Type.Integer({ minimum: 1 }),
      },
      { additionalProperties: false },
    ),
    confinement: Type.Object(
      {
        /**
         * Run every VMM through the jailer: own uid, mount namespace, no capabilities,
         * seccomp, cgroup limits. Turn off only to debug; `vessel doctor` then warns.
         */
        enabled: Type.Boolean(),
        /** First uid/gid of the range VMMs run as (one per instance). */
        uid_base: Type.Integer({ minimum: 1000, maximum: 4_000_000_000 }),
        uid_count: Type.Integer({ minimum: 16, maximum: 1_000_000 }),
        /** Memory a VMM may use beyond its guest's RAM before its cgroup limit. */
        memory_overhead_mib: Type.Integer({ minimum: 64, maximum: 65536 }),
        /** Processes and threads one VMM may have. */
        pids_max: Type.Integer({ minimum: 32, maximum: 65536 }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

export type Config = Static<typeof ConfigSchema>;

/** A deep-partial config, as given by a file, the environment or flags. */
export type ConfigOverrides = {
  [K in keyof Config]?: Config[K] extends readonly unknown[]
    ? Config[K]
    : Config[K] extends object
      ? Partial<Config[K]>
      : Config[K];
};

export function defaultConfig(dataDir = DEFAULT_DATA_DIR): Config {
  return {
    data_dir: dataDir,
    log_level: 'info',
    api: { tokens: [] },
    images: {
      format: 'auto',
      max_concurrent_conversions: Math.max(1, Math.min(4, os.availableParallelism())),
      max_concurrent_downloads: 4,
      max_unpacked_bytes: 32 * 1024 ** 3,
      insecure_registries: [],
      unpack_staging_dir: '/dev/shm',
    },
    instances: { lifecycle_event_buffer_size: 256, boot_timeout_seconds: 120 },
    builds: { max_concurrent: 1, vcpus: 2, memory_mib: 1024, max_context_bytes: 8 * 1024 ** 3 },
    dns: {
      enabled: true,
      suffix: 'vm',
      listen: ['127.0.0.1:10053'],
      upstream: null,
      timeout_ms: 2000,
    },
    ingress: { listen_host: '127.0.0.1' },
    confinement: {
      enabled: true,
      uid_base: 200_000,
      uid_count: 65_536,
      memory_overhead_mib: 384,
      pids_max: 512,
    },
    network: { bridge: 'vessel0', subnet: '10.88.0.0/16', tap_pool_size: 4, default_mode: 'auto' },
  };
}

function merge(base: Config, over: ConfigOverrides): Config {
  // Unknown keys are carried along so validation can name them.
  return {
    ...base,
    ...over,
    ...(over.data_dir === undefined ? { data_dir: base.data_dir } : {}),
    ...(over.log_level === undefined ? { log_level: base.log_level } : {}),
    api: { ...base.api, ...over.api },
    images: { ...base.images, ...over.images },
    instances: { ...base.instances, ...over.instances },
    dns: { ...base.dns, ...over.dns },
    ingress: { ...base.ingress, ...over.ingress },
    builds: { ...base.builds, ...over.builds },
    confinement: { ...base.confinement, ...over.confinement },
    network: { ...base.network, ...over.network },
  };
}

/** Overrides read from `VESSEL_*` environment variables. */
export function configFromEnv(env: NodeJS.ProcessEnv): ConfigOverrides {
  const out: ConfigOverrides = {};
  if (env.VESSEL_DATA_DIR) out.data_dir = env.VESSEL_DATA_DIR;
  if (env.VESSEL_LOG_LEVEL) out.log_level = env.VESSEL_LOG_LEVEL;
  if (env.VESSEL_API_TCP) {
    const m = /^(.+):(\d+)$/.exec(env.VESSEL_API_TCP);
    if (!m?.[1] || !m[2]) {
      throw new VesselError(
        'invalid_config',
        `VESSEL_API_TCP must be host:port, got "${env.VESSEL_API_TCP}"`,
      );
    }
    out.api = { ...out.api, tcp: { host: m[1], port: Number(m[2]) } };
  }
  if (env.VESSEL_API_TOKENS) {
    out.api = { ...out.api, tokens: env.VESSEL_API_TOKENS.split(',').filter(Boolean) };
  }
  if (env.VESSEL_CONFINEMENT) {
    if (env.VESSEL_CONFINEMENT !== 'on' && env.VESSEL_CONFINEMENT !== 'off') {
      throw new VesselError(
        'invalid_config',
        `VESSEL_CONFINEMENT must be on or off, got "${env.VESSEL_CONFINEMENT}"`,
      );
    }
    out.confinement = { enabled: env.VESSEL_CONFINEMENT === 'on' };
  }
  if (env.VESSEL_IMAGE_FORMAT) {
    out.images = { ...out.images, format: env.VESSEL_IMAGE_FORMAT as Config['images']['format'] };
  }
  if (env.VESSEL_INSECURE_REGISTRIES) {
    out.images = {
      ...out.images,
      insecure_registries: env.VESSEL_INSECURE_REGISTRIES.split(',').filter(Boolean),
    };
  }
  return out;
}

function readConfigFile(file: string, required: boolean): ConfigOverrides {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (!required && errnoCode(err) === 'ENOENT') return {};
    throw new VesselError(
      'invalid_config',
      `cannot read config file ${file}: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new VesselError(
      'invalid_config',
      `config file ${file} is not valid JSON: ${errorMessage(err)}`,
      {
        cause: err,
      },
    );
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new VesselError('invalid_config', `config file ${file} must hold a JSON object`);
  }
  return parsed;
}

/** Validate a complete config; the first problem becomes a clear error naming the key. */
export function validateConfig(config: unknown, source = 'configuration'): Config {
  const first = Value.Errors(ConfigSchema, config).First();
  if (first) {
    const key = first.path.replace(/^\//, '').replaceAll('/', '.') || '(root)';
    throw new VesselError('invalid_config', `${source}: ${key}: ${first.message}`);
  }
  const cfg = config as Config;
  if (cfg.api.tcp && cfg.api.tokens.length === 0) {
    throw new VesselError(
      'invalid_config',
      `${source}: api.tcp is set but api.tokens is empty; TCP is only served with bearer tokens`,
    );
  }
  if (!isCidr(cfg.network.subnet)) {
    throw new VesselError(
      'invalid_config',
      `${source}: network.subnet "${cfg.network.subnet}" must be an IPv4 network a.b.c.d/N with N in 8..30`,
    );
  }
  return cfg;
}

/** `a.b.c.d/N`, N in 8..30, with no host bits set (the network module does the arithmetic). */
function isCidr(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(s);
  if (!m) return false;
  const o = m.slice(1, 5).map(Number);
  const n = Number(m[5]);
  if (o.some((x) => x > 255) || n < 8 || n > 30) return false;
  const ip = o.reduce((a, x) => a * 256 + x, 0);
  return ip % 2 ** (32 - n) === 0;
}

export interface LoadConfigOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Highest-precedence overrides (command-line flags). */
  readonly flags?: ConfigOverrides;
}

/**
 * Load the configuration: defaults, then the config file (`VESSEL_CONFIG`, or
 * `<data_dir>/config.json` when present), then the environment, then flags.
 */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? process.env;
  const fromEnv = configFromEnv(env);
  const flags = options.flags ?? {};
  const dataDir = flags.data_dir ?? fromEnv.data_dir ?? DEFAULT_DATA_DIR;
  const explicit = env.VESSEL_CONFIG;
  const file = explicit ?? `${dataDir}/config.json`;
  const fromFile = readConfigFile(file, explicit !== undefined);
  let cfg = merge(defaultConfig(dataDir), fromFile);
  cfg = merge(cfg, fromEnv);
  cfg = merge(cfg, flags);
  return validateConfig(cfg, fromFile === undefined ? 'configuration' : `configuration (${file})`);
}
