// The P14 report (bench/p14-workspace.ts): the samples of one image, their medians and
// ratios as JSON, then the tables and where a prepare's time goes.
import type { BenchRepo } from './git-repo.js';
import { median, round, table } from './measure.js';
import type { Profile } from './workspace-profile.js';

/** The goal: prepare ≤ GOAL × raw. */
export const GOAL = 1.2;
/** A raw run whose CLI outlived its guest command by more than this had the exit stall. */
const STALL_MS = 5000;

export interface ExportSamples {
  export_ms: number[];
  raw_ms: number[];
  patch_bytes: number;
  patches_identical: boolean;
}

export interface ImageResult {
  image: string;
  skipped?: string;
  git?: boolean;
  prepare_ms: number[];
  prepare_server_ms: number[];
  raw_ms: number[];
  /** Spawn → the guest's "done" line on the CLI's stdout (the raw path without its exit). */
  raw_done_ms: number[];
  export?: ExportSamples | { skipped: string };
  profile?: Profile;
}

const med = (v: readonly number[]): number => round(median(v), 0);
const ratio = (a: readonly number[], b: readonly number[]): number =>
  round(median(a) / median(b), 3);
const pairs = (a: readonly number[], b: readonly number[]): number[] =>
  a.slice(0, b.length).map((x, i) => round(x / b[i]!, 3));

function summary(r: ImageResult) {
  if (r.skipped) return { skipped: r.skipped };
  const whole = ratio(r.prepare_ms, r.raw_ms);
  const done = ratio(r.prepare_ms, r.raw_done_ms);
  const e = r.export && 'export_ms' in r.export ? r.export : undefined;
  return {
    git: r.git,
    median_ms: {
      prepare: med(r.prepare_ms),
      prepare_server: med(r.prepare_server_ms),
      raw: med(r.raw_ms),
      raw_done: med(r.raw_done_ms),
    },
    ratio_prepare_raw: whole,
    ratio_prepare_raw_done: done,
    pair_ratios: pairs(r.prepare_ms, r.raw_ms),
    pair_ratios_done: pairs(r.prepare_ms, r.raw_done_ms),
    raw_exit_stalls: r.raw_ms.filter((t, i) => t - r.raw_done_ms[i]! > STALL_MS).length,
    goal_met: whole <= GOAL,
    goal_met_vs_raw_done: done <= GOAL,
    export: e
      ? {
          median_ms: { export: med(e.export_ms), raw_git_diff: med(e.raw_ms) },
          ratio_export_raw: ratio(e.export_ms, e.raw_ms),
          pair_ratios: pairs(e.export_ms, e.raw_ms),
          patch_bytes: e.patch_bytes,
          patches_identical: e.patches_identical,
        }
      : r.export,
    profile: r.profile,
  };
}

/** The JSON object, then the tables. */
export function report(
  runs: number,
  repo: BenchRepo,
  rawTarBytes: number,
  images: Record<'busybox' | 'debian', ImageResult>,
  golden: { ms: number; image: string } | { skipped: string },
  host: Record<string, unknown>,
  setup: { changed: number; dirs: number; memoryOverheadMiB: number; done: string },
): void {
  const { profile: _b, ...busyboxRaw } = images.busybox;
  const { profile: _d, ...debianRaw } = images.debian;
  const result = {
    id: 'P14',
    what: `vessel workspace prepare of a git repository (${repo.files} files, ${round(repo.treeBytes / 1e6)} MB, ${repo.commits} commits, packed) vs tar | vessel exec -i tar -x of the same directory (files and .git), same VM, same run; vessel workspace export after ${setup.changed} guest edits vs git diff over vessel exec`,
    runs,
    repo: {
      files: repo.files,
      dirs: setup.dirs,
      tree_bytes: repo.treeBytes,
      git_dir_bytes: repo.gitBytes,
      commits: repo.commits,
      raw_tar_bytes: rawTarBytes,
      prepare_tar_bytes: images.busybox.profile?.pack_bytes ?? null,
    },
    goal: `prepare <= ${GOAL} × raw`,
    busybox: summary(images.busybox),
    debian_bookworm: summary(images.debian),
    golden_image_build: golden,
    host,
    raw_ms: { busybox: busyboxRaw, debian: debianRaw },
    notes: [
      `the daemon runs with confinement.memory_overhead_mib = ${setup.memoryOverheadMiB} (default 384): with the default, QEMU's TCG code buffer (up to 1 GiB) gets the debian VM OOM-killed by its cgroup during the timed prepares`,
      'every timed run is a whole CLI process (node start included), spawn() to exit; A B / B A alternating; a fresh guest directory per run, removed (and synced) after each pair; untimed warm-up of each side first',
      '(a) vessel --json workspace prepare NAME REPO --path /w-N: git ls-files, a git bundle of HEAD/branches/tags, the tar over POST /instances/{id}/workspace (COPY_IN), then the guest set-up script (git fetch of the bundle, reset, the prepared-state commit; without git: the bundle removed)',
      `(b) tar -C REPO -cf - . | vessel exec -i NAME sh -c 'mkdir -p /w-raw-N && tar -x -C /w-raw-N && echo ${setup.done}': GNU tar on the host, the image's tar in the guest, the exec stdin window; the same files plus .git. raw_done: spawn until the guest's ${setup.done} line reached the CLI's stdout. A run whose CLI exits more than ${STALL_MS / 1000} s after that hit the exec-stream close stall (bench/README.md, P14): ratio_prepare_raw_done leaves it out`,
      '(c) vessel workspace export NAME --path /w-warm -o FILE vs (d) vessel exec NAME git -c safe.directory=* -C /w-warm diff --binary --full-index HEAD > FILE: only tracked files changed, so both give the same patch (checked: patches_identical)',
      'profile (untimed, in-process client, lib/workspace-profile.ts): pack = packWorkspace() into a file; live/prepacked = a prepare with a meter on its body, packing as it goes / from that file; transport_only = that file to one guest file (PUT /files); guest_untar = tar -xf of it in the guest; *_git_calls = every git call of the guest scripts, timed by a wrapper on the guest PATH; add_all = read-tree + add -A into a fresh vs a seeded temporary index',
    ],
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);
  printTables(images);
}

