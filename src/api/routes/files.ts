import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { bodyStream, withBody } from '../body.js';
import { FileEntrySchema, PATH_STAT_HEADER, WorkspaceInfoSchema } from '../../core/wire-files.js';
import { errorResponses, InstanceIdParams, type InstanceIdParamsT } from '../schemas.js';
import type { ApiDeps } from '../app.js';

const PathField = Type.String({
  minLength: 1,
  maxLength: 4096,
  description: 'Absolute path in the guest filesystem',
});

const PathQuery = Type.Object({ path: PathField }, { additionalProperties: false });
const WriteQuery = Type.Object(
  {
    path: PathField,
    mode: Type.Optional(
      Type.String({
        pattern: '^0?[0-7]{1,4}$',
        default: '0644',
        description: 'Permission bits in octal (default 0644)',
      }),
    ),
  },
  { additionalProperties: false },
);
const RemoveQuery = Type.Object(
  {
    path: PathField,
    recursive: Type.Optional(
      Type.Boolean({
        default: false,
        description: 'Remove a non-empty directory and its contents',
      }),
    ),
  },
  { additionalProperties: false },
);

const WorkspaceQuery = Type.Object(
  {
    path: Type.Optional({ ...PathField, default: '/work' }),
    head: Type.Optional(
      Type.String({
        pattern: '^[0-9a-f]{40}([0-9a-f]{24})?$',
        description: "The host repository's HEAD commit (the body then holds the history bundle)",
      }),
    ),
    branch: Type.Optional(Type.String({ maxLength: 200, description: 'The branch HEAD is on' })),
  },
  { additionalProperties: false },
);
const PatchQuery = Type.Object(
  {
    path: Type.Optional({ ...PathField, default: '/work' }),
    since: Type.Optional(
      Type.Union([Type.Literal('head'), Type.Literal('prepared')], {
        default: 'head',
        description:
          'head: against the prepared HEAD commit (the host’s uncommitted work included); prepared: against the tree as prepared (only the guest’s changes)',
      }),
    ),
  },
  { additionalProperties: false },
);

/** Where a route's request body may come from: the raw stream (the images routes' tar parser). */
const BODY_TYPES = ['application/octet-stream', 'application/x-tar'];

/**
 * Files in a Running instance: Docker's `/archive` (tar in and out, used by
 * `vessel cp`) and the files API for SDKs (`/files`: read or list, write,
 * remove). Bodies stream both ways under the guest channel's flow control.
 */
