import { fileURLToPath } from 'node:url';

/**
 * The guest program built by `guest-agent/build.sh` (compiled files live in
 * dist/src/core/, so the package root is three levels up).
 * `VESSEL_GUEST_BINARY` overrides it.
 */
export function guestBinaryPath(): string {
  return (
    process.env.VESSEL_GUEST_BINARY ??
    fileURLToPath(new URL('../../../guest-agent/target/vessel-init', import.meta.url))
  );
}

/**
 * The host-side jailer built by `jailer/build.sh`. `VESSEL_JAILER` overrides it.
 */
export function jailerBinaryPath(): string {
  return (
    process.env.VESSEL_JAILER ??
    fileURLToPath(new URL('../../../jailer/target/vessel-jailer', import.meta.url))
  );
}
