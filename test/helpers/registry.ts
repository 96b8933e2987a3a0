// A real OCI registry (Debian's docker-registry, i.e. distribution 2.8) per test
// suite, on 127.0.0.1 with storage in a temp dir; optional basic or token auth.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, createPrivateKey, randomUUID, sign } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import bcrypt from 'bcryptjs';

const execFileAsync = promisify(execFile);

export interface TestRegistry {
  /** `127.0.0.1:PORT`, as used in image references. */
  host: string;
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** The filesystem driver's root directory. */
  storageDir: string;
  /** With token auth: the token endpoint (the `realm` of the Bearer challenge). */
  tokenRealm?: string;
  /** With token auth: how many tokens the token server has issued. */
  tokensIssued?: () => number;
  stop(): Promise<void>;
  /** Path of a blob's data file in storage, to corrupt it in tests. */
  blobDataPath(digest: string): string;
}

export interface RegistryOptions {
  basicAuth?: { username: string; password: string };
  token?: TokenAuthOptions;
}

const READY_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;

/** Registries still running, killed if the test process exits without stopping them. */
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port from listen(0)');
  return address.port;
}

/** JSON strings are valid YAML double-quoted scalars. */
const q = (s: string): string => JSON.stringify(s);

function configYaml(storageDir: string, port: number, auth: string[]): string {
  return [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(storageDir)}`,
    '  delete:',
    '    enabled: true',
    'http:',
    `  addr: ${q(`127.0.0.1:${port}`)}`,
    `  secret: ${q(`test-${port}-${Date.now()}`)}`,
    'health:',
    '  storagedriver:',
    '    enabled: false',
    ...auth,
    '',
  ].join('\n');
}

async function waitReady(url: string, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let delay = 20;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `docker-registry exited (${child.exitCode ?? child.signalCode}): ${output()}`,
      );
    }
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200 || res.status === 401) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      throw new Error(
        `docker-registry at ${url} not ready after ${READY_TIMEOUT_MS} ms: ${output()}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 250);
  }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts `docker-registry serve` on a free 127.0.0.1 port with its own config and
 * storage in a temp dir, and resolves once `GET /v2/` answers.
 */
export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'vessel-registry-'));
  const storageDir = join(dir, 'storage');
  let tokenServer: TokenServer | undefined;
  try {
    const auth: string[] = [];
    if (options.basicAuth) {
      const { username, password } = options.basicAuth;
      const htpasswd = join(dir, 'htpasswd');
      await writeFile(htpasswd, `${username}:${bcrypt.hashSync(password, 4)}\n`);
      auth.push(
        'auth:',
        '  htpasswd:',
        `    realm: ${q('vessel-test')}`,
        `    path: ${q(htpasswd)}`,
      );
    } else if (options.token) {
      tokenServer = await startTokenServer(dir, options.token);
      auth.push(
        'auth:',
        '  token:',
        `    realm: ${q(tokenServer.realm)}`,
        `    service: ${q(tokenServer.service)}`,
        `    issuer: ${q(tokenServer.issuer)}`,
        `    rootcertbundle: ${q(tokenServer.certPath)}`,
      );
    }
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const configPath = join(dir, 'config.yml');
      await writeFile(configPath, configYaml(storageDir, port, auth));
      const child = spawn('docker-registry', ['serve', configPath], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      live.add(child);
      installExitHook();
      child.once('exit', () => live.delete(child));
      let output = '';
      const keep = (chunk: Buffer): void => {
        output = (output + chunk.toString()).slice(-4000);
      };
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      const spawned = new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.on('error', reject);
      });
      const url = `http://127.0.0.1:${port}`;
      try {
        await spawned;
        await waitReady(url, child, () => output);
      } catch (err) {
        // Most likely the port was taken between freePort() and the registry's bind.
        const exitedEarly = child.exitCode !== null || child.signalCode !== null;
        await stopChild(child);
        if (exitedEarly && attempt < 3) continue;
        throw err;
      }
      const server = tokenServer;
      let stopped = false;
      const registry: TestRegistry = {
        host: `127.0.0.1:${port}`,
        url,
        storageDir,
        async stop() {
          if (stopped) return;
          stopped = true;
          await stopChild(child);
          await server?.close();
          await rm(dir, { recursive: true, force: true });
        },
        blobDataPath(digest: string) {
          const [algorithm, hex] = digest.split(':');
          if (!algorithm || !hex) throw new Error(`not a digest: "${digest}"`);
          return join(
            storageDir,
            'docker/registry/v2/blobs',
            algorithm,
            hex.slice(0, 2),
            hex,
            'data',
          );
        },
      };
      if (server) {
        registry.tokenRealm = server.realm;
        registry.tokensIssued = () => server.issued;
      }
      return registry;
    }
  } catch (err) {
    await tokenServer?.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Token auth as docker/distribution expects it: with `username`/`password` the token
 * endpoint demands those credentials (HTTP basic); without them it grants everyone
 * everything. `anonymousPull` lets requests without credentials get pull-only tokens.
 */
export interface TokenAuthOptions {
  username?: string;
  password?: string;
  anonymousPull?: boolean;
}

interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certPath: string;
  readonly issued: number;
  close(): Promise<void>;
}

