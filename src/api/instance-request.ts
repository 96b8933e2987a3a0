/**
 * Request bodies of the instance routes (hypeman-shaped, with Vessel's own
 * fields) → the instance manager's requests: sizes, durations, env maps,
 * expiry, and the hypeman fields Vessel cannot honour.
 */
import { parseDurationOrSeconds } from '../core/duration.js';
import { VesselError } from '../core/errors.js';
import { hostPlatform } from '../core/platform.js';
import { parseSize } from '../core/size.js';
import type { CreateInstanceRequestWire } from '../core/wire.js';
import type { UpdateInstanceRequestWire } from '../core/wire-ops.js';
import {
  checkExpiresAt,
  type CreateInstanceRequest,
  type InstancePatch,
} from '../instances/index.js';
import { emptyArray, emptyObject, isFalse, offWhen, type Unsupported } from './unsupported.js';

const MIB = 1024 * 1024;

/** Supervision policies of the hypeman API (create and PATCH); switched off they are accepted. */
export const POLICY_UNSUPPORTED: readonly Unsupported[] = [
  {
    field: 'auto_standby',
    reason: 'automatic standby is not supported yet',
    noop: offWhen('enabled', false),
  },
  {
    field: 'health_check',
    reason: 'health checks are not supported yet',
    noop: offWhen('type', 'none'),
  },
  {
    field: 'restart_policy',
    reason: 'restart policies are not supported yet',
    noop: offWhen('policy', 'never'),
  },
];

/** hypeman CreateInstanceRequest fields Vessel cannot honour (see unsupported.ts). */
export const CREATE_UNSUPPORTED: readonly Unsupported[] = [
  { field: 'hotplug_size', reason: 'memory hotplug is not supported (QEMU microvm board)' },
  {
    field: 'credentials',
    reason: 'host-mediated credential brokering is not supported',
    noop: emptyObject,
  },
  { field: 'devices', reason: 'device passthrough is not supported', noop: emptyArray },
  { field: 'gpu', reason: 'GPU passthrough is not supported', noop: emptyObject },
  {
    field: 'snapshot_policy',
    reason: 'snapshot compression is not supported',
    noop: (v) =>
      emptyObject(v) ||
      (typeof v === 'object' &&
        v !== null &&
        Object.keys(v).length === 1 &&
        offWhen('enabled', false)((v as { compression?: unknown }).compression)),
  },
  ...POLICY_UNSUPPORTED,
  { field: 'network.bandwidth_download', reason: 'network bandwidth limits are not supported' },
  { field: 'network.bandwidth_upload', reason: 'network bandwidth limits are not supported' },
  {
    field: 'network.egress.enabled',
    reason:
      'host-mediated egress is not supported; Vessel egress is network.egress: true (direct, NAT)',
    noop: isFalse,
  },
  {
    field: 'network.egress.enforcement',
    reason: 'egress enforcement needs host-mediated egress, which is not supported',
  },
];

function conflict(a: string, b: string): VesselError {
  return new VesselError('invalid_argument', `give ${a} or ${b}, not both`, {
    details: { field: a },
  });
}

function unsupported(field: string, reason: string): VesselError {
  return new VesselError('unsupported_field', `${field}: ${reason}`, { details: { field } });
}

