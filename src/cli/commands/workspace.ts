/**
 * `vessel workspace prepare|export` and the workspace half of
 * `vessel run ./repo -- CMD`: a host repository goes into a guest as a real
 * git repository (tracked and untracked-not-ignored files, modes and
 * symlinks, the history as a pack made on the host, the same HEAD), and the guest's
 * changes come back as a patch against that HEAD.
 */
import { execFile, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import type { Command } from 'commander';
import type {
  CreateInstanceRequest,
  Instance,
  VesselClient,
  WorkspaceInfo,
} from '../../client/index.js';
import { VesselError } from '../../core/errors.js';
import { WORKSPACE_PACK, WORKSPACE_PACK_INDEX, WORKSPACE_REFS } from '../../core/wire-names.js';
import { connect, type GlobalOptions } from '../connect.js';
import { packPath } from '../cp-tar.js';
import { humanBytes, printJson } from '../output.js';

type Globals = () => GlobalOptions;
const run = promisify(execFile);

/** `git -C dir ARGS`; undefined when git fails (not a repo, no commit, ...). */
async function git(dir: string, args: string[]): Promise<string | undefined> {
  try {
    const { stdout } = await run('git', ['-C', dir, ...args], { maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new VesselError('invalid_argument', 'git is not installed on this machine');
    return undefined;
  }
}

/**
 * The history for the guest: HEAD (detached or not) and every branch and tag as one pack
 * with its index, both made here (the guest would otherwise index every object itself,
 * slowly under emulation), and the refs to write. Alternative: a git bundle, which the
 * guest must `fetch` (index-pack: 4 s for 47 MB under TCG).
 */
async function packHistory(top: string, tmp: string): Promise<{ name: string; file: string }[]> {
  const refs = (
    (await git(top, [
      'for-each-ref',
      '--format=%(objectname) %(refname)',
      'refs/heads',
      'refs/tags',
    ])) ?? ''
  )
    .split('\n')
    .map((line) => line.split(' '))
    .filter((p): p is [string, string] => p.length === 2 && /^[0-9a-f]{40,64}$/.test(p[0]!));
  // pack-objects --revs takes object names, not rev-list's --branches: list the tips.
  const tips = ['HEAD', ...new Set(refs.map(([sha]) => sha))];
  const prefix = path.join(tmp, 'history');
  const hash = (
    await gitWithInput(top, ['pack-objects', '--revs', '-q', prefix], `${tips.join('\n')}\n`)
  ).trim();
  if (!/^[0-9a-f]{40,64}$/.test(hash))
    throw new VesselError('internal', `git pack-objects in ${top} gave no pack name`);
  const lines = [`pack ${hash}`, ...refs.map(([sha, ref]) => `update ${ref} ${sha}`)];
  const refsFile = path.join(tmp, 'refs');
  await fs.writeFile(refsFile, `${lines.join('\n')}\n`);
  return [
    { name: WORKSPACE_PACK, file: `${prefix}-${hash}.pack` },
    { name: WORKSPACE_PACK_INDEX, file: `${prefix}-${hash}.idx` },
    { name: WORKSPACE_REFS, file: refsFile },
  ];
}

/** `git -C dir ARGS` with `input` on stdin; its stdout (errors name the command). */
function gitWithInput(dir: string, args: string[], input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', ['-C', dir, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'ENOENT'
          ? new VesselError('invalid_argument', 'git is not installed on this machine')
          : err,
      ),
    );
    child.on('close', (code) =>
      code === 0
        ? resolve(stdout)
        : reject(
            new VesselError(
              'internal',
              `git ${args[0]} in ${dir} failed: ${stderr.trim().slice(-500)}`,
            ),
          ),
    );
    child.stdin.end(input);
  });
}

export interface PackedWorkspace {
  readonly stream: Readable;
  /** The directory that was packed (a repository's top level). */
  readonly root: string;
  readonly head?: string;
  readonly branch?: string;
  readonly files: number;
  readonly bytes: number;
  /** Remove the temporary pack (after the upload). */
  cleanup(): Promise<void>;
}

/**
 * Pack `dir` for a workspace. In a git repository (its top level): the files
 * `git ls-files --cached --others --exclude-standard` lists that exist, and
 * the history (a pack of HEAD, branches and tags, with its index and the refs). Elsewhere: the whole
 * tree. `onBytes` reports progress.
 */
