import { VesselError } from '../core/errors.js';

/** Where a kernel comes from. */
export type KernelSource =
  /** A Debian package from the host's apt configuration (a meta package is resolved). */
  | { readonly type: 'apt'; readonly package: string }
  /** Files already on the host; `modules_dir` is a `.../lib/modules/<version>` directory. */
  | { readonly type: 'path'; readonly vmlinuz: string; readonly modules_dir: string }
  /** A kernel .deb downloaded over HTTP(S) and checked against `sha256`. */
  | { readonly type: 'url'; readonly url: string; readonly sha256: string };

export interface CatalogEntry {
  readonly name: string;
  readonly description: string;
  readonly source: KernelSource;
  /** Modules the guest needs (`-` and `_` are the same); their dependencies are added. */
  readonly modules: readonly string[];
}

/**
 * Modules the guest program loads: virtio-mmio transport and devices, root fs,
 * vsock, and the ACPI power button as an evdev device (graceful stop: the
 * guest program turns a press into a signal, see guest-agent/src/power.rs).
 */
export const GUEST_MODULES: readonly string[] = [
  'virtio_mmio',
  'virtio_blk',
  'virtio_console',
  'virtio_net',
  'virtio_rng',
  'erofs',
  'overlay',
  'vsock',
  'vmw_vsock_virtio_transport',
  'button',
  'evdev',
];

/**
 * The built-in kernel catalog. Embedded as a constant (not a JSON file) so
 * the compiled layout needs no copied assets.
 */
export const KERNEL_CATALOG: readonly CatalogEntry[] = [
  {
    name: 'debian-cloud-6.1',
    description: "Debian 12 cloud kernel (linux-image-cloud-amd64), boots on QEMU's microvm",
    source: { type: 'apt', package: 'linux-image-cloud-amd64' },
    modules: GUEST_MODULES,
  },
];

/** The default kernel used when an instance names none. */
export const DEFAULT_KERNEL = 'debian-cloud-6.1';

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

export function validateKernelName(name: string): void {
  if (!NAME_RE.test(name) || name.includes('..')) {
    throw new VesselError('invalid_argument', `invalid kernel name "${name}"`);
  }
}

/** Look a kernel up in `catalog` (default: the built-in one). */
export function catalogEntry(
  name: string,
  catalog: readonly CatalogEntry[] = KERNEL_CATALOG,
): CatalogEntry {
  validateKernelName(name);
  const entry = catalog.find((e) => e.name === name);
  if (!entry) {
    const known = catalog.map((e) => e.name).join(', ');
    throw new VesselError('not_found', `kernel "${name}" is not in the catalog (known: ${known})`);
  }
  return entry;
}
