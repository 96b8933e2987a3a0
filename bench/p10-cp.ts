// P10 (issue 10): `vessel cp` of a 256 MiB directory tree into a VM and back out, against
// the same tree through the exec path (`tar c | vessel exec -i NAME tar x`, and back) and
// against `scp -r -p` over ssh (dropbear in the guest, OpenSSH's scp on both ends, dbclient
// as its transport) to the same VM, in the same run. Goal: cp ≤ 0.5× scp.
//
//   npm run bench:p10                   # builds, then 3 runs of each
//   node dist/bench/p10-cp.js --runs 1
//
// The VM gets an address for ssh, so everything runs in a network namespace the bench
// creates and deletes (`runInNetns`, lib/ssh-guest.ts). Prints a JSON object, then a table.
// Exits 0 even when the goal is missed.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { MAIN_JS, startDaemon } from '../test/helpers/vm-daemon.js';
import {
  cpuTimes,
  median,
  parseRuns,
  round,
  stealPct,
  table,
  timedProcess,
} from './lib/measure.js';
import { needTool, runInNetns, startSshGuest, type SshGuest } from './lib/ssh-guest.js';

const execFileAsync = promisify(execFile);
const GOAL_RATIO = 0.5;
const SSH_HOST_PORT = 2223;
const INNER_ENV = 'VESSEL_P10_DATA_DIR';
const USAGE =
  'usage: node dist/bench/p10-cp.js [--runs N]   (N copies each way per method, default 3)';
const MiB = 1024 * 1024;
/** The tree: 60 files of 4 MiB and 4096 of 4 KiB in 16 directories = 256 MiB. */
const BIG_FILES = 60;
const SMALL_FILES = 4096;
const TREE_BYTES = BIG_FILES * 4 * MiB + SMALL_FILES * 4096;

type Method = 'cp' | 'exec' | 'scp';

async function makeTree(root: string): Promise<void> {
  for (let d = 0; d < 16; d++) await fs.mkdir(path.join(root, `d${d}`), { recursive: true });
  for (let i = 0; i < BIG_FILES; i++)
    await fs.writeFile(path.join(root, `d${i % 16}`, `big-${i}.bin`), randomBytes(4 * MiB));
  for (let i = 0; i < SMALL_FILES; i++)
    await fs.writeFile(path.join(root, `d${i % 16}`, `small-${i}.bin`), randomBytes(4096));
}

async function treeBytes(root: string): Promise<number> {
  const { stdout } = await execFileAsync('du', ['-sb', '--apparent-size', root]);
  return Number(stdout.split('\t')[0]);
}

function sh(script: string, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return timedProcess('sh', ['-c', script], env);
}

