import type { LayerProgress, WireImage } from '../core/wire.js';
import type { ImageRow, ImageStatus } from '../store/index.js';

/** An image as the API shows it (field names follow the hypeman API). */
export type Image = WireImage;

export const ACTIVE_STATUSES: ReadonlySet<ImageStatus> = new Set([
  'pending',
  'pulling',
  'converting',
]);
export const TERMINAL_STATUSES: ReadonlySet<ImageStatus> = new Set(['ready', 'failed']);

export function toImage(row: ImageRow, queuePosition: number | null = null): Image {
  return {
    name: row.name,
    digest: row.digest,
    platform: row.platform,
    status: row.status,
    queue_position: row.status === 'pending' ? queuePosition : null,
    error: row.error,
    error_code: row.error_code,
    source: row.source,
    format: row.format,
    size_bytes: row.size_bytes,
    entrypoint: row.config?.entrypoint ?? null,
    cmd: row.config?.cmd ?? null,
    env: row.config?.env ?? {},
    working_dir: row.config?.working_dir ?? null,
    user: row.config?.user ?? null,
    exposed_ports: row.config?.exposed_ports ?? [],
    layers: row.layers,
    tags: { ...row.tags },
    created_at: row.created_at,
    updated_at: row.updated_at,
  };
}

export type { LayerProgress };

export type ImageEvent =
  | { readonly type: 'status'; readonly name: string; readonly image: Image }
  | { readonly type: 'progress'; readonly name: string; readonly layer: LayerProgress }
  | { readonly type: 'deleted'; readonly name: string };
