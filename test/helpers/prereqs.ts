/**
 * Why a real-VM test file cannot run here (a string for node:test's `skip`),
 * or false when it can: the guest program must be built and the host tools
 * installed (scripts/setup.sh installs them).
 */
import fs from 'node:fs/promises';
import { guestBinaryPath } from '../../src/core/assets.js';

const VM_TOOLS = ['/usr/bin/qemu-system-x86_64', '/usr/bin/apt-get', '/usr/bin/busybox'];

export async function vmSkipReason(extraTools: readonly string[] = []): Promise<string | false> {
  try {
    await fs.access(guestBinaryPath());
  } catch {
    return `the guest program is not built (${guestBinaryPath()}); run npm run build`;
  }
  for (const tool of [...VM_TOOLS, ...extraTools]) {
    try {
      await fs.access(tool);
    } catch {
      return `${tool} is missing (run scripts/setup.sh)`;
    }
  }
  return false;
}

/**
 * Why a test file cannot run (a string for node:test's `skip`) when one of
 * `tools` is missing from /usr/bin, or false; `packages` names what installs them.
 */
export async function missingToolReason(
  tools: readonly string[],
  packages: string,
): Promise<string | false> {
  for (const tool of tools) {
    try {
      await fs.access(`/usr/bin/${tool}`);
    } catch {
      return `${tool} is not installed (apt-get install ${packages})`;
    }
  }
  return false;
}
