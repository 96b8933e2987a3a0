import { hostPlatform } from '../core/platform.js';
import { formatSize } from '../core/size.js';
import type { InstanceRow } from '../store/index.js';
import { describeExit } from './exit.js';
import type { GuestConfig } from './guest-config.js';
import { networkView } from './network.js';
import { phaseView } from './phases.js';
import type { InstanceState } from './state.js';
import type { Instance } from './types.js';

const MIB = 1024 * 1024;

/** `["K=V", ...]` → `{K: V}` (the hypeman API's shape; later entries win). */
export function envMap(env: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of env) {
    const eq = kv.indexOf('=');
    if (eq > 0) out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

function exitMessage(r: InstanceRow): { exit_message?: string } {
  const m =
    r.exit_message ??
    (r.exit_code === null ? null : describeExit({ code: r.exit_code, signal: null }));
  return m === null ? {} : { exit_message: m };
}

/** The API's view of an instance row (hypeman-shaped, with Vessel's additions). */
export function view(r: InstanceRow): Instance {
  const g = r.guest as Partial<GuestConfig>;
  return {
    id: r.id,
    name: r.name,
    image: r.image,
    image_digest: r.image_digest,
    platform: hostPlatform().platform,
    state: r.state as InstanceState,
    state_error: r.state_error,
    // Vessel's QEMU backend always uses the microvm board.
    hypervisor: r.hypervisor === 'qemu' ? 'qemu-microvm' : (r.hypervisor as Instance['hypervisor']),
    accel: r.accel,
    kernel: r.kernel,
    vcpus: r.vcpus,
    size: formatSize(r.memory_mib * MIB),
    memory_mib: r.memory_mib,
    overlay_size: formatSize(r.disk_bytes),
    disk_bytes: r.disk_bytes,
    ...(r.disk_io_bps ? { disk_io_bps: `${formatSize(r.disk_io_bps)}/s` } : {}),
    entrypoint: g.entrypoint ?? [],
    cmd: g.cmd ?? [],
    env: envMap(g.env ?? []),
    tags: { ...r.tags },
    ...networkView(r.guest),
    pid: r.pid,
    exit_code: r.exit_code,
    ...exitMessage(r),
    has_snapshot: r.state === 'Standby',
    cid: r.cid,
    source_id: r.source_id,
    created_at: r.created_at,
    expires_at: r.expires_at ?? null,
    started_at: r.started_at,
    stopped_at: r.stopped_at,
    ...phaseView(r),
  };
}
