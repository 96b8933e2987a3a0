// A VM reachable over ssh, for benchmarks that compare Vessel with ssh into the same VM
// (P2, P11). The VM gets an address, so such a bench runs inside a network namespace it
// creates and deletes: `runInNetns` is the outer half (kernel seeded in the host namespace,
// then this script again inside the namespace), `startSshGuest` the inner half (image with
// dropbear, fresh keys, instance, dbclient argv).
import { execFile, spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { EntrySpec } from '../../test/helpers/oci-builder.js';
import { busyboxImage, writeDockerArchive } from '../../test/helpers/oci-builder.js';
import { createNetns, waitForState } from '../../test/helpers/netns.js';
import type { SpawnedDaemon } from '../../test/helpers/vm-daemon.js';
import { seedKernel } from '../../test/helpers/vm-daemon.js';

const execFileAsync = promisify(execFile);

/** The absolute path of a system tool, or an error naming the package that has it. */
export async function needTool(tool: string): Promise<string> {
  for (const dir of ['/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const p = path.join(dir, tool);
    try {
      await fs.access(p);
      return p;
    } catch {
      // next
    }
  }
  throw new Error(`${tool} is missing; install dropbear-bin / qemu (scripts/setup.sh does)`);
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

/**
 * The outer run of a bench: checks root and `tools`, makes a data dir with the default
 * kernel, creates a namespace (`vessel-test-<random>`, only `lo`) and runs `script` (the
 * compiled bench, by URL) again inside it with the data dir in `$innerEnv`, with the same
 * arguments. Deletes the namespace (every process left in it) and the data dir at the end;
 * the exit status is the inner run's.
 */
export async function runInNetns(options: {
  readonly script: string;
  readonly innerEnv: string;
  readonly tools: readonly string[];
  readonly prefix: string;
}): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (it creates a network namespace)');
  for (const t of options.tools) await needTool(t);
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), options.prefix));
  const ns = await createNetns().catch(async (err: unknown) => {
    await fs.rm(dataDir, { recursive: true, force: true });
    throw err;
  });
  try {
    await seedKernel(dataDir);
    const self = fileURLToPath(options.script);
    process.exitCode = await new Promise<number>((resolve, reject) => {
      const child = spawn(
        'ip',
        ['netns', 'exec', ns.name, process.execPath, self, ...process.argv.slice(2)],
        { stdio: 'inherit', env: { ...process.env, [options.innerEnv]: dataDir } },
      );
      child.once('error', reject);
      child.once('exit', (c, sig) => resolve(c ?? (sig ? 1 : 0)));
    });
  } finally {
    await ns.destroy();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

export interface SshGuest {
  readonly instanceId: string;
  /** The accelerator the VM runs with (`tcg`, `kvm`). */
  readonly accel: string | null;
  /** The VMM's pid, from the instance. */
  readonly vmmPid: number | null;
  /** Absolute path of dbclient. */
  readonly dbclient: string;
  /** dbclient's arguments to run `command` in the guest as root. */
  dbclientArgs(command: readonly string[]): string[];
  /** dbclient's environment: HOME in the keys dir, so nothing lands in the real ~/.ssh. */
  readonly env: NodeJS.ProcessEnv;
  /** Removes the keys and the image archive. The caller deletes the instance. */
  cleanup(): Promise<void>;
}

/**
 * Builds the busybox + dropbear image (fresh ed25519 host and client keys), imports it into
 * `daemon`, creates instance `name` running `dropbear -F -E -s -p 22` with guest port 22
 * published on 127.0.0.1:`hostPort`, and waits until dbclient gets `true` through.
 */
export async function startSshGuest(
  daemon: SpawnedDaemon,
  options: {
    readonly name: string;
    readonly hostPort: number;
    /** More files for the image (e.g. `scp` for P10). */
    readonly extra?: readonly EntrySpec[];
    /** Writable overlay disk size ("2GB"); default: the daemon's. */
    readonly overlaySize?: string;
  },
): Promise<SshGuest> {
  const [dropbear, dbclient, dropbearkey] = await Promise.all(
    ['dropbear', 'dbclient', 'dropbearkey'].map(needTool),
  );
  const keys = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-bench-keys-'));
  const cleanup = (): Promise<void> => fs.rm(keys, { recursive: true, force: true });
  try {
    await execFileAsync(dropbearkey!, ['-t', 'ed25519', '-f', path.join(keys, 'host')]);
    await execFileAsync(dropbearkey!, ['-t', 'ed25519', '-f', path.join(keys, 'client')]);
    const pub = (await execFileAsync(dropbearkey!, ['-y', '-f', path.join(keys, 'client')])).stdout
      .split('\n')
      .find((l) => l.startsWith('ssh-'));
    if (!pub) throw new Error('dropbearkey -y printed no public key');

    const spec = await busyboxImage();
    spec.layers.push([
      ...(await sshImageLayer(dropbear!, await fs.readFile(path.join(keys, 'host')), pub)),
      ...(options.extra ?? []),
    ]);
    const archive = path.join(keys, 'image.tar');
    await writeDockerArchive(archive, spec, `bench/ssh:${options.name}`);
    const imported = await daemon.client.importImage(createReadStream(archive));
    for (let i = 0; (await daemon.client.getImage(imported.name)).status !== 'ready'; i++) {
      if (i > 600) throw new Error('the bench image did not become ready');
      await new Promise((r) => setTimeout(r, 200));
    }
    const inst = await daemon.client.createInstance({
      image: imported.name,
      name: options.name,
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
      ports: [{ host_port: options.hostPort, guest_port: 22 }],
      ...(options.overlaySize ? { overlay_size: options.overlaySize } : {}),
    });
    const running = await waitForState(daemon.client, inst.id, 'Running');
    // Key auth, no host-key check (a fresh key each run).
    const dbclientArgs = (command: readonly string[]): string[] => [
      '-y',
      '-y',
      '-i',
      path.join(keys, 'client'),
      '-p',
      String(options.hostPort),
      'root@127.0.0.1',
      ...command,
    ];
    const env = { ...process.env, HOME: keys };
    // dropbear starts after agent-ready: wait until it answers.
    for (let i = 0; ; i++) {
      try {
        await execFileAsync(dbclient!, dbclientArgs(['true']), { env, timeout: 60_000 });
        break;
      } catch (err) {
        if (i > 120) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    return {
      instanceId: inst.id,
      accel: running.accel,
      vmmPid: running.pid,
      dbclient: dbclient!,
      dbclientArgs,
      env,
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
