/**
 * What the image below a COPY already has at a path (a directory's mode and
 * owner, or a file), read from the layers' tar headers: COPY into /tmp keeps
 * /tmp 1777, as Docker does. Each layer's index (names, whiteouts, opaque
 * directories) is read once per build and kept by digest.
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar-stream';
import type { ExistingLookup, ExistingPath } from './image-paths.js';

interface LayerIndex {
  readonly entries: Map<string, ExistingPath>;
  /** Paths a `.wh.NAME` deletes. */
  readonly whiteouts: Set<string>;
  /** Directories whose lower content this layer hides (`.wh..wh..opq`). */
  readonly opaque: Set<string>;
}

const clean = (name: string): string => name.replace(/^(\.\/|\/)+/, '').replace(/\/+$/, '');

/** Read one (uncompressed) layer tar's headers into an index. */
export async function indexLayer(stream: Readable): Promise<LayerIndex> {
  const index: LayerIndex = { entries: new Map(), whiteouts: new Set(), opaque: new Set() };
  const extract = tar.extract();
  const done = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      const name = clean(h.name);
      const slash = name.lastIndexOf('/');
      const dir = slash < 0 ? '' : name.slice(0, slash);
      const base = name.slice(slash + 1);
      if (base === '.wh..wh..opq') index.opaque.add(dir);
      else if (base.startsWith('.wh.'))
        index.whiteouts.add(dir === '' ? base.slice(4) : `${dir}/${base.slice(4)}`);
      else if (name !== '')
        index.entries.set(name, {
          isDir: h.type === 'directory',
          mode: (h.mode ?? 0o644) & 0o7777,
          uid: h.uid ?? 0,
          gid: h.gid ?? 0,
          mtime: h.mtime ?? new Date(0),
          // COPY resolves its destination through the image's symlinks (/bin -> usr/bin).
          ...(h.type === 'symlink' ? { linkTarget: h.linkname ?? '' } : {}),
        });
      entry.resume();
    }
  })();
  await Promise.all([pipeline(stream, extract), done]);
  return index;
}

/**
 * A lookup over layers (lowest first): the topmost layer that has the path
 * answers; a whiteout of it or of a parent, or an opaque parent in a layer
 * above, hides what is below.
 */
export function lowerLookup(layers: readonly LayerIndex[]): ExistingLookup {
  return (imagePath) => {
    const p = clean(imagePath);
    if (p === '') return { isDir: true, mode: 0o755, uid: 0, gid: 0, mtime: new Date(0) };
    const parents: string[] = [];
    for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) parents.push(p.slice(0, i));
    for (let i = layers.length - 1; i >= 0; i--) {
      const l = layers[i]!;
      const hit = l.entries.get(p);
      if (hit) return hit;
      if (l.whiteouts.has(p) || parents.some((d) => l.whiteouts.has(d))) return undefined;
      if (l.opaque.has(p) || parents.some((d) => l.opaque.has(d))) return undefined;
    }
    return undefined;
  };
}

export type { LayerIndex };