/** `{K: V}` or `["K=V"]` → `["K=V"]`. */
export function envList(env: readonly string[] | Readonly<Record<string, string>>): string[] {
  return Array.isArray(env)
    ? [...(env as readonly string[])]
    : Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

function sizeIn(field: string, value: string, min: number, unit: number): number {
  const bytes = parseSize(value, field);
  if (bytes < min) {
    throw new VesselError(
      'invalid_argument',
      `${field} "${value}" is below the minimum ${min / MIB} MiB`,
      {
        details: { field },
      },
    );
  }
  return Math.ceil(bytes / unit);
}

/** Expiry fields (`ttl` or `expires_at`) → a TTL in ms or an absolute ISO time. */
export function expiryFields(
  body: { ttl?: string | number; expires_at?: string },
  now: number,
): { ttl_ms?: number; expires_at?: string } {
  if (body.ttl !== undefined && body.expires_at !== undefined) throw conflict('ttl', 'expires_at');
  if (body.ttl !== undefined) return { ttl_ms: parseDurationOrSeconds(body.ttl, 'ttl') };
  if (body.expires_at !== undefined) return { expires_at: checkExpiresAt(body.expires_at, now) };
  return {};
}

/** A create body (after {@link CREATE_UNSUPPORTED}) → the manager's request. */
export function toCreateRequest(
  body: CreateInstanceRequestWire,
  now = Date.now(),
): CreateInstanceRequest {
  if (body.size !== undefined && body.memory_mib !== undefined)
    throw conflict('size', 'memory_mib');
  if (body.overlay_size !== undefined && body.disk_bytes !== undefined)
    throw conflict('overlay_size', 'disk_bytes');
  if (
    body.hypervisor !== undefined &&
    body.hypervisor !== 'qemu' &&
    body.hypervisor !== 'qemu-microvm'
  )
    throw unsupported(
      'hypervisor',
      `${body.hypervisor} is not available: this daemon runs qemu-microvm`,
    );
  const host = hostPlatform().platform;
  if (body.platform !== undefined && body.platform !== host)
    throw unsupported(
      'platform',
      `${body.platform} cannot run here: this daemon runs ${host} images`,
    );
  if (body.skip_kernel_headers === false)
    throw unsupported('skip_kernel_headers', 'Vessel does not install kernel headers in the guest');
  const memory =
    body.size === undefined ? body.memory_mib : sizeIn('size', body.size, 64 * MIB, MIB);
  const disk =
    body.overlay_size === undefined
      ? body.disk_bytes
      : sizeIn('overlay_size', body.overlay_size, 16 * MIB, 1);
  const diskIo =
    body.disk_io_bps === undefined
      ? undefined
      : sizeIn('disk_io_bps', body.disk_io_bps.replace(/\/s$/i, ''), MIB, 1);
  const net = body.network;
  const egress = typeof net?.egress === 'boolean' ? net.egress : undefined;
  const network =
    net === undefined
      ? undefined
      : {
          ...(net.mode !== undefined ? { mode: net.mode } : {}),
          ...(net.name !== undefined ? { name: net.name } : {}),
          ...(net.enabled !== undefined ? { enabled: net.enabled } : {}),
          ...(egress !== undefined ? { egress } : {}),
        };
  return {
    image: body.image,
    ...(body.name !== undefined ? { name: body.name } : {}),
    ...(body.cmd !== undefined ? { cmd: body.cmd } : {}),
    ...(body.entrypoint !== undefined ? { entrypoint: body.entrypoint } : {}),
    ...(body.env !== undefined ? { env: envList(body.env) } : {}),
    ...(body.workdir !== undefined ? { workdir: body.workdir } : {}),
    ...(body.user !== undefined ? { user: body.user } : {}),
    ...(body.stdin !== undefined ? { stdin: body.stdin } : {}),
    ...(body.tty !== undefined ? { tty: body.tty } : {}),
    ...(body.vcpus !== undefined ? { vcpus: body.vcpus } : {}),
    ...(memory !== undefined ? { memory_mib: memory } : {}),
    ...(disk !== undefined ? { disk_bytes: disk } : {}),
    ...(diskIo !== undefined ? { disk_io_bps: diskIo } : {}),
    ...(network !== undefined ? { network } : {}),
    ...(body.ports !== undefined ? { ports: body.ports } : {}),
    ...(body.volumes !== undefined && body.volumes.length > 0 ? { volumes: body.volumes } : {}),
    ...(body.tags !== undefined ? { tags: body.tags } : {}),
    ...expiryFields(body, now),
  };
}

/** A PATCH body → the manager's patch. */
export function toPatch(body: UpdateInstanceRequestWire, now = Date.now()): InstancePatch {
  const exp = expiryFields(body, now);
  let expires_at: string | null | undefined;
  if (exp.ttl_ms !== undefined)
    expires_at = exp.ttl_ms > 0 ? new Date(now + exp.ttl_ms).toISOString() : null;
  else expires_at = exp.expires_at;
  const env =
    body.env === undefined
      ? undefined
      : Object.fromEntries(
          envList(body.env).map((kv) => [
            kv.slice(0, kv.indexOf('=')),
            kv.slice(kv.indexOf('=') + 1),
          ]),
        );
  return {
    ...(env !== undefined ? { env } : {}),
    ...(body.tags !== undefined ? { tags: body.tags } : {}),
    ...(expires_at !== undefined ? { expires_at } : {}),
  };
}
