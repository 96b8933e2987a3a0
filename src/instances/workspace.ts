/**
 * Workspaces (issue 13): a host repository streamed into a Running guest as a
 * real git repository with the same HEAD, and the guest's changes taken back
 * as a patch against that HEAD. The guest I/O runs under a per-instance
 * *workspace* lock, never the lifecycle lock: stop, delete and restart do not
 * wait behind a slow import, two prepares never interleave, and an export
 * waits for an import in flight. See src/instances/README.md, "Workspaces".
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { VesselError } from '../core/errors.js';
import {
  WORKSPACE_BUNDLE,
  WORKSPACE_PACK,
  WORKSPACE_PACK_INDEX,
  WORKSPACE_REFS,
} from '../core/wire-names.js';
import type { KeyedMutex } from '../core/sync.js';
import type { InstanceCore } from './core.js';
import * as files from './files.js';
import * as io from './io.js';

export { WORKSPACE_BUNDLE };

export interface PrepareWorkspaceRequest {
  /** Absolute guest directory (created when missing). */
  readonly path: string;
  /** The host repository's HEAD commit; absent for a plain tree or a repo with no commit. */
  readonly head?: string;
  /** The branch HEAD is on; absent when detached. */
  readonly branch?: string;
}

export interface WorkspaceInfo {
  readonly path: string;
  /** The guest has a git repository at `path` (and `base` is what patches are against). */
  readonly git: boolean;
  /** The commit patches are taken against (the host's HEAD, or a base commit of a plain tree). */
  readonly base: string | null;
  readonly branch: string | null;
  readonly duration_ms: number;
  /** Why the workspace is a plain copy only (no git in the image). */
  readonly warning?: string;
}

const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;
const BRANCH = /^(?!-)(?!.*\.\.)(?!.*\/\/)[A-Za-z0-9._/-]{1,200}(?<![./])$/;
/** Every git call in the guest: files may belong to the host user's uid, not the guest's. */
const GIT = "git -c safe.directory='*' -c core.hooksPath=/dev/null";

const HISTORY = `${WORKSPACE_BUNDLE} ${WORKSPACE_PACK} ${WORKSPACE_PACK_INDEX} ${WORKSPACE_REFS}`;

/**
 * Guest side of prepare: history from the host's pack and index (moved into place and the
 * refs written: nothing to index under emulation) or from a bundle (older clients), HEAD as
 * on the host, index = HEAD.
 */
const PREPARE_SCRIPT = `set -eu
cd "$WS_PATH"
if ! command -v git >/dev/null 2>&1; then
  rm -f ${HISTORY}
  echo "no-git"
  exit 0
fi
if [ -n "$WS_HEAD" ]; then
  [ -d .git ] || ${GIT} init -q
  if [ -f ${WORKSPACE_REFS} ]; then
    hash=$(sed -n 's/^pack \\([0-9a-f]\\{40,64\\}\\)$/\\1/p' ${WORKSPACE_REFS})
    [ -n "$hash" ] || { echo "${WORKSPACE_REFS} names no pack" >&2; exit 5; }
    mkdir -p .git/objects/pack
    mv -f ${WORKSPACE_PACK_INDEX} ".git/objects/pack/pack-$hash.idx"
    mv -f ${WORKSPACE_PACK} ".git/objects/pack/pack-$hash.pack"
    grep '^update refs/' ${WORKSPACE_REFS} | ${GIT} update-ref --stdin
  else
    ${GIT} fetch -q --update-head-ok ${WORKSPACE_BUNDLE} '+refs/*:refs/*'
  fi
  ${GIT} cat-file -e "$WS_HEAD^{commit}"
  if [ -n "$WS_BRANCH" ]; then
    ${GIT} update-ref "refs/heads/$WS_BRANCH" "$WS_HEAD"
    ${GIT} symbolic-ref HEAD "refs/heads/$WS_BRANCH"
  else
    ${GIT} update-ref --no-deref HEAD "$WS_HEAD"
  fi
  ${GIT} reset -q
  base="$WS_HEAD"
else
  [ -d .git ] || ${GIT} init -q
  ${GIT} add -A
  ${GIT} -c user.name=vessel -c user.email=vessel@localhost commit -q --allow-empty --no-verify -m "vessel workspace base"
  base=$(${GIT} rev-parse HEAD)
fi
rm -f ${HISTORY}
${GIT} config vessel.base "$base"
# The tree as prepared (the host's uncommitted work included), kept under a ref: a patch
# against it holds only what happened in the guest.
tmp=$(mktemp -d)
# A copy of the real index keeps its stat data: add -A then hashes only what changed.
cp .git/index "$tmp/index" 2>/dev/null || GIT_INDEX_FILE="$tmp/index" ${GIT} read-tree "$base"
GIT_INDEX_FILE="$tmp/index" ${GIT} add -A
tree=$(GIT_INDEX_FILE="$tmp/index" ${GIT} write-tree)
rm -rf "$tmp"
prepared=$(${GIT} -c user.name=vessel -c user.email=vessel@localhost commit-tree "$tree" -p "$base" -m "vessel: the workspace as prepared")
${GIT} update-ref refs/vessel/prepared "$prepared"
echo "base $base"
`;

/**
 * Guest side of export: every change since the base — commits, staged and
 * unstaged edits, new files (not ignored ones) — through a temporary index,
 * so the guest's own index and working tree are never touched.
 */
