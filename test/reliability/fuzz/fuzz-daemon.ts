/**
 * The daemon under fuzz: a real `vessel daemon` process in its own network namespace (so a
 * request that passes validation cannot pull from a real registry or give a bridge an
 * address on this host), serving its unix socket and a bearer-token TCP listener on
 * 127.0.0.1 inside the namespace, which the test reaches through {@link ./tcp-relay.ts}.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startNetnsDaemon, type NetnsDaemon } from '../../helpers/netns.js';
import type { FuzzRequest } from './request.js';
import { describeResponse, send, target, type Target } from './send.js';

const RELAY_JS = fileURLToPath(new URL('./tcp-relay.js', import.meta.url));
const STDERR_KEEP = 256 * 1024;
const LIST_CAP = 64 * 1024 * 1024;

export interface FuzzDaemon {
  readonly unix: Target;
  /** The TCP listener (through the relay). */
  readonly tcp: Target;
  readonly token: string;
  /** False once the daemon process has exited. */
  alive(): boolean;
  /** The daemon's recent log lines (stderr, level warn and up) that contain `text`. */
  logLines(text: string): string[];
  /** Why the daemon is not healthy (dead, or /health not 200 on a transport), or undefined. */
  problem(): Promise<string | undefined>;
  /** Delete every instance, snapshot, ingress, volume and image; resolves to how many. */
  deleteAll(): Promise<number>;
  close(): Promise<void>;
}

function get(path: string, auth?: string): FuzzRequest {
  return {
    operationId: 'harness',
    mutations: [],
    method: 'GET',
    path,
    headers: auth ? { authorization: auth } : {},
  };
}

async function startRelay(ns: string, socketPath: string, port: number): Promise<ChildProcess> {
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, process.execPath, RELAY_JS, socketPath, `${port}`],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const ready = await new Promise<boolean>((resolve) => {
    child.stdout?.on('data', (d: Buffer) => d.toString().includes('ready') && resolve(true));
    child.once('exit', () => resolve(false));
  });
  if (!ready) throw new Error('the TCP relay in the namespace did not start');
  return child;
}

/** What a list endpoint returns, as `{id or name}` to delete one by one. */
async function deleteEach(t: Target, list: string, key: 'id' | 'name'): Promise<number> {
  const res = await send(t, get(list), { bodyCap: LIST_CAP });
  if (res.status !== 200) throw new Error(`cleanup: GET ${list}: ${describeResponse(res)}`);
  const items = JSON.parse(res.body.toString()) as Array<Record<string, string>>;
  for (const item of items) {
    const del = await send(t, {
      ...get(`${list}/${encodeURIComponent(item[key]!)}`),
      method: 'DELETE',
    });
    if (del.status >= 300 && del.status !== 404)
      throw new Error(`cleanup: DELETE ${list}/${item[key]}: ${describeResponse(del)}`);
  }
  return items.length;
}

/** GET `path` in full (e.g. `/openapi.json`) over the unix socket. */
export async function fetchAll(t: Target, path: string): Promise<Buffer> {
  const res = await send(t, get(path), { bodyCap: LIST_CAP });
  if (res.status !== 200) throw new Error(`GET ${path}: ${describeResponse(res)}`);
  return res.body;
}

export async function startFuzzDaemon(): Promise<FuzzDaemon> {
  const token = randomBytes(24).toString('hex');
  // The namespace is new and empty: any port is free there (10053 is the daemon's DNS).
  const port = 20_000 + Math.floor(Math.random() * 40_000);
  const d: NetnsDaemon = await startNetnsDaemon({
    config: { api: { tcp: { host: '127.0.0.1', port }, tokens: [token] } },
  });
  let stderr = '';
  d.child.stderr?.on('data', (b: Buffer) => {
    stderr = (stderr + b.toString()).slice(-STDERR_KEEP);
  });
  let relay: ChildProcess | undefined;
  try {
    const relaySocket = path.join(d.dataDir, 'tcp-relay.sock');
    relay = await startRelay(d.ns.name, relaySocket, port);
    const unix = target('unix', d.socket);
    const tcp = target('tcp', relaySocket);
    const alive = (): boolean => d.child.exitCode === null && d.child.signalCode === null;
    const theRelay = relay;
    return {
      unix,
      tcp,
      token,
      alive,
      logLines: (text) => stderr.split('\n').filter((l) => l.includes(text)),
      async problem() {
        if (!alive()) return `the daemon exited (${d.child.exitCode ?? d.child.signalCode})`;
        if (theRelay.exitCode !== null) return 'the TCP relay (test harness) exited';
        for (const [t, auth] of [
          [unix, undefined],
          [tcp, `Bearer ${token}`],
        ] as const) {
          const res = await send(t, get('/health', auth), { timeoutMs: 10_000 });
          if (res.status !== 200) return `GET /health via ${t.name}: ${describeResponse(res)}`;
        }
        return undefined;
      },
      async deleteAll() {
        let n = 0;
        for (const list of ['/instances', '/snapshots', '/ingresses', '/volumes'])
          n += await deleteEach(unix, list, 'id');
        return n + (await deleteEach(unix, '/images', 'name'));
      },
      async close() {
        unix.agent.destroy();
        tcp.agent.destroy();
        if (theRelay.exitCode === null && theRelay.pid) process.kill(theRelay.pid, 'SIGTERM');
        await d.close();
      },
    };
  } catch (err) {
    if (relay?.pid) process.kill(relay.pid, 'SIGKILL');
    await d.close();
    throw err;
  }
}
