import type { InstanceState } from './state.js';

/** An instance as the API shows it (hypeman-shaped). */
export interface Instance {
  readonly id: string;
  readonly name: string;
  readonly image: string;
  readonly image_digest: string;
  readonly state: InstanceState;
  readonly state_error: string | null;
  readonly hypervisor: string;
  /** `kvm` or `tcg` (software emulation) once booted. */
  readonly accel: string | null;
  readonly kernel: string;
  readonly vcpus: number;
  readonly memory_mib: number;
  readonly disk_bytes: number;
  readonly entrypoint: string[];
  readonly cmd: string[];
  readonly env: string[];
  readonly pid: number | null;
  /** Exit code of the main command (exec mode), once it exited. */
  readonly exit_code: number | null;
  readonly created_at: string;
  readonly started_at: string | null;
  readonly stopped_at: string | null;
}

export interface CreateInstanceRequest {
  readonly image: string;
  readonly name?: string;
  readonly cmd?: string[];
  readonly entrypoint?: string[];
  readonly env?: string[];
  readonly workdir?: string;
  readonly user?: string;
  readonly vcpus?: number;
  readonly memory_mib?: number;
  readonly disk_bytes?: number;
}

export type InstanceEvent =
  | {
      readonly type: 'state';
      readonly id: string;
      readonly from: InstanceState | null;
      readonly instance: Instance;
    }
  | { readonly type: 'log'; readonly id: string; readonly data: Buffer }
  | { readonly type: 'deleted'; readonly id: string };