const EXPORT_SCRIPT = `set -eu
cd "$WS_PATH"
command -v git >/dev/null 2>&1 || { echo "the image has no git: a workspace patch needs it" >&2; exit 3; }
base=$(${GIT} config vessel.base) || { echo "$WS_PATH is not a prepared workspace (vessel workspace prepare)" >&2; exit 4; }
if [ "$WS_SINCE" = prepared ]; then
  base=$(${GIT} rev-parse -q --verify refs/vessel/prepared) || { echo "$WS_PATH has no prepared state (prepared by an older Vessel?)" >&2; exit 4; }
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp .git/index "$tmp/index" 2>/dev/null || GIT_INDEX_FILE="$tmp/index" ${GIT} read-tree "$base"
export GIT_INDEX_FILE="$tmp/index"
${GIT} add -A
${GIT} diff --cached --binary --full-index "$base" > "$WS_OUT"
`;

function checkRequest(req: PrepareWorkspaceRequest): void {
  files.checkPath(req.path);
  if (req.head !== undefined && !SHA.test(req.head))
    throw new VesselError('invalid_argument', `head "${req.head}" is not a full commit id`);
  if (req.branch !== undefined && !BRANCH.test(req.branch))
    throw new VesselError('invalid_argument', `branch "${req.branch}" is not a branch name`);
  if (req.branch !== undefined && req.head === undefined)
    throw new VesselError('invalid_argument', 'branch needs head');
}

/** Run a shell script in the guest as root; its output, bounded. */
async function guestScript(
  core: InstanceCore,
  id: string,
  script: string,
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const session = await io.exec(core, id, {
    argv: ['/bin/sh', '-c', script],
    env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    user: '0',
  });
  const read = async (s: Readable): Promise<string> => {
    let out = '';
    for await (const c of s) if (out.length < 64 * 1024) out += (c as Buffer).toString('utf8');
    return out;
  };
  const [stdout, stderr, status] = await Promise.all([
    read(session.stdout),
    read(session.stderr),
    session.result,
  ]);
  return { code: status.code, stdout, stderr };
}

export class Workspaces {
  constructor(
    private readonly core: InstanceCore,
    private readonly locks: KeyedMutex,
  ) {}

  /** Unpack `body` (a tar of the tree, with the history bundle) at `req.path` and set up git. */
  async prepare(
    idOrName: string,
    req: PrepareWorkspaceRequest,
    body: Readable,
  ): Promise<WorkspaceInfo> {
    checkRequest(req);
    const row = this.core.row(idOrName);
    return this.locks.run(row.id, async () => {
      const t0 = Date.now();
      const mk = await guestScript(this.core, row.id, 'mkdir -p -- "$WS_PATH"', {
        WS_PATH: req.path,
      });
      if (mk.code !== 0)
        throw new VesselError(
          'invalid_argument',
          `cannot create ${req.path} in instance "${row.name}": ${mk.stderr.trim()}`,
        );
      await files.archiveIn(this.core, row.id, req.path, body);
      const r = await guestScript(this.core, row.id, PREPARE_SCRIPT, {
        WS_PATH: req.path,
        WS_HEAD: req.head ?? '',
        WS_BRANCH: req.branch ?? '',
      });
      if (r.code !== 0)
        throw new VesselError(
          'internal',
          `setting up the git repository in ${req.path} failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`,
          { details: { instance: row.name, path: req.path } },
        );
      const base = /^base ([0-9a-f]+)$/m.exec(r.stdout)?.[1] ?? null;
      this.core.emit('workspace_prepare', this.core.row(row.id));
      return {
        path: req.path,
        git: base !== null,
        base,
        branch: base !== null ? (req.branch ?? null) : null,
        duration_ms: Date.now() - t0,
        ...(base === null
          ? { warning: 'the image has no git: the tree was copied, but no patch can be taken' }
          : {}),
      };
    });
  }

  /**
   * The guest's changes at `path` as a binary git patch: against the prepared
   * HEAD (`head`: the host's uncommitted work is in it too), or against the
   * tree as prepared (`prepared`: only what happened in the guest, which
   * applies to the unchanged host tree). Written to a guest temp file under
   * the lock, then streamed.
   */
  async patch(
    idOrName: string,
    path: string,
    since: 'head' | 'prepared' = 'head',
  ): Promise<Readable> {
    checkRequest({ path });
    const row = this.core.row(idOrName);
    // Inside .git: every image with a workspace has it, and git ignores the file there.
    const out = `${path.replace(/\/+$/, '')}/.git/vessel-patch-${randomBytes(6).toString('hex')}`;
    await this.locks.run(row.id, async () => {
      const r = await guestScript(this.core, row.id, EXPORT_SCRIPT, {
        WS_PATH: path,
        WS_OUT: out,
        WS_SINCE: since,
      });
      if (r.code === 3 || r.code === 4)
        throw new VesselError('invalid_argument', r.stderr.trim(), {
          details: { instance: row.name, path },
        });
      if (r.code !== 0)
        throw new VesselError(
          'internal',
          `taking the patch of ${path} failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`,
        );
      this.core.emit('workspace_export', this.core.row(row.id));
    });
    const opened = await files.openPath(this.core, row.id, out);
    if (opened.kind !== 'file') throw new VesselError('internal', `${out} is not a file`);
    const remove = (): void => {
      void files.removePath(this.core, row.id, out, false).catch(() => undefined);
    };
    opened.stream.once('close', remove);
    return opened.stream;
  }
}
