import { VesselError } from '../core/errors.js';

/** One module as listed in modules.dep. */
export interface ModuleDep {
  /** Path relative to `lib/modules/<version>/`, e.g. `kernel/fs/erofs/erofs.ko`. */
  readonly path: string;
  /** Direct and indirect dependencies, as paths (depmod lists the full closure). */
  readonly deps: readonly string[];
}

const MODULE_EXT_RE = /\.ko(\.(xz|zst|gz))?$/;

/** Canonical module name of a path or name: basename, no extension, `-` → `_`. */
export function moduleName(pathOrName: string): string {
  const base = pathOrName.slice(pathOrName.lastIndexOf('/') + 1);
  return base.replace(MODULE_EXT_RE, '').replaceAll('-', '_');
}

/** Compression of a module file, if any. */
export function moduleCompression(file: string): 'xz' | 'zst' | 'gz' | undefined {
  const m = MODULE_EXT_RE.exec(file);
  return m?.[2] as 'xz' | 'zst' | 'gz' | undefined;
}

/** Parse modules.dep text into a map keyed by canonical module name. */
export function parseModulesDep(text: string): Map<string, ModuleDep> {
  const out = new Map<string, ModuleDep>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) {
      throw new VesselError('invalid_argument', `malformed modules.dep line: "${line}"`);
    }
    const modPath = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter((d) => d !== '');
    out.set(moduleName(modPath), { path: modPath, deps });
  }
  return out;
}

/** Canonical names of built-in modules (modules.builtin: one path per line). */
export function parseModulesBuiltin(text: string): Set<string> {
  return new Set(
    text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
      .map(moduleName),
  );
}

export interface LoadOrder {
  /** Module paths in load order: every module after all its dependencies. */
  readonly order: readonly string[];
  /** Requested modules compiled into the kernel (nothing to load). */
  readonly builtin: readonly string[];
}

/**
 * Compute the load order for `wanted` modules: dependencies first, each
 * module once. A wanted module that is neither in modules.dep nor built in
 * is an error naming it.
 */
export function resolveLoadOrder(
  deps: ReadonlyMap<string, ModuleDep>,
  wanted: readonly string[],
  builtins: ReadonlySet<string> = new Set(),
): LoadOrder {
  const order: string[] = [];
  const builtin: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string, from: string | undefined): void => {
    if (done.has(name)) return;
    const entry = deps.get(name);
    if (!entry) {
      const why = from ? ` (needed by ${from})` : '';
      throw new VesselError('not_found', `kernel module "${name}"${why} is not in modules.dep`);
    }
    if (visiting.has(name)) {
      throw new VesselError('invalid_argument', `modules.dep has a dependency cycle at "${name}"`);
    }
    visiting.add(name);
    // depmod lists deps so that the last one loads first (modprobe's order).
    for (const dep of [...entry.deps].reverse()) visit(moduleName(dep), name);
    visiting.delete(name);
    done.add(name);
    order.push(entry.path);
  };
  for (const w of wanted) {
    const name = moduleName(w);
    if (!deps.has(name) && builtins.has(name)) {
      if (!builtin.includes(name)) builtin.push(name);
      continue;
    }
    visit(name, undefined);
  }
  return { order, builtin };
}
