// P2 (PRODUCT.md §5): the round trip of `exec true` through Vessel (the daemon's
// non-interactive `POST /instances/{id}/exec`, through the typed client over the unix
// socket) against ssh into the same VM (dropbear in the guest, dbclient on the host, a
// published port), alternating, in the same run.
//
//   npm run bench:p2                    # builds, then 30 round trips of each
//   node dist/bench/p2-exec.js --runs 10
//
// The VM gets an address, so everything runs in a network namespace the bench creates
// (`vessel-test-<random>`, only `lo`) and deletes: this process seeds the kernel (apt, in
// the host namespace), creates the namespace and runs itself again inside it; that inner
// run starts the daemon, builds the image, measures and prints. Prints a JSON object
// first, then a table. Exits 0 even when the goal is missed.
import { execFile, spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { EntrySpec } from '../test/helpers/oci-builder.js';
import { busyboxImage, writeDockerArchive } from '../test/helpers/oci-builder.js';
import { createNetns, waitForState } from '../test/helpers/netns.js';
import { startDaemon } from '../test/helpers/vm-daemon.js';
import { seedKernel } from '../test/helpers/vm-daemon.js';
import { cpuTimes, parseRuns, round, stealPct, table } from './lib/measure.js';

const execFileAsync = promisify(execFile);

const GOAL_RATIO = 0.2;
const WARMUP = 3;
const SSH_HOST_PORT = 2222;
const INNER_ENV = 'VESSEL_P2_DATA_DIR';
const USAGE = 'usage: node dist/bench/p2-exec.js [--runs N]   (N round trips per side, default 30)';

interface Stats {
  readonly median_ms: number;
  readonly p90_ms: number;
  readonly min_ms: number;
  readonly max_ms: number;
}

/** Nearest-rank percentile. */
function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[
    Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  ]!;
}

function stats(values: readonly number[]): Stats {
  return {
    median_ms: round(percentile(values, 50), 2),
    p90_ms: round(percentile(values, 90), 2),
    min_ms: round(Math.min(...values), 2),
    max_ms: round(Math.max(...values), 2),
  };
}

async function need(tool: string): Promise<string> {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const p = path.join(dir, tool);
    try {
      await fs.access(p);
      return p;
    } catch {
      // next
    }
  }
  throw new Error(`${tool} is missing; install dropbear-bin (scripts/setup.sh does)`);
}

/** The shared libraries `ldd` lists for `binary` (absolute paths, loader included). */
async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await execFileAsync('ldd', [binary]);
  const libs = new Set<string>();
  for (const line of stdout.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) libs.add(m[1]);
  }
  return [...libs];
}

/** busybox + dropbear with its libraries, a host key, and `clientPub` authorized for root. */
async function sshImageLayer(
  dropbear: string,
  hostKey: Buffer,
  clientPub: string,
): Promise<EntrySpec[]> {
  const files: EntrySpec[] = [];
  const dirs = new Set<string>(['usr/sbin', 'etc/dropbear', 'root/.ssh']);
  for (const lib of await sharedLibraries(dropbear)) {
    const rel = lib.replace(/^\/+/, '');
    for (let d = path.dirname(rel); d !== '.'; d = path.dirname(d)) dirs.add(d);
    // Symlinks (libz.so.1 → libz.so.1.2.13, /lib64/ld-linux…) become plain files.
    files.push({ path: rel, content: await fs.readFile(lib), mode: 0o755 });
  }
  return [
    ...[...dirs].sort().map((d): EntrySpec => ({
      path: d,
      type: 'dir',
      mode: d.startsWith('root') ? 0o700 : 0o755,
    })),
    { path: 'usr/sbin/dropbear', content: await fs.readFile(dropbear), mode: 0o755 },
    { path: 'etc/dropbear/dropbear_ed25519_host_key', content: hostKey, mode: 0o600 },
    { path: 'root/.ssh/authorized_keys', content: `${clientPub}\n`, mode: 0o600 },
    { path: 'etc/shells', content: '/bin/sh\n' },
    ...files,
  ];
}

