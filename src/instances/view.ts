import type { InstanceRow } from '../store/index.js';
import type { GuestConfig } from './guest-config.js';
import { networkView } from './network.js';
import type { InstanceState } from './state.js';
import type { Instance } from './types.js';

/** The API's view of an instance row. */
export function view(r: InstanceRow): Instance {
  const g = r.guest as Partial<GuestConfig>;
  return {
    id: r.id,
    name: r.name,
    image: r.image,
    image_digest: r.image_digest,
    state: r.state as InstanceState,
    state_error: r.state_error,
    hypervisor: r.hypervisor,
    accel: r.accel,
    kernel: r.kernel,
    vcpus: r.vcpus,
    memory_mib: r.memory_mib,
    disk_bytes: r.disk_bytes,
    entrypoint: g.entrypoint ?? [],
    cmd: g.cmd ?? [],
    env: g.env ?? [],
    ...networkView(r.guest),
    pid: r.pid,
    exit_code: r.exit_code,
    cid: r.cid,
    source_id: r.source_id,
    created_at: r.created_at,
    started_at: r.started_at,
    stopped_at: r.stopped_at,
  };
}
