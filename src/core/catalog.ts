/**
 * The image catalog: golden images Vessel builds locally, on this host, from
 * the host's own package sources (src/builds/README.md, "Golden images").
 * Pure data, shared by the daemon (which builds them) and the CLI (which maps
 * `vessel run debian-bookworm` and `vessel run -- CMD` to them).
 */

export interface CatalogEntry {
  /** What users type: `vessel run debian-bookworm -- …`. */
  readonly name: string;
  readonly description: string;
  /** The image `vessel run -- CMD` uses when no image is given. */
  readonly default: boolean;
  /** Where the built image lives in the local store (a reference no registry serves). */
  readonly image: string;
  /** How it is made: mmdebstrap of one suite with these packages, from the host's apt sources. */
  readonly recipe: {
    readonly tool: 'mmdebstrap';
    readonly suite: string;
    readonly variant: 'minbase' | 'apt' | 'important';
    readonly include: readonly string[];
  };
  /** The image config's defaults. */
  readonly config: {
    readonly env: readonly string[];
    readonly cmd: readonly string[];
    readonly workingDir: string;
  };
}

/** Catalog images are stored under this registry name, which no registry answers for. */
export const CATALOG_REGISTRY = 'catalog.vessel.local';

export const CATALOG: readonly CatalogEntry[] = [
  {
    name: 'debian-bookworm',
    description:
      'Debian 12 (bookworm) from the host’s apt sources: bash, coreutils, ca-certificates, git, curl, python3',
    default: true,
    image: `${CATALOG_REGISTRY}/debian-bookworm:latest`,
    recipe: {
      tool: 'mmdebstrap',
      suite: 'bookworm',
      variant: 'minbase',
      include: ['ca-certificates', 'git', 'curl', 'python3', 'procps', 'less'],
    },
    config: {
      env: [
        'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'LANG=C.UTF-8',
        'HOME=/root',
      ],
      cmd: ['/bin/bash'],
      workingDir: '/root',
    },
  },
];

/** The entry `ref` names (its catalog name or its stored reference), if any. */
export function catalogEntry(ref: string): CatalogEntry | undefined {
  return CATALOG.find((e) => e.name === ref || e.image === ref || `${e.name}:latest` === ref);
}

/** The image `vessel run -- CMD` runs when no image is given. */
export function defaultCatalogEntry(): CatalogEntry {
  return CATALOG.find((e) => e.default)!;
}
