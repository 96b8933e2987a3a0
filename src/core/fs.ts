import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

/** Write a file atomically: temp file in the same directory, fsync, rename. */
export async function writeFileAtomic(
  file: string,
  data: string | Uint8Array,
  mode = 0o644,
): Promise<void> {
  const tmp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`,
  );
  const fh = await fs.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
}

export async function ensureDir(dir: string, mode = 0o755): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode });
}

export async function removeAll(target: string): Promise<void> {
  await fs.rm(target, { recursive: true, force: true, maxRetries: 2 });
}

export async function pathExists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** A short random suffix for staging names. */
export function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}

/** Total bytes allocated by a directory tree (like `du -sb` of apparent sizes). */
export async function treeSize(root: string): Promise<number> {
  let total = 0;
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const entries = await fs.readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      const p = path.join(dir, e.name);
      const st = await fs.lstat(p);
      total += st.size;
      if (e.isDirectory()) stack.push(p);
    }
  }
  return total;
}