export async function packWorkspace(
  dir: string,
  onBytes?: (done: number, total: number) => void,
): Promise<PackedWorkspace> {
  const st = await fs.stat(dir).catch(() => undefined);
  if (!st?.isDirectory()) throw new VesselError('invalid_argument', `${dir} is not a directory`);
  const top = (await git(dir, ['rev-parse', '--show-toplevel']))?.trim();
  if (!top) {
    const total = await treeBytes(dir);
    let done = 0;
    const stream = await packPath(dir, {
      name: '',
      onFile: (n) => onBytes?.((done += n), total),
    });
    return {
      stream,
      root: path.resolve(dir),
      files: -1,
      bytes: total,
      cleanup: () => Promise.resolve(),
    };
  }
  const listed = (await git(top, ['ls-files', '-z', '--cached', '--others', '--exclude-standard']))
    ?.split('\0')
    .filter((f) => f !== '');
  const fileSet = new Set<string>();
  const dirSet = new Set<string>();
  let total = 0;
  for (const f of listed ?? []) {
    const s = await fs.lstat(path.join(top, f)).catch(() => undefined);
    if (!s || s.isDirectory()) continue; // deleted in the tree, or a submodule
    fileSet.add(f);
    total += s.isFile() ? s.size : 0;
    for (let d = path.posix.dirname(f); d !== '.'; d = path.posix.dirname(d)) dirSet.add(d);
  }
  const head = (await git(top, ['rev-parse', '--verify', '-q', 'HEAD']))?.trim() || undefined;
  const branch = head
    ? (await git(top, ['symbolic-ref', '-q', '--short', 'HEAD']))?.trim() || undefined
    : undefined;
  let tmp: string | undefined;
  const extra: { name: string; file: string }[] = [];
  if (head) {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-ws-'));
    const history = await packHistory(top, tmp);
    extra.push(...history);
    for (const h of history) total += (await fs.stat(h.file)).size;
  }
  let done = 0;
  const stream = await packPath(top, {
    name: '',
    skip: (rel, isDir) => (isDir ? !dirSet.has(rel) : !fileSet.has(rel)),
    extra,
    onFile: (n) => onBytes?.((done += n), total),
  });
  return {
    stream,
    root: top,
    ...(head ? { head } : {}),
    ...(branch ? { branch } : {}),
    files: fileSet.size,
    bytes: total,
    cleanup: async () => {
      if (tmp) await fs.rm(tmp, { recursive: true, force: true });
    },
  };
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await treeBytes(p);
    else if (e.isFile()) total += (await fs.lstat(p)).size;
  }
  return total;
}

/** A progress line on stderr when it is a terminal (at most every 200 ms). */
function progress(label: string): ((done: number, total: number) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  let last = 0;
  return (done, total) => {
    const now = Date.now();
    if (now - last < 200 && done < total) return;
    last = now;
    const pct = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
    process.stderr.write(`\r${label}: ${humanBytes(done)} / ${humanBytes(total)} (${pct}%)`);
    if (done >= total) process.stderr.write('\n');
  };
}

/** Prepare `dir` in instance `id` at `guestPath`; says what it did on stderr unless quiet. */
export async function prepareWorkspace(
  client: VesselClient,
  id: string,
  dir: string,
  guestPath: string,
  quiet = false,
): Promise<WorkspaceInfo & { root: string; files: number; bytes: number }> {
  const packed = await packWorkspace(dir, quiet ? undefined : progress('workspace'));
  try {
    const info = await client.prepareWorkspace(id, packed.stream, {
      path: guestPath,
      ...(packed.head ? { head: packed.head } : {}),
      ...(packed.branch ? { branch: packed.branch } : {}),
    });
    if (!quiet) {
      const what = packed.files >= 0 ? `${packed.files} files, ` : '';
      const at = packed.head
        ? `, HEAD ${packed.head.slice(0, 12)}${packed.branch ? ` (${packed.branch})` : ' (detached)'}`
        : packed.files >= 0
          ? ' (a repository with no commit yet)'
          : ' (not a git repository: a plain copy)';
      process.stderr.write(
        `prepared ${guestPath}: ${what}${humanBytes(packed.bytes)}${at} in ${(info.duration_ms / 1000).toFixed(1)} s\n`,
      );
      if (info.warning) process.stderr.write(`warning: ${info.warning}\n`);
    }
    return { ...info, root: packed.root, files: packed.files, bytes: packed.bytes };
  } finally {
    await packed.cleanup();
  }
}

/**
 * Write the guest's patch to `output` ('-': stdout); with `applyTo`, apply
 * it there instead (all or nothing: `git apply --check` first). Returns its size.
 */
export async function exportWorkspace(
  client: VesselClient,
  id: string,
  guestPath: string,
  target: { output?: string; applyTo?: string; since?: 'head' | 'prepared' },
): Promise<number> {
  // Applying takes only the guest's changes: the host tree still has its own.
  const since = target.since ?? (target.applyTo === undefined ? 'head' : 'prepared');
  const stream = await client.workspacePatch(id, guestPath, since);
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _e, cb) {
      size += chunk.length;
      cb(null, chunk);
    },
  });
  if (target.applyTo === undefined) {
    if (target.output === undefined || target.output === '-') {
      await pipeline(stream, meter, process.stdout, { end: false });
    } else {
      await pipeline(stream, meter, createWriteStream(target.output));
    }
    return size;
  }
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-patch-'));
  try {
    const file = path.join(tmp, 'changes.patch');
    await pipeline(stream, meter, createWriteStream(file));
    if (size === 0) return 0;
    const top = (await git(target.applyTo, ['rev-parse', '--show-toplevel']))?.trim();
    const where = top ?? path.resolve(target.applyTo);
    const check = await gitApply(where, ['--check', file]);
    if (check.code !== 0)
      throw new VesselError(
        'conflict',
        `the patch does not apply to ${where}; nothing was changed:\n${check.stderr.trim()}`,
        { details: { patch_bytes: size } },
      );
    const applied = await gitApply(where, [file]);
    if (applied.code !== 0)
      throw new VesselError('internal', `git apply failed: ${applied.stderr.trim()}`);
    return size;
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

function gitApply(dir: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('git', ['apply', '--whitespace=nowarn', ...args], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stderr }));
  });
}

