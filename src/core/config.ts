import fs from 'node:fs';
import os from 'node:os';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { VesselError, errnoCode, errorMessage } from './errors.js';

export const DEFAULT_DATA_DIR = '/var/lib/vessel';

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
  return cfg;
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
