import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { errorMessage } from '../core/errors.js';
import { run } from '../core/process.js';
import {
  parseErofsCompressors,
  parseMachineHelp,
  parseQemuVersion,
  parseToolVersion,
  type ToolVersion,
} from './parse.js';

const TOOL_TIMEOUT_MS = 10_000;
/** mkfs.* live in sbin, which a non-root PATH often lacks. */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** Absolute path of an executable on PATH (plus the sbin directories), or null. */
export async function findExecutable(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<string | null> {
  const dirs = [...(env.PATH ?? '').split(path.delimiter), ...EXTRA_DIRS].filter((d) => d !== '');
  for (const dir of new Set(dirs)) {
    const candidate = path.join(dir, name);
    try {
      const st = await fs.stat(candidate);
      if (!st.isFile()) continue;
      await fs.access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return null;
}

/** What running a tool taught us. `error` is set when it exists but would not run. */
interface ToolBase {
  readonly path: string | null;
  readonly error?: string;
}

export interface QemuInfo extends ToolBase {
  readonly version: ToolVersion | null;
  readonly machines: readonly string[];
}

export interface ErofsInfo extends ToolBase {
  readonly compressors: readonly string[];
}

export interface VersionedTool extends ToolBase {
  readonly version: ToolVersion | null;
}

async function output(file: string, args: readonly string[]): Promise<string> {
  const res = await run(file, args, { timeoutMs: TOOL_TIMEOUT_MS, allowFailure: true });
  return `${res.stdout}\n${res.stderr}`;
}

export async function inspectQemu(): Promise<QemuInfo> {
  const file = await findExecutable('qemu-system-x86_64');
  if (file === null) return { path: null, version: null, machines: [] };
  try {
    const [versionOut, machineOut] = await Promise.all([
      output(file, ['--version']),
      output(file, ['-machine', 'help']),
    ]);
    return {
      path: file,
      version: parseQemuVersion(versionOut),
      machines: parseMachineHelp(machineOut),
    };
  } catch (err) {
    return { path: file, version: null, machines: [], error: errorMessage(err) };
  }
}

export async function inspectErofs(): Promise<ErofsInfo> {
  const file = await findExecutable('mkfs.erofs');
  if (file === null) return { path: null, compressors: [] };
  try {
    // erofs-utils 1.5 lists compressors in --help (on stderr); newer ones in --version.
    let compressors = parseErofsCompressors(await output(file, ['--help']));
    if (compressors.length === 0)
      compressors = parseErofsCompressors(await output(file, ['--version']));
    return { path: file, compressors };
  } catch (err) {
    return { path: file, compressors: [], error: errorMessage(err) };
  }
}

/** A tool whose `versionArgs` output holds a `vX.Y[.Z]` token. */
export async function inspectVersioned(
  name: string,
  versionArgs: readonly string[],
): Promise<VersionedTool> {
  const file = await findExecutable(name);
  if (file === null) return { path: null, version: null };
  try {
    return { path: file, version: parseToolVersion(await output(file, versionArgs)) };
  } catch (err) {
    return { path: file, version: null, error: errorMessage(err) };
  }
}