type Access = { type: string; name: string; actions: string[] };

/** `repository:foo/bar:pull,push` (several per parameter, space-separated). */
function parseScopes(params: string[]): Access[] {
  return params
    .flatMap((p) => p.split(' '))
    .filter((s) => s.length > 0)
    .flatMap((scope) => {
      const first = scope.indexOf(':');
      const last = scope.lastIndexOf(':');
      if (first < 0 || last <= first) return [];
      return [
        {
          type: scope.slice(0, first),
          name: scope.slice(first + 1, last),
          actions: scope.slice(last + 1).split(','),
        },
      ];
    });
}

/** A token server on 127.0.0.1 issuing RS256 JWTs whose `x5c` carries a self-signed cert. */
async function startTokenServer(dir: string, options: TokenAuthOptions): Promise<TokenServer> {
  const keyPath = join(dir, 'token-key.pem');
  const certPath = join(dir, 'token-cert.pem');
  await execFileAsync('openssl', [
    ...'req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=vessel-test-token'.split(' '),
    ...['-keyout', keyPath, '-out', certPath],
  ]);
  const key = createPrivateKey(await readFile(keyPath));
  const certDer = new X509Certificate(await readFile(certPath)).raw.toString('base64');
  const service = 'vessel-test-registry';
  const issuer = 'vessel-test-token-issuer';
  let issued = 0;

  const deny = (res: ServerResponse): void => {
    res.writeHead(401, { 'www-authenticate': 'Basic realm="vessel-test-token"' }).end();
  };
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method !== 'GET' || url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    let subject = '';
    const authorization = req.headers.authorization ?? '';
    if (authorization.startsWith('Basic ')) {
      const decoded = Buffer.from(authorization.slice('Basic '.length), 'base64').toString();
      const colon = decoded.indexOf(':');
      const [username, password] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
      if (
        colon < 0 ||
        (options.username !== undefined &&
          (username !== options.username || password !== options.password))
      ) {
        deny(res);
        return;
      }
      subject = username;
    } else if (options.username !== undefined && !options.anonymousPull) {
      deny(res);
      return;
    }
    const anonymous = subject === '' && options.username !== undefined;
    const access = parseScopes(url.searchParams.getAll('scope')).map((a) =>
      anonymous ? { ...a, actions: a.actions.filter((x) => x === 'pull') } : a,
    );
    const now = Math.floor(Date.now() / 1000);
    const encode = (value: object): string =>
      Buffer.from(JSON.stringify(value)).toString('base64url');
    const unsigned = `${encode({ typ: 'JWT', alg: 'RS256', x5c: [certDer] })}.${encode({
      iss: issuer,
      sub: subject,
      aud: url.searchParams.get('service') ?? service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    })}`;
    const token = `${unsigned}.${sign('sha256', Buffer.from(unsigned), key).toString('base64url')}`;
    issued++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        token,
        access_token: token,
        expires_in: 300,
        issued_at: new Date(now * 1000).toISOString(),
      }),
    );
  };

  const server = createHttpServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port from listen(0)');
  return {
    realm: `http://127.0.0.1:${address.port}/token`,
    service,
    issuer,
    certPath,
    get issued() {
      return issued;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
