/** Reads an instance's app log file (framed stdout/stderr, core/stdio-stream.ts) for assertions. */
import { readFileSync } from 'node:fs';
import { StdioDecoder, StdioKind } from '../../src/core/stdio-stream.js';

export function appLogBytes(file: string): { stdout: Buffer; stderr: Buffer } {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch {
    return { stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) };
  }
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const decoder = new StdioDecoder();
  for (const f of decoder.push(raw)) (f.kind === StdioKind.stderr ? err : out).push(f.payload);
  if (decoder.pending > 0) throw new Error(`${file}: the app log ends inside a frame`);
  return { stdout: Buffer.concat(out), stderr: Buffer.concat(err) };
}

export function appLog(file: string): { stdout: string; stderr: string } {
  const b = appLogBytes(file);
  return { stdout: b.stdout.toString('utf8'), stderr: b.stderr.toString('utf8') };
}
