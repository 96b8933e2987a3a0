/**
 * Wire types of the files API (`/instances/{id}/files`, `/instances/{id}/archive`).
 * Hypeman has no files API (its `cp` is a WebSocket outside its OpenAPI); the
 * archive endpoints follow Docker's `/containers/{id}/archive`.
 */
import { Type, type Static } from '@sinclair/typebox';

/** One entry of `GET /instances/{id}/files` on a directory (lstat: a symlink is itself). */
export const FileEntrySchema = Type.Object(
  {
    name: Type.String(),
    type: Type.Union([
      Type.Literal('file'),
      Type.Literal('dir'),
      Type.Literal('symlink'),
      Type.Literal('other'),
    ]),
    size: Type.Integer({ description: 'Bytes (lstat)' }),
    mode: Type.Integer({ description: 'Permission bits, e.g. 420 (0644)' }),
    mtime: Type.Integer({ description: 'Modification time, seconds since the epoch' }),
    link_target: Type.Union([Type.String(), Type.Null()], {
      description: 'The target of a symlink, else null',
    }),
  },
  { title: 'FileEntry' },
);
export type FileEntry = Static<typeof FileEntrySchema>;

export { PATH_STAT_HEADER } from './files-header.js';
