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

export const WorkspaceInfoSchema = Type.Object(
  {
    path: Type.String({ description: 'The workspace directory in the guest' }),
    git: Type.Boolean({ description: 'A git repository was set up there' }),
    base: Type.Union([Type.String(), Type.Null()], {
      description:
        'The commit patches are taken against (the host HEAD, or a base commit of a plain tree)',
    }),
    branch: Type.Union([Type.String(), Type.Null()]),
    duration_ms: Type.Integer(),
    warning: Type.Optional(Type.String()),
  },
  { title: 'WorkspaceInfo' },
);
export type WireWorkspaceInfo = Static<typeof WorkspaceInfoSchema>;