function printTables(images: Record<string, ImageResult>): void {
  const rows: string[][] = [['P14', 'median ms', 'raw ms', 'ratio', 'pairs', 'goal']];
  for (const [label, r] of Object.entries(images)) {
    if (r.skipped) {
      rows.push([`${label}: skipped`, r.skipped.slice(0, 60)]);
      continue;
    }
    const s = summary(r);
    if ('skipped' in s) continue;
    rows.push(
      [
        `${label}: workspace prepare${r.git ? ' (git)' : ' (plain copy)'}`,
        String(s.median_ms.prepare),
        String(s.median_ms.raw),
        String(s.ratio_prepare_raw),
        s.pair_ratios.join(' '),
        `≤ ${GOAL}: ${s.goal_met ? 'met' : 'MISSED'}`,
      ],
      [
        `${label}:   vs raw to its done line`,
        '',
        String(s.median_ms.raw_done),
        String(s.ratio_prepare_raw_done),
        s.pair_ratios_done.join(' '),
        `≤ ${GOAL}: ${s.goal_met_vs_raw_done ? 'met' : 'MISSED'} (${s.raw_exit_stalls} stalls)`,
      ],
    );
    if (s.export && 'ratio_export_raw' in s.export)
      rows.push([
        `${label}: workspace export`,
        String(s.export.median_ms.export),
        String(s.export.median_ms.raw_git_diff),
        String(s.export.ratio_export_raw),
        s.export.pair_ratios.join(' '),
        s.export.patches_identical ? 'same patch' : 'PATCHES DIFFER',
      ]);
  }
  process.stdout.write(table(rows));
  for (const [label, r] of Object.entries(images)) {
    const p = r.profile;
    if (!p) continue;
    const split = (s: Profile['live']): string =>
      `${s.total_ms} (first byte ${s.to_first_byte_ms}, body ${s.body_ms}, after ${s.after_body_ms})`;
    process.stdout.write(
      `\n${label}: where a prepare goes (ms): pack alone ${p.pack_ms} (bundle ${p.bundle_ms}); ` +
        `prepare live ${split(p.live)}; from a packed file ${split(p.prepacked)}; ` +
        `the ${round(p.pack_bytes / 1e6)} MB as one guest file ${p.transport_only_ms}, ` +
        `untarred in the guest ${p.guest_untar_ms}\n`,
    );
    const calls = (title: string, list: [number, string][] | undefined): void => {
      if (!list) return;
      process.stdout.write(`${title}\n`);
      process.stdout.write(
        table(list.map(([ms, cmd]) => [String(ms).padStart(7), cmd.slice(0, 90)])),
      );
    };
    calls('  git calls of the set-up script (ms):', p.prepare_git_calls);
    calls(`  git calls of one export (${p.export_ms} ms in all):`, p.export_git_calls);
    if (p.add_all) process.stdout.write(`  read-tree + add -A: ${JSON.stringify(p.add_all)}\n`);
  }
}
