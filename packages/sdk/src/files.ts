import { PassThrough, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { VesselError } from '../../../src/core/errors.js';
import type { CommandResult, Commands, StdinSource } from './commands.js';

/**
 * Interim file access through exec, until the daemon has a files API: each operation is one
 * `/bin/sh` script run over the exec WebSocket, which carries raw bytes both ways, so contents
 * arrive byte for byte. The script reports what went wrong by exit code (never by parsing a
 * message). Needs `/bin/sh` and `cat` in the image.
 */
const NOT_FOUND = 3;
const WRONG_TYPE = 4;

const READ = `[ -e "$1" ] || exit ${NOT_FOUND}; [ -d "$1" ] && exit ${WRONG_TYPE}; exec cat < "$1"`;
const WRITE = `d=\${1%/*}; if [ -n "$d" ] && [ "$d" != "$1" ]; then mkdir -p -- "$d" || exit 1; fi; [ -d "$1" ] && exit ${WRONG_TYPE}; exec cat > "$1"`;
const LIST = [
  `[ -e "$1" ] || exit ${NOT_FOUND}`,
  `[ -d "$1" ] || exit ${WRONG_TYPE}`,
  'cd -- "$1" || exit 1',
  'for f in * .*; do',
  '  case $f in .|..) continue;; esac',
  '  if [ -L "$f" ]; then t=symlink; elif [ -d "$f" ]; then t=dir; elif [ -f "$f" ]; then t=file;',
  '  elif [ -e "$f" ]; then t=other; else continue; fi',
  '  printf \'%s\\0%s\\0\' "$t" "$f"',
  'done',
].join('\n');

/** One directory entry from {@link Files.list}. */
export interface EntryInfo {
  readonly name: string;
  /** `dir + '/' + name`. */
  readonly path: string;
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
}

export interface ReadOptions<F extends 'text' | 'bytes' | 'stream'> {
  /** `text` (UTF-8, default), `bytes` (a Buffer, byte exact) or `stream` (a Readable). */
  readonly format?: F;
}

/** `sandbox.files`: read, write and list files in the sandbox. */
export class Files {
  /** @internal */
  constructor(
    private readonly commands: Commands,
    private readonly name: () => string,
  ) {}

  /** Write `data` to `path`, creating missing parent directories; replaces an existing file. */
  async write(path: string, data: StdinSource): Promise<{ path: string }> {
    await this.script('write', WRITE, path, { stdin: data });
    return { path };
  }

  /** Read `path`: as text by default; `{format: 'bytes'}` for the exact bytes. */
  read(path: string, options?: ReadOptions<'text'>): Promise<string>;
  read(path: string, options: ReadOptions<'bytes'>): Promise<Buffer>;
  read(path: string, options: ReadOptions<'stream'>): Promise<Readable>;
  async read(
    path: string,
    options: ReadOptions<'text' | 'bytes' | 'stream'> = {},
  ): Promise<string | Buffer | Readable> {
    const format = options.format ?? 'text';
    if (format === 'stream') {
      const handle = await this.commands.start(['/bin/sh', '-c', READ, 'sh', path]);
      // The stream ends only after a clean exit: a failed read must not look like an empty file.
      const out = new PassThrough();
      handle.stderr.resume();
      handle.stdout.pipe(out, { end: false });
      handle.wait().then(
        async (exit) => {
          if (exit.exitCode !== 0) {
            out.destroy(this.failure('read', path, exit.exitCode, ''));
            return;
          }
          await finished(handle.stdout).catch(() => undefined);
          out.end();
        },
        (err: unknown) => out.destroy(err as Error),
      );
      return out;
    }
    const r = await this.script('read', READ, path);
    return format === 'bytes' ? r.stdoutBytes : r.stdout;
  }

  /** The entries of directory `path` (not recursive; `.` and `..` left out). */
  async list(path: string): Promise<EntryInfo[]> {
    const r = await this.script('list', LIST, path);
    const fields = r.stdout.split('\0');
    const out: EntryInfo[] = [];
    const dir = path.endsWith('/') ? path.slice(0, -1) : path;
    for (let i = 0; i + 1 < fields.length; i += 2) {
      const name = fields[i + 1] ?? '';
      out.push({ name, path: `${dir}/${name}`, type: fields[i] as EntryInfo['type'] });
    }
    return out;
  }

  private async script(
    op: 'read' | 'write' | 'list',
    script: string,
    path: string,
    options: { stdin?: StdinSource } = {},
  ): Promise<CommandResult> {
    if (path === '')
      throw new VesselError('invalid_argument', `files.${op}: the path must not be empty`);
    const r = await this.commands.run(['/bin/sh', '-c', script, 'sh', path], options);
    if (r.exitCode !== 0) throw this.failure(op, path, r.exitCode, r.stderr);
    return r;
  }

  private failure(op: string, path: string, exitCode: number, stderr: string): VesselError {
    const where = `"${path}" in sandbox "${this.name()}"`;
    const details = { path, exit_code: exitCode };
    if (exitCode === NOT_FOUND)
      return new VesselError('not_found', `files.${op}: ${where} does not exist`, { details });
    if (exitCode === WRONG_TYPE) {
      const what = op === 'list' ? 'is not a directory' : 'is a directory';
      return new VesselError('invalid_argument', `files.${op}: ${where} ${what}`, { details });
    }
    const why = stderr.trim() || `exit code ${exitCode}`;
    return new VesselError('internal', `files.${op}: ${where} failed: ${why}`, { details });
  }
}