/** The outer run: kernel, namespace, the inner run inside it, cleanup. */
async function outer(): Promise<void> {
  parseRuns(process.argv.slice(2), 30, USAGE); // validate before any setup
  if (process.getuid?.() !== 0) throw new Error('P2 needs root (it creates a network namespace)');
  for (const t of ['dropbear', 'dbclient', 'dropbearkey', 'qemu-system-x86_64']) await need(t);
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-p2-'));
  const ns = await createNetns().catch(async (err: unknown) => {
    await fs.rm(dataDir, { recursive: true, force: true });
    throw err;
  });
  try {
    await seedKernel(dataDir);
    const self = fileURLToPath(import.meta.url);
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn(
        'ip',
        ['netns', 'exec', ns.name, process.execPath, self, ...process.argv.slice(2)],
        { stdio: 'inherit', env: { ...process.env, [INNER_ENV]: dataDir } },
      );
      child.once('error', reject);
      child.once('exit', (c, sig) => resolve(c ?? (sig ? 1 : 0)));
    });
    process.exitCode = code;
  } finally {
    await ns.destroy();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

/** The inner run, inside the namespace. */
async function inner(dataDir: string): Promise<void> {
  const runs = parseRuns(process.argv.slice(2), 30, USAGE);
  const [dropbear, dbclient, dropbearkey] = await Promise.all(
    ['dropbear', 'dbclient', 'dropbearkey'].map(need),
  );
  const keys = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-p2-keys-'));
  const daemon = await startDaemon(dataDir);
  try {
    // Fresh keys per run: a host key for the guest, a client key authorized for root.
    await execFileAsync(dropbearkey!, ['-t', 'ed25519', '-f', path.join(keys, 'host')]);
    await execFileAsync(dropbearkey!, ['-t', 'ed25519', '-f', path.join(keys, 'client')]);
    const pub = (await execFileAsync(dropbearkey!, ['-y', '-f', path.join(keys, 'client')])).stdout
      .split('\n')
      .find((l) => l.startsWith('ssh-'));
    if (!pub) throw new Error('dropbearkey -y printed no public key');

    const spec = await busyboxImage();
    spec.layers.push(
      await sshImageLayer(dropbear!, await fs.readFile(path.join(keys, 'host')), pub),
    );
    const archive = path.join(keys, 'image.tar');
    await writeDockerArchive(archive, spec, 'bench/ssh:p2');
    const imported = await daemon.client.importImage(createReadStream(archive));
    for (let i = 0; (await daemon.client.getImage(imported.name)).status !== 'ready'; i++) {
      if (i > 600) throw new Error('the bench image did not become ready');
      await new Promise((r) => setTimeout(r, 200));
    }
    const inst = await daemon.client.createInstance({
      image: imported.name,
      name: 'p2',
      cmd: [
        '/usr/sbin/dropbear',
        '-F',
        '-E',
        '-s',
        '-p',
        '22',
        '-r',
        '/etc/dropbear/dropbear_ed25519_host_key',
      ],
      ports: [{ host_port: SSH_HOST_PORT, guest_port: 22 }],
    });
    const running = await waitForState(daemon.client, inst.id, 'Running');

    // dbclient: key auth, no host-key check (fresh key each run), HOME in the temp dir so
    // nothing lands in the real ~/.ssh.
    const sshArgs = [
      '-y',
      '-y',
      '-i',
      path.join(keys, 'client'),
      '-p',
      String(SSH_HOST_PORT),
      'root@127.0.0.1',
      'true',
    ];
    const sshEnv = { ...process.env, HOME: keys };
    const ssh = (): Promise<number> =>
      new Promise((resolve, reject) => {
        const t0 = performance.now();
        const child = spawn(dbclient!, sshArgs, { stdio: 'ignore', env: sshEnv });
        child.once('error', reject);
        child.once('exit', (code) =>
          code === 0
            ? resolve(performance.now() - t0)
            : reject(new Error(`dbclient exited ${code}`)),
        );
      });
    const vessel = async (): Promise<number> => {
      const t0 = performance.now();
      const r = await daemon.client.execInstance(inst.id, { argv: ['true'] });
      const ms = performance.now() - t0;
      if (r.exit_code !== 0) throw new Error(`exec true exited ${r.exit_code}`);
      return ms;
    };
    // dropbear starts after agent-ready: wait until it answers.
    for (let i = 0; ; i++) {
      try {
        await ssh();
        break;
      } catch (err) {
        if (i > 120) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    for (let i = 0; i < WARMUP; i++) {
      await vessel();
      await ssh();
    }

    const cpu = await cpuTimes();
    const v: number[] = [];
    const s: number[] = [];
    for (let i = 0; i < runs; i++) {
      // Alternate which side goes first.
      if (i % 2 === 0) {
        v.push(await vessel());
        s.push(await ssh());
      } else {
        s.push(await ssh());
        v.push(await vessel());
      }
    }
    const steal = await stealPct(cpu);
    const vs = stats(v);
    const ss = stats(s);
    const ratio = round(vs.median_ms / ss.median_ms, 3);
    const result = {
      id: 'P2',
      what: 'exec `true` round trip: Vessel API exec vs ssh (dropbear) into the same VM',
      runs,
      vessel: vs,
      ssh: ss,
      ratio_median: ratio,
      ratio_p90: round(vs.p90_ms / ss.p90_ms, 3),
      goal: `<= ${GOAL_RATIO}`,
      goal_met: ratio <= GOAL_RATIO,
      host: { cpus: os.cpus().length, accel: running.accel, steal_pct: steal },
      raw: { vessel_ms: v.map((x) => round(x, 2)), ssh_ms: s.map((x) => round(x, 2)) },
      notes: [
        'Vessel: client.execInstance() (POST /instances/{id}/exec over the unix socket, keep-alive) until the JSON result arrives',
        'ssh: a new dbclient process per round trip (connect, key exchange, ed25519 auth, exec, exit) to a published guest port',
        `${WARMUP} warm-up round trips per side are not counted`,
      ],
    };
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n\n`);
    process.stdout.write(
      table([
        ['P2', 'median ms', 'p90 ms', 'min ms', 'max ms'],
        ['vessel exec', ...Object.values(vs).map(String)],
        ['ssh (dropbear)', ...Object.values(ss).map(String)],
        [
          'ratio vessel/ssh',
          String(ratio),
          String(result.ratio_p90),
          `goal ${result.goal}`,
          result.goal_met ? 'met' : 'MISSED',
        ],
      ]),
    );
    await daemon.client.deleteInstance(inst.id);
  } finally {
    await daemon.stop();
    await fs.rm(keys, { recursive: true, force: true });
  }
}

const innerDir = process.env[INNER_ENV];
await (innerDir ? inner(innerDir) : outer()).catch((err: unknown) => {
  process.stderr.write(`p2-exec: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