export function fileRoutes(app: FastifyInstance, deps: ApiDeps): void {
  const instances = deps.instances;
  const tags = ['instances'];
  const idOf = (request: { params: unknown }): string => (request.params as InstanceIdParamsT).id;

  app.get(
    '/instances/:id/archive',
    {
      schema: {
        operationId: 'getInstanceArchive',
        summary: 'A tar stream of a path in the guest (Docker’s GET /containers/{id}/archive)',
        description: `The archive holds the path under its base name (a directory with its contents; symlinks are stored, not followed), with modes, mtimes and owners. The ${PATH_STAT_HEADER} header carries the path's PathInfo as base64 JSON. 404 when the path does not exist; 409 when the instance is not Running.`,
        tags,
        params: InstanceIdParams,
        querystring: PathQuery,
        'x-produces': 'application/x-tar',
        response: errorResponses,
      },
    },
    async (request, reply) => {
      const q = request.query as Static<typeof PathQuery>;
      const { stream, stat } = await instances.archiveOut(idOf(request), q.path);
      return reply
        .type('application/x-tar')
        .header(PATH_STAT_HEADER, Buffer.from(JSON.stringify(stat)).toString('base64'))
        .send(stream);
    },
  );

  app.put(
    '/instances/:id/archive',
    {
      schema: {
        operationId: 'putInstanceArchive',
        summary:
          'Unpack a tar stream into a directory in the guest (Docker’s PUT /containers/{id}/archive)',
        description:
          'path must be an existing directory (404 if missing, 400 if not a directory). Entries keep their modes, mtimes and symlinks; entries with .. are refused. 409 when the instance is not Running.',
        tags,
        params: InstanceIdParams,
        querystring: PathQuery,
        'x-consumes': BODY_TYPES,
        response: { 204: Type.Null(), ...errorResponses },
      },
      bodyLimit: Number.MAX_SAFE_INTEGER,
    },
    async (request, reply) => {
      const q = request.query as Static<typeof PathQuery>;
      await withBody(bodyStream(request.body, 'the tar archive', BODY_TYPES), (own) =>
        instances.archiveIn(idOf(request), q.path, own),
      );
      return reply.status(204).send();
    },
  );

  app.get(
    '/instances/:id/files',
    {
      schema: {
        operationId: 'readInstanceFile',
        summary: 'Read a file (bytes) or list a directory (JSON) in the guest',
        description:
          'A file (symlinks followed) comes back as application/octet-stream, streamed; a directory as a JSON array of entries (not recursive, sorted by name). 404 when the path does not exist; 409 when the instance is not Running.',
        tags,
        params: InstanceIdParams,
        querystring: PathQuery,
        'x-produces': ['application/json', 'application/octet-stream'],
        response: { 200: Type.Array(FileEntrySchema), ...errorResponses },
      },
    },
    async (request, reply) => {
      const q = request.query as Static<typeof PathQuery>;
      const opened = await instances.openPath(idOf(request), q.path);
      if (opened.kind === 'dir') return opened.entries;
      return reply
        .type('application/octet-stream')
        .header('content-length', opened.size)
        .send(opened.stream);
    },
  );

  app.put(
    '/instances/:id/files',
    {
      schema: {
        operationId: 'writeInstanceFile',
        summary: 'Write a file in the guest (streamed body; parents created)',
        description:
          'Replaces an existing file; 400 when path is a directory. mode is octal (default 0644). 409 when the instance is not Running.',
        tags,
        params: InstanceIdParams,
        querystring: WriteQuery,
        'x-consumes': BODY_TYPES,
        response: { 204: Type.Null(), ...errorResponses },
      },
      bodyLimit: Number.MAX_SAFE_INTEGER,
    },
    async (request, reply) => {
      const q = request.query as Static<typeof WriteQuery>;
      const mode = parseInt(q.mode ?? '0644', 8);
      await withBody(bodyStream(request.body, 'the file', BODY_TYPES), (own) =>
        instances.writeFile(idOf(request), q.path, mode, own),
      );
      return reply.status(204).send();
    },
  );

  app.delete(
    '/instances/:id/files',
    {
      schema: {
        operationId: 'removeInstanceFile',
        summary: 'Remove a file, symlink or directory in the guest',
        description:
          'A non-empty directory needs recursive=true (else 400). A symlink is removed, not its target. 404 when the path does not exist; 409 when the instance is not Running.',
        tags,
        params: InstanceIdParams,
        querystring: RemoveQuery,
        response: { 204: Type.Null(), ...errorResponses },
      },
    },
    async (request, reply) => {
      const q = request.query as Static<typeof RemoveQuery>;
      await instances.removePath(idOf(request), q.path, q.recursive ?? false);
      return reply.status(204).send();
    },
  );

  app.post(
    '/instances/:id/workspace',
    {
      schema: {
        operationId: 'prepareWorkspace',
        summary: 'Stream a repository into the guest as a git workspace',
        description: `The body is a tar of the tree (tracked and untracked, not ignored, files) at path (created when missing); with head, it also holds the repository history as a git bundle named ${'.vessel-workspace.bundle'} at its root, and the guest gets a real repository at that HEAD (branch when given) with the files as they were on the host. Without head, a plain tree, committed in the guest as a base for patches. Runs under the instance's workspace lock, never its lifecycle lock. 409 when the instance is not Running.`,
        tags,
        params: InstanceIdParams,
        querystring: WorkspaceQuery,
        'x-consumes': BODY_TYPES,
        response: { 200: WorkspaceInfoSchema, ...errorResponses },
      },
      bodyLimit: Number.MAX_SAFE_INTEGER,
    },
    async (request) => {
      const q = request.query as Static<typeof WorkspaceQuery>;
      return withBody(bodyStream(request.body, 'the workspace tar', BODY_TYPES), (own) =>
        instances.prepareWorkspace(
          idOf(request),
          {
            path: q.path ?? '/work',
            ...(q.head ? { head: q.head } : {}),
            ...(q.branch ? { branch: q.branch } : {}),
          },
          own,
        ),
      );
    },
  );

  app.get(
    '/instances/:id/workspace/patch',
    {
      schema: {
        operationId: 'getWorkspacePatch',
        summary: "The guest's changes since prepare, as a binary git patch",
        description:
          'Commits, staged and unstaged edits, deletions and new (not ignored) files, against the prepared HEAD (or, with since=prepared, the tree as prepared); taken through a temporary index, so the guest index and tree are untouched. Waits for a prepare in flight. Empty when nothing changed.',
        tags,
        params: InstanceIdParams,
        querystring: PatchQuery,
        'x-produces': 'text/x-diff',
        response: errorResponses,
      },
    },
    async (request, reply) => {
      const q = request.query as Static<typeof PatchQuery>;
      const stream = await instances.workspacePatch(
        idOf(request),
        q.path ?? '/work',
        q.since ?? 'head',
      );
      return reply.type('text/x-diff').send(stream);
    },
  );
}
