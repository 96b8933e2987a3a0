/**
 * Reading an instance's logs: what is on disk (all of it or the last lines),
 * then, when following, what is appended until the instance stops.
 *
 * The file is the buffer. A follower reads from its own offset at its own
 * pace, so a slow client costs disk reads, not daemon memory, and the guest
 * is never held back by a reader. Appends are synchronous and published
 * after the write; a published event only wakes the follower.
 */
import fs from 'node:fs/promises';
import { errnoCode } from '../core/errors.js';
import { STDIO_HEADER, StdioDecoder, StdioKind } from '../core/stdio-stream.js';
import type { InstanceCore } from './core.js';
import { rotatedPath, rotationGeneration } from './log-rotate.js';
import { APP_LOG, CONSOLE_LOG } from './runtime.js';
import type { InstanceState } from './state.js';

/** app: the main command's stdout/stderr; console: serial console text; vmm; daemon. */
export type LogSource = 'app' | 'console' | 'vmm' | 'daemon';

export interface LogChunk {
  /** `text` for the console, vmm and daemon logs. */
  readonly stream: 'stdout' | 'stderr' | 'text';
  readonly data: Buffer;
}

export interface ReadLogOptions {
  readonly follow?: boolean;
  /** Only the last N lines of what exists (stdout and stderr lines together). */
  readonly tail?: number;
  /** Ends the read early (client gone). */
  readonly signal?: AbortSignal;
}

const FILES: Record<LogSource, string> = {
  app: APP_LOG,
  console: CONSOLE_LOG,
  vmm: 'vmm.log',
  daemon: 'daemon.log',
};

const READ_SIZE = 256 * 1024;
const ACTIVE: ReadonlySet<InstanceState> = new Set([
  'Created',
  'Initializing',
  'Running',
  'Paused',
  'Shutdown',
  'Standby',
  'Unknown',
]);

export function logFile(core: InstanceCore, id: string, source: LogSource): string {
  return core.o.paths.instanceFile(id, FILES[source]);
}

/** The log's chunks, in order; with `follow`, until the instance is Stopped or deleted. */
export async function* readLog(
  core: InstanceCore,
  id: string,
  source: LogSource,
  options: ReadLogOptions = {},
): AsyncGenerator<LogChunk> {
  const framed = source === 'app';
  const file = logFile(core, id, source);
  let wake: (() => void) | undefined;
  let ended = !options.follow;
  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const unsubscribe = options.follow
    ? core.topic.subscribe((e) => {
        if (e.id !== id) return;
        if (e.type === 'deleted') ended = true;
        else if (e.type === 'state' && !ACTIVE.has(e.instance.state)) ended = true;
        notify();
      })
    : () => undefined;
  options.signal?.addEventListener('abort', notify, { once: true });
  // Checked after subscribing: a stop published before this line is seen here.
  const row = core.repo.get(id);
  if (!row || !ACTIVE.has(row.state as InstanceState)) ended = true;
  try {
    let at = await startOf(file, framed, options.tail);
    const decoder = new StdioDecoder();
    let skip = at.skip;
    let gen = rotationGeneration(file);
    for (;;) {
      if (options.signal?.aborted) return;
      // Read before looking at `ended`: bytes appended before the stop are in the file.
      const stop = ended;
      const chunk = await readAt(at.path, at.pos);
      const now = rotationGeneration(file);
      if (now !== gen) {
        // Rotated under us: the bytes just read may be either side of the cut. The old
        // file's offsets live on in `.1`; after more than one rotation that part is gone.
        at =
          now === gen + 1 && at.path === file
            ? { ...at, path: rotatedPath(file) }
            : { path: rotatedPath(file), pos: 0, skip: 0 };
        gen = now;
        continue;
      }
      if (chunk.length > 0) {
        at.pos += chunk.length;
        if (!framed) {
          yield { stream: 'text', data: chunk };
          continue;
        }
        for (const f of decoder.push(chunk)) {
          let data = f.payload;
          if (skip > 0) {
            data = data.subarray(skip);
            skip = 0;
          }
          if (data.length === 0) continue;
          if (f.kind === StdioKind.stdout) yield { stream: 'stdout', data };
          else if (f.kind === StdioKind.stderr) yield { stream: 'stderr', data };
        }
        continue;
      }
      if (at.path !== file) {
        at = { path: file, pos: 0, skip: 0 }; // the rotated part is done: on to the live file
        continue;
      }
      if (stop) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
        if (ended || options.signal?.aborted) notify();
      });
    }
  } finally {
    unsubscribe();
    options.signal?.removeEventListener('abort', notify);
  }
}

