import type { PortMappingRequest, WireInstance } from '../core/wire.js';
import type { VolumeMountRequest } from '../volumes/index.js';
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
  /** Keep the main command's stdin open for an attached client (`run -i`). */
  readonly stdin?: boolean;
  /** Run the main command under a pseudo-terminal (`run -t`). */
  readonly tty?: boolean;
  readonly vcpus?: number;
  readonly memory_mib?: number;
  readonly disk_bytes?: number;
  /** Disk I/O limit, bytes per second over all the VM's disks. */
  readonly disk_io_bps?: number;
  /** Default: no NIC unless ports, egress, a mode or a group are asked for. See src/instances/README.md. */
  readonly network?: {
    readonly enabled?: boolean;
    readonly egress?: boolean;
    readonly mode?: 'bridge' | 'user' | 'none';
    /** Bridge mode network group. */
    readonly name?: string;
  };
  readonly ports?: readonly PortMappingRequest[];
  /** Volumes to attach (id or name each): read-write, read-only or overlay (src/volumes/). */
  readonly volumes?: readonly VolumeMountRequest[];
  /** User key-value tags. */
  readonly tags?: Readonly<Record<string, string>>;
  /** TTL from creation in ms (0: never); or `expires_at`, an absolute ISO time. */
  readonly ttl_ms?: number;
  readonly expires_at?: string;
  /** Internal (not on the API): boot with no main command, only the guest agent (builder VMs). */
  readonly agent?: boolean;
}

export type InstanceEvent =
  | {
      readonly type: 'state';
      readonly id: string;
      readonly from: InstanceState | null;
      readonly instance: Instance;
    }
  /**
   * Bytes appended to a log: the main command's stdout/stderr (the app log)
   * or the serial console's text. Published after the synchronous write.
   */
  | {
      readonly type: 'log';
      readonly id: string;
      readonly stream: 'stdout' | 'stderr' | 'console';
      readonly data: Buffer;
    }
  /** A line appended to the instance's daemon log (its lifecycle operations). */
  | { readonly type: 'daemon-log'; readonly id: string; readonly line: string }
  | { readonly type: 'deleted'; readonly id: string };
