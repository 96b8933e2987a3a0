import fs from 'node:fs/promises';
import path from 'node:path';
import { VesselError, errnoCode } from '../core/errors.js';
import type { WireKernel } from '../core/wire.js';
import {
  DEFAULT_KERNEL,
  KERNEL_CATALOG,
  validateKernelName,
  type CatalogEntry,
} from './catalog.js';
import type { Kernel } from './kernel.js';
import { listKernels, pullKernel, removeKernel } from './pull.js';

/** Something that references a kernel version, e.g. an instance record. */
export interface KernelUser {
  /** Shown in the refusal message (an instance name). */
  readonly name: string;
  /** `<kernel name>/<version>`, as stored in an instance record. */
  readonly kernel: string;
}

export interface KernelManagerOptions {
  readonly dataDir: string;
  /** Catalog to pull from; default the built-in one. */
  readonly catalog?: readonly CatalogEntry[];
  /**
   * Who references which kernel version right now. Injected by the daemon from
   * the instance records (kernels do not know about instances); removal is
   * refused while any user references the version, and listings name them.
   */
  readonly users?: () => Iterable<KernelUser>;
}

const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/;

/**
 * The kernels as the API sees them: list with sizes and users, pull by
 * catalog name, remove unless in use. The pull/resolve functions in pull.ts
 * stay the primitives (the instance manager auto-pulls through them).
 */
export class KernelManager {
  private readonly o: KernelManagerOptions;

  constructor(options: KernelManagerOptions) {
    this.o = options;
  }

  /** Published kernels, newest version first per name. */
  async list(): Promise<WireKernel[]> {
    const users = this.usersByKernel();
    const kernels = await listKernels({ dataDir: this.o.dataDir });
    return Promise.all(kernels.map((k) => toWire(k, users)));
  }

  /**
   * Pull `name` from the catalog (default {@link DEFAULT_KERNEL}) and return
   * the published version. Blocks until done; concurrent pulls of one name
   * share one run, including an instance create's auto-pull.
   */
  async pull(name: string = DEFAULT_KERNEL): Promise<WireKernel> {
    const kernel = await pullKernel(name, {
      dataDir: this.o.dataDir,
      catalog: this.o.catalog ?? KERNEL_CATALOG,
    });
    return toWire(kernel, this.usersByKernel());
  }

  /**
   * Remove one version of `name`, or all of them when `version` is omitted.
   * Refused with `kernel_in_use` while a user references a version that
   * would go. A kernel whose catalog entry no longer exists can still be
   * removed.
   */
  async remove(name: string, version?: string): Promise<void> {
    validateKernelName(name);
    if (version !== undefined && (!VERSION_RE.test(version) || version.includes('..'))) {
      throw new VesselError('invalid_argument', `invalid kernel version "${version}"`);
    }
    const installed = (await listKernels({ dataDir: this.o.dataDir })).filter(
      (k) => k.name === name && (version === undefined || k.version === version),
    );
    const what = version === undefined ? name : `${name}/${version}`;
    if (installed.length === 0) {
      throw new VesselError('not_found', `kernel "${what}" is not installed`);
    }
    const users = this.usersByKernel();
    const blocking = installed.flatMap((k) => {
      const ref = `${k.name}/${k.version}`;
      return (users.get(ref) ?? []).map((user) => ({ ref, user }));
    });
    if (blocking.length > 0) {
      const refs = [...new Set(blocking.map((b) => b.ref))].sort();
      const names = [...new Set(blocking.map((b) => b.user))].sort();
      throw new VesselError(
        'kernel_in_use',
        `kernel${refs.length > 1 ? 's' : ''} "${refs.join('", "')}" ` +
          `${refs.length > 1 ? 'are' : 'is'} used by instance${names.length > 1 ? 's' : ''} ` +
          `"${names.join('", "')}"; remove ${names.length > 1 ? 'them' : 'it'} first`,
        { details: { kernels: refs, instances: names } },
      );
    }
    await removeKernel(name, {
      dataDir: this.o.dataDir,
      ...(version === undefined ? {} : { version }),
    });
  }

  /** `<name>/<version>` → names of the users referencing it. */
  private usersByKernel(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const u of this.o.users?.() ?? []) {
      const list = out.get(u.kernel);
      if (list) list.push(u.name);
      else out.set(u.kernel, [u.name]);
    }
    return out;
  }
}

async function toWire(k: Kernel, users: ReadonlyMap<string, string[]>): Promise<WireKernel> {
  return {
    name: k.name,
    version: k.version,
    source_type: k.info.source_type,
    package: k.info.package ?? null,
    sha256: k.info.sha256,
    size_bytes: await treeBytes(k.dir),
    modules: [...k.moduleOrder],
    in_use_by: [...(users.get(`${k.name}/${k.version}`) ?? [])].sort(),
    created_at: k.info.created_at,
  };
}

/** Bytes of the regular files below `dir` (a kernel removed meanwhile counts what is left). */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return 0;
    throw err;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await treeBytes(p);
    else if (e.isFile()) {
      try {
        total += (await fs.stat(p)).size;
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT') throw err;
      }
    }
  }
  return total;
}
