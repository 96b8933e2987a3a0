// A synthetic git repository for the workspace benchmark (P14): many small text files in
// many directories, a few binaries of 1–4 MiB, committed in three commits so there is
// history (the third rewrites some text files and replaces one binary), then packed.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;

export interface RepoShape {
  /** Files in all (text and binary). */
  readonly files: number;
  readonly dirs: number;
  /** Binaries of 1, 2, 3, 4, 1, 2, … MiB. */
  readonly binaries: number;
}

export interface BenchRepo {
  readonly dir: string;
  readonly files: number;
  /** Bytes of the working tree's files (without .git). */
  readonly treeBytes: number;
  /** Bytes under .git (one pack and the rest). */
  readonly gitBytes: number;
  readonly head: string;
  readonly branch: string;
  readonly commits: number;
  /** Every text file's repository path (the guest edits some of them). */
  readonly textFiles: readonly string[];
}

const git = async (dir: string, ...args: string[]): Promise<string> =>
  (
    await execFileAsync(
      'git',
      // No background `gc --auto`: it would pack the objects at a random moment of the run.
      [
        '-C',
        dir,
        '-c',
        'gc.auto=0',
        '-c',
        'user.name=bench',
        '-c',
        'user.email=bench@localhost',
        ...args,
      ],
      { maxBuffer: 64 * MiB },
    )
  ).stdout;

/** Source-like text of about `bytes` bytes (lines of identifiers and hex: compresses ~2:1). */
function text(bytes: number, seed: number): string {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const line = `export const v${seed}_${i} = '${randomBytes(12).toString('hex')}'; // line ${i}\n`;
    lines.push(line);
    n += line.length;
  }
  return lines.join('');
}

async function du(dir: string): Promise<number> {
  const { stdout } = await execFileAsync('du', ['-sb', '--apparent-size', dir]);
  return Number(stdout.split('\t')[0]);
}

/** Make the repository in `dir` (created). Text files are 200 B – 4 KiB. */
export async function makeBenchRepo(dir: string, shape: RepoShape): Promise<BenchRepo> {
  await fs.mkdir(dir, { recursive: true });
  await git(dir, 'init', '-q', '-b', 'main');
  const textFiles: string[] = [];
  const binFiles: string[] = [];
  for (let d = 0; d < shape.dirs; d++)
    await fs.mkdir(path.join(dir, `pkg${d}`, 'src'), { recursive: true });
  const textCount = shape.files - shape.binaries;
  for (let i = 0; i < textCount; i++) {
    const rel = `pkg${i % shape.dirs}/src/mod${i}.ts`;
    await fs.writeFile(path.join(dir, rel), text(200 + ((i * 7919) % 3900), i));
    textFiles.push(rel);
  }
  for (let i = 0; i < shape.binaries; i++) {
    const rel = `pkg${(i * 7) % shape.dirs}/blob${i}.bin`;
    await fs.writeFile(path.join(dir, rel), randomBytes(((i % 4) + 1) * MiB));
    binFiles.push(rel);
  }
  await fs.writeFile(path.join(dir, '.gitignore'), '*.log\nnode_modules/\n');
  // Commit 1: the first 60 % of the text and half the binaries; commit 2: the rest.
  const first = [
    ...textFiles.slice(0, Math.floor(textCount * 0.6)),
    ...binFiles.slice(0, shape.binaries >> 1),
  ];
  for (let i = 0; i < first.length; i += 500)
    await git(dir, 'add', '--', ...first.slice(i, i + 500));
  await git(dir, 'add', '.gitignore');
  await git(dir, 'commit', '-q', '-m', 'first half');
  await git(dir, 'add', '-A');
  await git(dir, 'commit', '-q', '-m', 'second half');
  // Commit 3: edit every 20th text file, replace one binary.
  for (let i = 0; i < textFiles.length; i += 20)
    await fs.appendFile(path.join(dir, textFiles[i]!), text(300, -i));
  if (binFiles[0]) await fs.writeFile(path.join(dir, binFiles[0]), randomBytes(MiB));
  await git(dir, 'commit', '-q', '-a', '-m', 'edits');
  // Packed, as a clone is (a repository never gc'd keeps loose objects: see bench/README.md).
  await git(dir, 'repack', '-a', '-d', '-q');
  const head = (await git(dir, 'rev-parse', 'HEAD')).trim();
  const total = await du(dir);
  const gitBytes = await du(path.join(dir, '.git'));
  return {
    dir,
    files: shape.files + 1, // and .gitignore
    treeBytes: total - gitBytes,
    gitBytes,
    head,
    branch: 'main',
    commits: 3,
    textFiles,
  };
}
