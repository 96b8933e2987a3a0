/**
 * The hypervisor interface: what instances/ needs from a VMM, independent of
 * which one (QEMU, Firecracker, Cloud Hypervisor) runs the VM.
 */
import type { VmJail } from './jail.js';

export type HypervisorName = 'qemu' | 'firecracker' | 'cloud-hypervisor';

/** Software emulation (`tcg`) or hardware virtualisation (`kvm`). */
export type Accel = 'kvm' | 'tcg';

export interface DiskSpec {
  /** Host path of the disk image. */
  readonly path: string;
  readonly readonly: boolean;
  /** virtio-blk serial; the guest finds disks by it (`/sys/block/vd* /serial`). At most 20 bytes. */
  readonly serial: string;
  readonly format: 'raw';
}

/** A host address and port the VMM listens on, forwarded to a guest port. */
export interface PortForward {
  readonly protocol: 'tcp' | 'udp';
  /** IPv4 address to listen on (`0.0.0.0`: every interface). */
  readonly hostIp: string;
  readonly hostPort: number;
  readonly guestPort: number;
}

/**
 * User-mode networking: no root and no TAP device. The guest sits alone on
 * {@link USER_NET}; a user-mode stack proxies its connections through ordinary host
 * sockets and listens on the host for published ports.
 */
export interface UserNet {
  readonly mode: 'user';
  /**
   * `slirp`: QEMU's built-in stack, for isolated guests only (`restrict=on`; with egress it
   * would map the gateway to the host's loopback). `passt`: a passt process per VM (see
   * passt.ts), for guests with egress: jailed as the VM's uid, so the host's egress guard
   * refuses its connections to the host; without the guard, the gateway is not mapped.
   */
  readonly stack: 'slirp' | 'passt';
  /** The NIC's MAC address (`52:54:00:xx:xx:xx`); the guest finds the NIC by it. */
  readonly mac: string;
  readonly forwards: readonly PortForward[];
  /**
   * Cut the guest off from everything but its published ports (slirp `restrict=on`):
   * no egress, no DNS, and no path to the host's loopback services through the gateway.
   */
  readonly isolated: boolean;
}

/**
 * A TAP device the host prepared (on the Vessel bridge, firewall in place): QEMU opens it
 * by name and runs no scripts. Addressing and published ports are the host's business.
 */
export interface TapNet {
  readonly mode: 'tap';
  readonly mac: string;
  /** The TAP's interface name (≤ 15 bytes), e.g. `vt0123456789ab`. */
  readonly ifname: string;
}

/** The VM's network device. */
export type VmNet = UserNet | TapNet;

/** The fixed addressing of user-mode networking (QEMU's defaults, passed explicitly). */
export const USER_NET = {
  subnet: '10.0.2.0/24',
  prefix: 24,
  /** The stack itself; never a way to the host (slirp guests are isolated; see passt.ts). */
  gateway: '10.0.2.2',
  dns: '10.0.2.3',
  guestIp: '10.0.2.15',
} as const;

export interface VmSpec {
  /** Instance id; used for the QEMU `-name` and in error messages. */
  readonly id: string;
  readonly kernel: string;
  readonly initrd: string;
  /** Kernel arguments, one per element (joined with spaces). */
  readonly cmdline: readonly string[];
  readonly vcpus: number;
  readonly memoryMiB: number;
  /** In order: the guest sees them as vda, vdb, ... */
  readonly disks: readonly DiskSpec[];
  /** Host unix socket (server, created by the VMM) for the `vessel.control` port. */
  readonly controlSocket: string;
  /** Host unix socket (server, created by the VMM) streaming the serial console live. */
  readonly consoleSocket: string;
  /** File that receives every byte of the serial console, written by the VMM itself. */
  readonly serialLog: string;
  /** QMP unix socket (server, created by QEMU). */
  readonly qmpSocket: string;
  readonly accel: Accel;
  /** Host TSC frequency; under TCG it is passed as `tsc_early_khz` (avoids a boot hang). */
  readonly tscKhz?: number;
  /** The VM's network device; absent: the VM has no NIC at all. */
  readonly net?: VmNet;
  /**
   * Restore: start from this saved state (written by {@link VmHandle.snapshot})
   * instead of booting. The VM is left paused once the state is loaded.
   */
  readonly incoming?: string;
  /** Per-VM directory: `vmm.log` (the VMM's stdout/stderr) and snapshots live here. */
  readonly workDir: string;
  /**
   * Confine the VMM (when the backend has confinement configured): this uid/gid, a jail
   * holding only what the spec names, these cgroup limits. The sockets and the serial log
   * must then share one directory (the run directory), which the VMM's uid owns.
   */
  readonly jail?: VmJail;
  /** Disk I/O limit in bytes per second, shared by all the VM's disks (QEMU throttle group). */
  readonly diskIoBps?: number;
}