const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** The inner run, inside the namespace. */
async function inner(dataDir: string): Promise<void> {
  const runs = parseRuns(process.argv.slice(2), 3, USAGE);
  const scpBin = await needTool('scp');
  const daemon = await startDaemon(dataDir);
  let guest: SshGuest | undefined;
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-p10-'));
  try {
    guest = await startSshGuest(daemon, {
      name: 'p10',
      hostPort: SSH_HOST_PORT,
      overlaySize: '4GB',
      // OpenSSH's scp is the guest's `scp -t` too (it needs only libc, which the layer has).
      extra: [
        { path: 'usr/bin', type: 'dir', mode: 0o755 },
        { path: 'usr/bin/scp', content: await fs.readFile(scpBin), mode: 0o755 },
      ],
    });
    const g = guest;
    const name = 'p10';
    const vessel = `${q(process.execPath)} ${q(MAIN_JS)} --data-dir ${q(dataDir)}`;
    // scp's -S program: drop OpenSSH-only options, then dbclient with the bench's key and port.
    const wrapper = path.join(work, 'scp-ssh');
    const dbArgs = g.dbclientArgs([]).slice(0, -1); // without root@127.0.0.1
    await fs.writeFile(
      wrapper,
      [
        '#!/bin/sh',
        'while [ $# -gt 0 ]; do',
        '  case "$1" in --) shift; break;; -o|-l|-p|-i|-F|-c) shift 2;; -*) shift;; *) break;; esac',
        'done',
        'shift # the host',
        `exec ${q(g.dbclient)} ${dbArgs.map(q).join(' ')} root@127.0.0.1 "$@"`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const guestSh = (cmd: string): Promise<number> =>
      sh(`${q(g.dbclient)} ${g.dbclientArgs([cmd]).map(q).join(' ')}`, g.env);

    const src = path.join(work, 'src', 'tree');
    await makeTree(src);
    const srcBytes = await treeBytes(src);

    const copyIn: Record<Method, (dst: string) => string> = {
      cp: (dst) => `${vessel} cp ${q(src)} ${name}:${dst}`,
      exec: (dst) =>
        `tar c -C ${q(path.dirname(src))} tree | ${vessel} exec -i ${name} tar x -C ${dst}`,
      scp: (dst) => `${q(scpBin)} -O -r -p -q -S ${q(wrapper)} ${q(src)} root@127.0.0.1:${dst}`,
    };
    const copyOut: Record<Method, (from: string, to: string) => string> = {
      cp: (from, to) => `${vessel} cp ${name}:${from}/tree ${q(to)}`,
      exec: (from, to) =>
        `mkdir -p ${q(to)} && ${vessel} exec ${name} tar c -C ${from} tree | tar x -C ${q(to)} --strip-components=1`,
      scp: (from, to) =>
        `${q(scpBin)} -O -r -p -q -S ${q(wrapper)} root@127.0.0.1:${from}/tree ${q(to)}`,
    };
    const methods: Method[] = ['cp', 'exec', 'scp'];
    const times: Record<Method, { in: number[]; out: number[] }> = {
      cp: { in: [], out: [] },
      exec: { in: [], out: [] },
      scp: { in: [], out: [] },
    };

    const cpu = await cpuTimes();
    for (let r = 0; r < runs; r++) {
      // Rotate which method goes first.
      const order = methods.map((_, i) => methods[(i + r) % methods.length]!);
      for (const m of order) {
        const dst = `/p10-${m}`;
        await guestSh(`rm -rf ${dst} && mkdir -p ${dst} && sync`);
        times[m].in.push(await sh(copyIn[m](dst), g.env));
        const out = path.join(work, `out-${m}`);
        await fs.rm(out, { recursive: true, force: true });
        times[m].out.push(await sh(copyOut[m](dst, out), g.env));
        const got = await treeBytes(out);
        if (got < srcBytes - 4096 * 20 || got > srcBytes + 4096 * 20)
          throw new Error(`${m}: copied back ${got} bytes of ${srcBytes}`);
        await fs.rm(out, { recursive: true, force: true });
        await guestSh(`rm -rf ${dst}`);
      }
    }
    const steal = await stealPct(cpu);
    const med = (m: Method, d: 'in' | 'out'): number => round(median(times[m][d]), 0);
    const mbps = (ms: number): number => round((TREE_BYTES / MiB / ms) * 1000, 1);
    const ratio = (m: Method, d: 'in' | 'out'): number => round(med(m, d) / med('scp', d), 3);
    const result = {
      id: 'P10',
      what: '256 MiB directory tree (60 × 4 MiB + 4096 × 4 KiB) into a VM and back: vessel cp vs tar through vessel exec vs scp -r -p (dropbear), same VM, same run',
      runs,
      median_ms: Object.fromEntries(
        methods.map((m) => [m, { in: med(m, 'in'), out: med(m, 'out') }]),
      ),
      mib_per_s: Object.fromEntries(
        methods.map((m) => [m, { in: mbps(med(m, 'in')), out: mbps(med(m, 'out')) }]),
      ),
      ratio_cp_scp: { in: ratio('cp', 'in'), out: ratio('cp', 'out') },
      ratio_exec_scp: { in: ratio('exec', 'in'), out: ratio('exec', 'out') },
      goal: `cp <= ${GOAL_RATIO} × scp`,
      goal_met: ratio('cp', 'in') <= GOAL_RATIO && ratio('cp', 'out') <= GOAL_RATIO,
      host: { cpus: os.cpus().length, accel: g.accel, steal_pct: steal },
      raw_ms: times,
      notes: [
        'each time is a whole CLI process (node start included for vessel cp and vessel exec)',
        'cp: vessel cp (tar over the daemon API, COPY_IN / COPY_OUT with 1 MiB flow-control windows)',
        'exec: host GNU tar | vessel exec -i tar x (busybox) in; vessel exec tar c | tar x out',
        'scp: OpenSSH scp -O -r -p both ends, dbclient as the transport, guest port 22 published on 127.0.0.1',
      ],
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);
    process.stdout.write(
      table([
        ['P10', 'in ms', 'in MiB/s', 'out ms', 'out MiB/s', 'in ÷ scp', 'out ÷ scp'],
        ...methods.map((m) => [
          m === 'cp' ? 'vessel cp' : m === 'exec' ? 'tar | vessel exec tar' : 'scp -r -p',
          String(med(m, 'in')),
          String(mbps(med(m, 'in'))),
          String(med(m, 'out')),
          String(mbps(med(m, 'out'))),
          String(ratio(m, 'in')),
          String(ratio(m, 'out')),
        ]),
        ['goal', '', '', '', '', `cp ≤ ${GOAL_RATIO}`, result.goal_met ? 'met' : 'MISSED'],
      ]),
    );
    await daemon.client.deleteInstance(g.instanceId);
  } finally {
    await daemon.stop();
    await guest?.cleanup();
    await fs.rm(work, { recursive: true, force: true });
  }
}

/** The outer run: the namespace, and this script again inside it (lib/ssh-guest.ts). */
async function outer(): Promise<void> {
  parseRuns(process.argv.slice(2), 3, USAGE);
  return runInNetns({
    script: import.meta.url,
    innerEnv: INNER_ENV,
    tools: ['dropbear', 'dbclient', 'dropbearkey', 'scp', 'qemu-system-x86_64'],
    prefix: 'vessel-p10-',
  });
}

const innerDir = process.env[INNER_ENV];
await (innerDir ? inner(innerDir) : outer()).catch((err: unknown) => {
  process.stderr.write(`p10-cp: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
