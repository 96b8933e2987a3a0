/**
 * Standby snapshots on disk: the VM state written by the VMM plus a small
 * metadata file that says what it can be restored on.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errnoCode } from '../core/errors.js';
import { writeFileAtomic } from '../core/fs.js';
import type { InstanceRow } from '../store/index.js';
import { fileSize } from './boot.js';
import { identityOf, type GuestIdentity } from './identity.js';

export interface SnapshotMeta {
  readonly version: 1;
  readonly hypervisor: string;
  /** VMM version that wrote the state; restore needs the same one. */
  readonly vmm_version: string | null;
  /** `<name>/<version>` of the kernel the guest runs. */
  readonly kernel: string;
  readonly accel: string;
  readonly vcpus: number;
  readonly memory_mib: number;
  readonly state_bytes: number;
  readonly created_at: string;
  /** Hostname, MAC and address the saved guest believes it has (absent in older snapshots). */
  readonly identity?: GuestIdentity;
}

export const SNAPSHOT_DIR = 'snapshot';
const STATE = 'state.bin';
const META = 'meta.json';

export function snapshotPaths(instanceDir: string): { dir: string; state: string; meta: string } {
  const dir = path.join(instanceDir, SNAPSHOT_DIR);
  return { dir, state: path.join(dir, STATE), meta: path.join(dir, META) };
}

/** The metadata of a memory snapshot of `row` just written to `stateFile` by `vmmVersion`. */
export async function memorySnapshotMeta(
  row: InstanceRow,
  vmmVersion: string | null,
  stateFile: string,
): Promise<SnapshotMeta> {
  return {
    version: 1,
    hypervisor: row.hypervisor,
    vmm_version: vmmVersion,
    kernel: row.kernel,
    accel: row.accel ?? 'tcg',
    vcpus: row.vcpus,
    memory_mib: row.memory_mib,
    state_bytes: await fileSize(stateFile),
    created_at: new Date().toISOString(),
    identity: identityOf(row),
  };
}

export async function writeSnapshotMeta(file: string, meta: SnapshotMeta): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(meta, null, 2)}\n`, 0o600);
}

export async function readSnapshotMeta(file: string, instance: string): Promise<SnapshotMeta> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
    throw new VesselError('conflict', `instance "${instance}" has no standby snapshot to restore`, {
      details: { instance },
    });
  }
  const meta = JSON.parse(text) as SnapshotMeta;
  if (meta.version !== 1) {
    throw new VesselError(
      'conflict',
      `instance "${instance}": snapshot metadata version ${String(meta.version)} is not supported`,
    );
  }
  return meta;
}

export interface RestoreTarget {
  readonly hypervisor: string;
  readonly vmm_version: string | null;
  readonly kernel: string;
  readonly accel: string;
  readonly vcpus: number;
  readonly memory_mib: number;
}

/**
 * A snapshot restores only on the same VMM version, kernel, accelerator and
 * VM shape: a migration stream from another QEMU or a guest memory image of
 * another kernel would fail late or, worse, run corrupted.
 */
export function checkRestorable(instance: string, meta: SnapshotMeta, now: RestoreTarget): void {
  const diffs: string[] = [];
  const cmp = (what: string, then: unknown, current: unknown): void => {
    if (then !== current) diffs.push(`${what} ${String(then)} → ${String(current)}`);
  };
  cmp('hypervisor', meta.hypervisor, now.hypervisor);
  cmp('VMM version', meta.vmm_version, now.vmm_version);
  cmp('kernel', meta.kernel, now.kernel);
  cmp('accelerator', meta.accel, now.accel);
  cmp('vCPUs', meta.vcpus, now.vcpus);
  cmp('memory MiB', meta.memory_mib, now.memory_mib);
  if (diffs.length > 0) {
    throw new VesselError(
      'conflict',
      `instance "${instance}" cannot be restored: the snapshot was taken with a different setup (${diffs.join('; ')}); stop it and start it fresh instead`,
      { details: { instance, differences: diffs } },
    );
  }
}