interface Cursor {
  path: string;
  pos: number;
  /** Payload bytes of the first frame to skip (framed tail). */
  skip: number;
}

/**
 * Where a read starts: the rotated part first (all of it, or as much of the last `tail`
 * lines as the live file does not hold), else the live file.
 */
async function startOf(file: string, framed: boolean, tail: number | undefined): Promise<Cursor> {
  const prev = rotatedPath(file);
  if (tail === undefined) return { path: prev, pos: 0, skip: 0 };
  const tailOf = framed ? framedTailOffset : textTailOffset;
  const live = await tailOf(file, tail);
  if (live.found >= tail) return { path: file, pos: live.at, skip: live.skip };
  const old = await tailOf(prev, tail - live.found);
  if (old.found === 0) return { path: file, pos: live.at, skip: live.skip };
  return { path: prev, pos: old.at, skip: old.skip };
}

async function readAt(file: string, pos: number): Promise<Buffer> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return Buffer.alloc(0);
    throw err;
  }
  try {
    const buf = Buffer.allocUnsafe(READ_SIZE);
    const { bytesRead } = await fh.read(buf, 0, READ_SIZE, pos);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Where a tail starts, and how many of the asked-for lines the file holds. */
interface TailStart {
  readonly at: number;
  readonly skip: number;
  readonly found: number;
}

/** Where the last `n` lines of a text log start (scanning back from the end). */
async function textTailOffset(file: string, n: number): Promise<TailStart> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { at: 0, skip: 0, found: 0 };
    throw err;
  }
  try {
    const size = (await fh.stat()).size;
    if (n === 0) return { at: size, skip: 0, found: 0 };
    // A final newline ends the last line; it does not start another.
    let newlines = 0;
    let end = size;
    const buf = Buffer.allocUnsafe(64 * 1024);
    let first = true;
    while (end > 0) {
      const start = Math.max(0, end - buf.length);
      const { bytesRead } = await fh.read(buf, 0, end - start, start);
      for (let i = bytesRead - 1; i >= 0; i--) {
        if (buf[i] !== 0x0a) continue;
        if (first && start + i === size - 1) continue;
        if (++newlines >= n) return { at: start + i + 1, skip: 0, found: n };
      }
      first = false;
      end = start;
    }
    return { at: 0, skip: 0, found: size > 0 ? newlines + 1 : 0 };
  } finally {
    await fh.close();
  }
}

/**
 * Where the last `n` lines of the framed app log start: the offset of a
 * frame and how many payload bytes of it to skip. One forward pass that
 * remembers the last n+1 line starts, so memory does not grow with the file.
 */
async function framedTailOffset(file: string, n: number): Promise<TailStart> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, 'r');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { at: 0, skip: 0, found: 0 };
    throw err;
  }
  try {
    const size = (await fh.stat()).size;
    const starts: Array<{ at: number; skip: number }> = [{ at: 0, skip: 0 }];
    const head = Buffer.alloc(STDIO_HEADER);
    let pos = 0;
    let lastByteNewline = false;
    while (pos + STDIO_HEADER <= size) {
      await fh.read(head, 0, STDIO_HEADER, pos);
      const len = head.readUInt32BE(4);
      if (pos + STDIO_HEADER + len > size) break;
      const payload = Buffer.allocUnsafe(len);
      await fh.read(payload, 0, len, pos + STDIO_HEADER);
      for (let i = payload.indexOf(0x0a); i !== -1; i = payload.indexOf(0x0a, i + 1)) {
        starts.push(
          i + 1 < len ? { at: pos, skip: i + 1 } : { at: pos + STDIO_HEADER + len, skip: 0 },
        );
        if (starts.length > n + 2) starts.shift();
      }
      if (len > 0) lastByteNewline = payload[len - 1] === 0x0a;
      pos += STDIO_HEADER + len;
    }
    // A final newline ends the last line rather than starting an empty one.
    if (lastByteNewline) starts.pop();
    if (n === 0) return { at: pos, skip: 0, found: 0 };
    if (starts.length > n) return { ...starts[starts.length - n]!, found: n };
    return { at: 0, skip: 0, found: pos > 0 ? starts.length : 0 };
  } finally {
    await fh.close();
  }
}