export interface WorkspaceRun {
  readonly dir: string;
  readonly image: string;
  readonly command: readonly string[];
  readonly path: string;
  readonly exportTo?: string;
  readonly keep: boolean;
  readonly create: Partial<CreateInstanceRequest>;
  readonly exec: { env?: string[]; user?: string };
  readonly flags: { interactive: boolean; tty: boolean };
  /** Resolves when the instance is Running (or failed to boot). */
  readonly started: (id: string) => Promise<Instance>;
}

/**
 * banger's one command: a VM from `image` that only keeps the guest agent
 * busy, the workspace prepared in it, CMD run there (its output here, its
 * exit code ours), the patch written when asked, the VM deleted unless kept.
 */
export async function runInWorkspace(client: VesselClient, r: WorkspaceRun): Promise<number> {
  const inst = await client.createInstance({
    ...r.create,
    image: r.image,
    entrypoint: ['/bin/sh', '-c'],
    cmd: ['while :; do sleep 3600; done'],
  });
  try {
    const now = await r.started(inst.id);
    if (now.state !== 'Running')
      throw new VesselError(
        'internal',
        `instance ${inst.name} did not start: ${now.state_error ?? now.state}`,
      );
    await prepareWorkspace(client, inst.id, r.dir, r.path);
    const { execAttached } = await import('../exec-attach.js');
    const code = await execAttached(
      client,
      inst.id,
      {
        argv: [...r.command],
        cwd: r.path,
        ...(r.exec.env ? { env: r.exec.env } : {}),
        ...(r.exec.user ? { user: r.exec.user } : {}),
      },
      r.flags,
    );
    if (r.exportTo) {
      const size = await exportWorkspace(client, inst.id, r.path, { output: r.exportTo });
      process.stderr.write(
        size === 0
          ? 'no changes to export\n'
          : `wrote ${humanBytes(size)} patch to ${r.exportTo}\n`,
      );
    }
    if (r.keep) process.stderr.write(`kept instance ${inst.name} (${inst.id})\n`);
    return code;
  } finally {
    if (!r.keep) await client.deleteInstance(inst.id).catch(() => undefined);
  }
}

export function registerWorkspaceCommands(program: Command, globals: Globals): void {
  const ws = program
    .command('workspace')
    .description('a host repository in a running instance, and its changes back as a patch');
  ws.command('prepare')
    .description(
      'stream DIR (default .) into the instance: tracked and untracked (not ignored) files, its git history and HEAD',
    )
    .argument('<instance>', 'id or name (Running)')
    .argument('[dir]', 'the repository or directory', '.')
    .option('--path <dir>', 'where in the guest', '/work')
    .action(async (id: string, dir: string, o: { path: string }) => {
      const g = globals();
      const client = await connect(g);
      const info = await prepareWorkspace(client, id, dir, o.path, g.json === true);
      if (g.json) printJson(info);
    });
  ws.command('export')
    .description("the guest's changes since prepare as a git patch (commits, edits, new files)")
    .argument('<instance>', 'id or name (Running)')
    .option('--path <dir>', 'the workspace in the guest', '/work')
    .option('-o, --output <file>', 'write the patch here (default: stdout)')
    .option(
      '--apply [dir]',
      "apply the guest's changes to the host repository (default .); nothing changes if they do not apply",
    )
    .option(
      '--since <base>',
      'head: against the prepared HEAD (default; your uncommitted work is in it too), prepared: only what changed in the guest (default with --apply)',
    )
    .action(
      async (
        id: string,
        o: { path: string; output?: string; apply?: string | boolean; since?: string },
      ) => {
        if (o.since !== undefined && o.since !== 'head' && o.since !== 'prepared')
          throw new VesselError('invalid_argument', '--since must be head or prepared');
        const client = await connect(globals());
        const applyTo = o.apply === undefined ? undefined : o.apply === true ? '.' : o.apply;
        const size = await exportWorkspace(client, id, o.path, {
          ...(o.since ? { since: o.since } : {}),
          ...(o.output ? { output: o.output } : {}),
          ...(typeof applyTo === 'string' ? { applyTo } : {}),
        });
        if (applyTo !== undefined || o.output)
          process.stderr.write(
            size === 0
              ? 'no changes\n'
              : applyTo !== undefined
                ? `applied ${humanBytes(size)} of changes to ${applyTo}\n`
                : `wrote ${humanBytes(size)} patch to ${o.output}\n`,
          );
      },
    );
}
