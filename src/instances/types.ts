import type { PortMappingRequest, WireInstance } from '../core/wire.js';
import type { InstanceState } from './state.js';

/** An instance as the API shows it (hypeman-shaped). */
export type Instance = WireInstance;

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
  /** Default: no NIC unless ports, egress, a mode or a group are asked for. See src/instances/README.md. */
  readonly network?: {
    readonly enabled?: boolean;
    readonly egress?: boolean;
    readonly mode?: 'bridge' | 'user' | 'none';
    /** Bridge mode network group. */
    readonly name?: string;
  };
  readonly ports?: readonly PortMappingRequest[];
}

export type InstanceEvent =
  | {
      readonly type: 'state';
      readonly id: string;
      readonly from: InstanceState | null;
      readonly instance: Instance;
    }
  | { readonly type: 'log'; readonly id: string; readonly data: Buffer }
  /** A line appended to the instance's daemon log (its lifecycle operations). */
  | { readonly type: 'daemon-log'; readonly id: string; readonly line: string }
  | { readonly type: 'deleted'; readonly id: string };