/** The sockets of a running VM, persisted by the caller so {@link Hypervisor.adopt} can reconnect. */
export interface VmSockets {
  readonly qmpSocket: string;
  readonly controlSocket: string;
  readonly consoleSocket: string;
}

export type VmState = 'running' | 'paused' | 'shutdown' | 'exited';

export interface VmInfo {
  readonly state: VmState;
  /** The VMM's own status word (QMP `query-status` `status`), e.g. `running`, `paused`, `prelaunch`. */
  readonly status: string;
  readonly pid: number;
}

/** I/O counters of one virtual disk. */
export interface BlockStats {
  /** The VMM's name for the disk (QEMU: the drive id). */
  readonly device: string;
  readonly readBytes: number;
  readonly writeBytes: number;
}

export interface VmExit {
  /** Exit code when the handle spawned the process and it exited normally; otherwise null. */
  readonly code: number | null;
  /** Signal name when known (spawned process killed by a signal); otherwise null. */
  readonly signal: string | null;
}

/** VM lifecycle events, normalised from the VMM's own event names. */
export type VmEventType =
  'stopped' | 'resumed' | 'shutdown' | 'powerdown' | 'reset' | 'guest-panicked' | 'exited';

export interface VmEvent {
  readonly type: VmEventType;
  /** The VMM's raw event name (e.g. QMP `STOP`), or `exit` for process exit. */
  readonly raw: string;
  readonly data: Record<string, unknown>;
  readonly at: Date;
}

export type VmEventListener = (event: VmEvent) => void;

export interface StopOptions {
  /** Ask the guest to power off first (ACPI power button); default true. */
  readonly graceful?: boolean;
  /** How long to wait for the guest before forcing; default 5000 ms. */
  readonly timeoutMs?: number;
}

export interface VmHandle {
  readonly pid: number;
  readonly qmpSocket: string;
  readonly controlSocket: string;
  readonly consoleSocket: string;
  /** Stop the vCPUs (memory stays). */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /**
   * Save the VM state (device + memory) to `path`. The VM must be paused or is
   * paused by the VMM during the save; it stays paused afterwards.
   */
  snapshot(path: string): Promise<void>;
  /** Graceful power-off with a deadline, then quit, then SIGKILL. Resolves once the process is gone. */
  stop(options?: StopOptions): Promise<VmExit>;
  /** SIGKILL the process; resolves once it is gone. */
  kill(): Promise<VmExit>;
  info(): Promise<VmInfo>;
  /** Bytes the guest read from and wrote to each disk since the VMM started (optional). */
  blockStats?(): Promise<BlockStats[]>;
  /** Resolves (never rejects) when the VMM process is gone. */
  readonly exited: Promise<VmExit>;
  /** Subscribe to lifecycle events; returns the unsubscribe function. */
  onEvent(listener: VmEventListener): () => void;
  /** Follow the serial console live (raw bytes as the guest writes them); returns unsubscribe. */
  onConsole(listener: (chunk: Buffer) => void): () => void;
  /**
   * Drop the control connections without touching the VM (daemon shutdown):
   * afterwards the handle no longer keeps the event loop alive, emits nothing,
   * and `exited` may never settle. Re-attach with {@link Hypervisor.adopt}.
   */
  detach(): void;
}

export interface HypervisorCapabilities {
  readonly name: HypervisorName;
  /** The binary was found and runs. */
  readonly available: boolean;
  readonly binary: string;
  /** Parsed version, e.g. `7.2.22`; null when unavailable. */
  readonly version: string | null;
  /** QEMU: the `microvm` machine type exists. */
  readonly microvm: boolean;
  readonly pause: boolean;
  readonly snapshot: boolean;
  /** Why `available` is false. */
  readonly reason?: string;
}

export interface Hypervisor {
  readonly name: HypervisorName;
  capabilities(): Promise<HypervisorCapabilities>;
  /** Start a VM; resolves once the VM runs and the control connection is up. */
  start(spec: VmSpec): Promise<VmHandle>;
  /** Re-attach to a VM started by an earlier daemon process. */
  adopt(pid: number, sockets: VmSockets): Promise<VmHandle>;
  /** Remove a confined VM's cgroup once its VMM is gone (backends without cgroups omit it). */
  releaseCgroup?(id: string): Promise<boolean>;
  /** Remove the cgroups of VMs other than `live` (left behind while no daemon ran). */
  sweepCgroups?(live: ReadonlySet<string>): Promise<void>;
}
