// Where a workspace prepare's time goes (P14, not timed for the goal): the client's packing
// alone, a prepare with a meter on its body (live packing, then from a pre-made tar), the same
// bytes as one guest file (the transport) and unpacked by the guest's own tar (its
// filesystem), and in a git image every git call of the guest's set-up and export scripts,
// timed by a wrapper put first on the guest's PATH for the profile only.
import { execFile } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { VesselClient } from '../../src/client/index.js';
import { packWorkspace } from '../../src/cli/commands/workspace.js';
import type { BenchRepo } from './git-repo.js';
import { round } from './measure.js';

const execFileAsync = promisify(execFile);

/** A shell script in the guest (as root, through the API); fails on a non-zero exit. */
export async function guest(
  c: VesselClient,
  id: string,
  script: string,
  args: readonly string[] = [],
): Promise<string> {
  const r = await c.execInstance(id, { argv: ['sh', '-c', script, 'sh', ...args], user: '0' });
  if (r.exit_code !== 0)
    throw new Error(`guest \`${script.slice(0, 200)}\` exited ${r.exit_code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Append a line to every one of `files` (paths in the workspace `dir`). */
export function editFiles(c: VesselClient, id: string, dir: string, files: readonly string[]) {
  return guest(
    c,
    id,
    'cd "$1" && shift && for f; do echo "// changed in the guest" >> "$f"; done',
    [dir, ...files],
  );
}

/** The wrapper: each git call's wall time and arguments to a log, then git's own exit code. */
const WRAPPER = `#!/bin/sh
s=$(date +%s%N)
/usr/bin/git "$@"
rc=$?
echo "$(( ($(date +%s%N) - s) / 1000000 )) $*" >> /tmp/p14-git.log
exit $rc
`;

/** The export's temporary index made fresh (as EXPORT_SCRIPT does) or seeded from the real one. */
const ADD_ALL = `set -eu
cd "$1"
G() { /usr/bin/git -c safe.directory='*' -c core.hooksPath=/dev/null "$@"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
tmp=$(mktemp -d)
cp .git/index "$tmp/seeded"
export GIT_INDEX_FILE="$tmp/seeded"
t=$(ms); G read-tree -m HEAD; G add -A; echo "seeded_index_ms $(( $(ms) - t ))"
b=$(G write-tree)
export GIT_INDEX_FILE="$tmp/fresh"
t=$(ms); G read-tree HEAD; G add -A; echo "fresh_index_ms $(( $(ms) - t ))"
a=$(G write-tree)
[ "$a" = "$b" ] && echo "same_tree 1" || echo "same_tree 0"
rm -rf "$tmp"
`;

export interface PrepareSplit {
  total_ms: number;
  /** The daemon's own duration_ms (under the workspace lock). */
  server_ms: number;
  /** Request → the daemon reads the body's first byte (the mkdir exec, the lock, the stat). */
  to_first_byte_ms: number;
  /** First → last byte read: packing (when live), the upload, the agent's unpack. */
  body_ms: number;
  /** Last byte read → the answer: the end of the unpack, then the guest's set-up script. */
  after_body_ms: number;
}

export interface Profile {
  /** packWorkspace() drained to nowhere: git ls-files, an lstat per file, git bundle, tar. */
  pack_ms: number;
  pack_bytes: number;
  /** `git bundle create` of HEAD, branches and tags alone (part of pack_ms). */
  bundle_ms: number;
  bundle_bytes: number;
  /** client.prepareWorkspace() packing as it sends (what the CLI does). */
  live: PrepareSplit;
  /** The same, from the tar packed beforehand into a file: no client packing in it. */
  prepacked: PrepareSplit;
  /** The same tar written to one guest file (PUT /files, nothing unpacked): the transport. */
  transport_only_ms: number;
  /** That file unpacked by the guest's own tar (`tar -xf`, in the guest). */
  guest_untar_ms: number;
  /** Every git call of the live prepare's set-up script: [ms, arguments]. */
  prepare_git_calls?: [number, string][];
  /** The same for one export (after the same 100 edits as the timed exports). */
  export_git_calls?: [number, string][];
  export_ms?: number;
  /** `read-tree HEAD` + `add -A` into a temporary index: fresh (as now) or seeded from .git/index. */
  add_all?: Record<string, number>;
}

/** A stream that notes when its first and last bytes pass. */
function meter(src: Readable): { stream: Readable; first: () => number; last: () => number } {
  let first = 0;
  let last = 0;
  const t = new Transform({
    transform(chunk: Buffer, _e, cb) {
      last = performance.now();
      first ||= last;
      cb(null, chunk);
    },
  });
  src.once('error', (err) => t.destroy(err));
  return { stream: src.pipe(t), first: () => first, last: () => last };
}

async function metered(
  c: VesselClient,
  id: string,
  body: Readable,
  req: { path: string; head?: string; branch?: string },
): Promise<PrepareSplit> {
  const m = meter(body);
  const t0 = performance.now();
  const info = await c.prepareWorkspace(id, m.stream, req);
  const t1 = performance.now();
  return {
    total_ms: round(t1 - t0, 0),
    server_ms: info.duration_ms,
    to_first_byte_ms: round(m.first() - t0, 0),
    body_ms: round(m.last() - m.first(), 0),
    after_body_ms: round(t1 - m.last(), 0),
  };
}

const calls = (log: string): [number, string][] =>
  log
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const sp = l.indexOf(' ');
      return [Number(l.slice(0, sp)), l.slice(sp + 1).slice(0, 120)];
    });

/** Profile one prepare (and, with git, one export) in instance `id`; `work` is a host temp dir. */
export async function profilePrepare(
  c: VesselClient,
  id: string,
  repo: BenchRepo,
  opts: { work: string; git: boolean; edits: readonly string[] },
): Promise<Profile> {
  const bundle = path.join(opts.work, 'p.bundle');
  const refs = ['HEAD', '--branches', '--tags'];
  const tb = performance.now();
  await execFileAsync('git', ['-C', repo.dir, 'bundle', 'create', '-q', bundle, ...refs]);
  const bundleMs = performance.now() - tb;
  const bundleBytes = (await fs.stat(bundle)).size;
  await fs.rm(bundle);

  const tp = performance.now();
  const tarFile = path.join(opts.work, 'pack.tar');
  const packed = await packWorkspace(repo.dir);
  await pipeline(packed.stream, createWriteStream(tarFile));
  await packed.cleanup();
  const packMs = performance.now() - tp;
  const packBytes = (await fs.stat(tarFile)).size;
  const req = { head: repo.head, branch: repo.branch };

  if (opts.git) await c.writeInstanceFile(id, '/usr/local/bin/git', WRAPPER, { mode: 0o755 });
  const p: Profile = {
    pack_ms: round(packMs, 0),
    pack_bytes: packBytes,
    bundle_ms: round(bundleMs, 0),
    bundle_bytes: bundleBytes,
    live: await (async () => {
      const live = await packWorkspace(repo.dir);
      try {
        return await metered(c, id, live.stream, { path: '/w-prof', ...req });
      } finally {
        await live.cleanup();
      }
    })(),
    prepacked: { total_ms: 0, server_ms: 0, to_first_byte_ms: 0, body_ms: 0, after_body_ms: 0 },
    transport_only_ms: 0,
    guest_untar_ms: 0,
  };
  if (opts.git) {
    p.prepare_git_calls = calls(await guest(c, id, 'cat /tmp/p14-git.log; rm -f /tmp/p14-git.log'));
    await editFiles(c, id, '/w-prof', opts.edits);
    const te = performance.now();
    const patch = await c.workspacePatch(id, '/w-prof');
    for await (const _ of patch as AsyncIterable<Buffer>); // drain
    p.export_ms = round(performance.now() - te, 0);
    p.export_git_calls = calls(await guest(c, id, 'cat /tmp/p14-git.log; rm -f /tmp/p14-git.log'));
    await guest(c, id, 'rm -f /usr/local/bin/git');
    const out = await guest(c, id, ADD_ALL, ['/w-prof']);
    p.add_all = Object.fromEntries(
      out
        .trim()
        .split('\n')
        .map((l) => l.split(' '))
        .map(([k, v]) => [k!, Number(v)]),
    );
  }
  await guest(c, id, 'rm -rf /w-prof && sync');
  p.prepacked = await metered(c, id, createReadStream(tarFile), { path: '/w-prof', ...req });
  await guest(c, id, 'rm -rf /w-prof && sync');

  const tt = performance.now();
  await c.writeInstanceFile(id, '/pk.tar', createReadStream(tarFile));
  p.transport_only_ms = round(performance.now() - tt, 0);
  await fs.rm(tarFile);
  const tu = performance.now();
  await guest(c, id, 'mkdir -p /w-untar && tar -xf /pk.tar -C /w-untar');
  p.guest_untar_ms = round(performance.now() - tu, 0);
  await guest(c, id, 'rm -rf /w-untar /pk.tar && sync');
  return p;
}
