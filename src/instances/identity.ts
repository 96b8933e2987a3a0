/**
 * A guest's identity — hostname, MAC and address — as saved in a memory
 * snapshot, and the RECONFIGURE that tells a restored guest its current one
 * when they differ (a fork of a Standby instance or of a memory snapshot, or a
 * bridge-mode instance whose address was given back and allocated anew).
 */
import { VesselError, errorMessage } from '../core/errors.js';
import type { InstanceRow } from '../store/index.js';
import type { InstanceCore, Runtime } from './core.js';
import { guestDiskConfig, hostNetwork } from './network.js';

export interface GuestIdentity {
  readonly hostname: string;
  readonly mac: string | null;
  readonly ip: string | null;
}

export function identityOf(row: InstanceRow): GuestIdentity {
  const hostname = typeof row.guest.hostname === 'string' ? row.guest.hostname : row.name;
  return { hostname, mac: hostNetwork(row.guest).mac, ip: row.guest_ip ?? null };
}

/**
 * True when a guest saved as `saved` must be told `now`. Snapshots written
 * before identities were recorded are restored as before (no RECONFIGURE: their
 * agent may predate it).
 */
export function identityChanged(saved: GuestIdentity | undefined, now: GuestIdentity): boolean {
  if (!saved) return false;
  return saved.hostname !== now.hostname || saved.mac !== now.mac || saved.ip !== now.ip;
}

/**
 * Send RECONFIGURE with the row's hostname and config-disk network section.
 * A guest that cannot take it must not run on with another instance's
 * address: the caller ends the VM on failure.
 */
export async function reconfigureGuest(core: InstanceCore, id: string, rt: Runtime): Promise<void> {
  const row = core.row(id);
  if (!rt.guest) {
    throw new VesselError(
      'internal',
      `instance "${row.name}": the guest agent did not answer after the restore, so it cannot take its new identity`,
    );
  }
  const disk = guestDiskConfig(row.guest) as unknown as Record<string, unknown>;
  try {
    await rt.guest.reconfigure({
      hostname: identityOf(row).hostname,
      ...(disk.network !== undefined ? { network: disk.network } : {}),
    });
  } catch (err) {
    throw new VesselError(
      'internal',
      `instance "${row.name}": the guest could not take its new hostname and address: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}
