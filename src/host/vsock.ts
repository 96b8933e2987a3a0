import fs from 'node:fs/promises';
import { errnoCode, errorMessage } from '../core/errors.js';
import type { VsockState } from './checks.js';

export const VHOST_VSOCK_DEVICE = '/dev/vhost-vsock';

/**
 * Whether QEMU could offer a vsock device here: `/dev/vhost-vsock` exists, is
 * a character device and opens read-write (opening it creates nothing; the
 * guest CID is only claimed by an ioctl). Never loads a module.
 */
export async function inspectVhostVsock(device = VHOST_VSOCK_DEVICE): Promise<VsockState> {
  try {
    const st = await fs.stat(device);
    if (!st.isCharacterDevice())
      return { present: true, problem: `${device} is not a character device` };
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { present: false };
    return { present: false, problem: `cannot stat ${device}: ${errorMessage(err)}` };
  }
  try {
    const fh = await fs.open(device, 'r+');
    await fh.close();
    return { present: true };
  } catch (err) {
    return {
      present: true,
      problem: `${device} cannot be opened read-write (${errnoCode(err) ?? errorMessage(err)})`,
    };
  }
}
