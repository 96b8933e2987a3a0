/**
 * The Linux links of the bridge network, driven through `ip` and `bridge` (iproute2) with
 * argument arrays, and nft scripts loaded the same way. Every function takes the command runner, so tests can run them inside
 * a network namespace they own.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, type RunResult } from '../core/process.js';

/** Runs a program (argument array); the daemon's is `run`, tests wrap `ip netns exec`. */
export type Runner = (
  file: string,
  args: readonly string[],
  options?: { allowFailure?: boolean },
) => Promise<RunResult>;

export const hostRunner: Runner = (file, args, options = {}) =>
  run(file, args, { timeoutMs: 30_000, ...(options.allowFailure ? { allowFailure: true } : {}) });

/** A link as `ip -j link show` reports it (the fields used here). */
export interface LinkInfo {
  readonly ifname: string;
  readonly master?: string;
  readonly operstate?: string;
  readonly flags?: readonly string[];
}

export async function listLinks(exec: Runner): Promise<LinkInfo[]> {
  const r = await exec('ip', ['-j', 'link', 'show']);
  return JSON.parse(r.stdout || '[]') as LinkInfo[];
}

export async function linkExists(exec: Runner, name: string): Promise<LinkInfo | undefined> {
  const r = await exec('ip', ['-j', 'link', 'show', 'dev', name], { allowFailure: true });
  if (r.code !== 0) return undefined;
  return (JSON.parse(r.stdout || '[]') as LinkInfo[])[0];
}

/** Create the bridge (or keep it), give it the gateway address, bring it up. Idempotent. */
export async function ensureBridge(
  exec: Runner,
  name: string,
  gateway: string,
  prefix: number,
): Promise<void> {
  if (!(await linkExists(exec, name))) {
    await exec('ip', ['link', 'add', 'name', name, 'type', 'bridge']);
  }
  await exec('ip', ['addr', 'replace', `${gateway}/${prefix}`, 'dev', name]);
  await exec('ip', ['link', 'set', 'dev', name, 'up']);
}

export async function deleteLink(exec: Runner, name: string): Promise<void> {
  await exec('ip', ['link', 'del', 'dev', name], { allowFailure: true });
}

/** A persistent TAP, enslaved to `bridge`, isolated, and down. */
export async function createTap(exec: Runner, name: string, bridge: string): Promise<void> {
  await exec('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap']);
  try {
    await exec('ip', ['link', 'set', 'dev', name, 'master', bridge]);
    await setIsolated(exec, name, true);
  } catch (err) {
    await deleteLink(exec, name);
    throw err;
  }
}

/**
 * Bridge port isolation: isolated ports cannot forward to each other (the kernel's
 * guarantee, independent of the firewall); members of a network group are not isolated.
 */
export async function setIsolated(exec: Runner, name: string, on: boolean): Promise<void> {
  await exec('bridge', ['link', 'set', 'dev', name, 'isolated', on ? 'on' : 'off']);
}

/** Rename a (down) link. */
export async function renameLink(exec: Runner, from: string, to: string): Promise<void> {
  await exec('ip', ['link', 'set', 'dev', from, 'name', to]);
}

export async function setLink(
  exec: Runner,
  name: string,
  state: 'up' | 'down',
  master?: string,
): Promise<void> {
  await exec('ip', [
    'link',
    'set',
    'dev',
    name,
    ...(master === undefined ? [] : ['master', master]),
    state,
  ]);
}

/** Run an `nft -f` script (one transaction) through `exec`, in its namespace; '' is a no-op. */
export async function loadNft(exec: Runner, script: string): Promise<void> {
  if (script === '') return;
  const file = path.join(os.tmpdir(), `vessel-nft-${randomBytes(6).toString('hex')}.nft`);
  await fs.writeFile(file, script, { mode: 0o600 });
  try {
    await exec('nft', ['-f', file]);
  } finally {
    await fs.rm(file, { force: true });
  }
}
