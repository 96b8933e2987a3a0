import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { createHash } from 'node:crypto';
import { VesselError, errorMessage } from '../core/errors.js';
import type { Credential } from './credentials.js';
import { MANIFEST_ACCEPT } from './media-types.js';
import { isLoopbackRegistry, registryApiHost } from './reference.js';

export interface RegistryClientOptions {
  /** Registries reached over plain HTTP besides loopback ones. */
  readonly insecure?: readonly string[];
  readonly credentials?: ReadonlyMap<string, Credential>;
  readonly userAgent?: string;
  readonly timeoutMs?: number;
}

export interface FetchedManifest {
  readonly body: Buffer;
  readonly digest: string;
  readonly contentType: string | undefined;
}

interface Challenge {
  readonly scheme: string;
  readonly params: Record<string, string>;
}

/** Parse a `WWW-Authenticate` header: `Bearer realm="…",service="…",scope="…"`. */
export function parseChallenge(header: string): Challenge | undefined {
  const m = /^\s*([A-Za-z]+)\s*(.*)$/.exec(header);
  if (!m?.[1]) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2] ?? '')) !== null) {
    if (p[1]) params[p[1].toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return { scheme: m[1].toLowerCase(), params };
}

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Error bodies are read only this far; a registry's error JSON is a few hundred bytes. */
const MAX_ERROR_BODY_BYTES = 64 * 1024;

/** Distribution-spec error codes that mean the repository, manifest or blob does not exist. */
const NOT_FOUND_CODES = new Set(['NAME_UNKNOWN', 'MANIFEST_UNKNOWN', 'BLOB_UNKNOWN']);

/**
 * The `code`s of a registry's error body (`{"errors":[{"code":"MANIFEST_UNKNOWN",…}]}`);
 * empty when the body is missing, too big or not that shape.
 */
export async function registryErrorCodes(res: Response): Promise<string[]> {
  if (!res.body) return [];
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      if (size > MAX_ERROR_BODY_BYTES) return [];
      chunks.push(Buffer.from(chunk));
    }
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { errors?: unknown };
    if (!Array.isArray(body.errors)) return [];
    return body.errors.flatMap((e: unknown) =>
      typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string'
        ? [(e as { code: string }).code]
        : [],
    );
  } catch {
    return [];
  } finally {
    await res.body.cancel().catch(() => undefined);
  }
}

/** True when a failed response says the thing asked for does not exist: HTTP 404, or a not-found error code. */
export function isNotFoundResponse(status: number, codes: readonly string[]): boolean {
  if (status === 404) return true;
  return status >= 400 && status < 500 && codes.some((c) => NOT_FOUND_CODES.has(c));
}

/**
 * A client of the OCI Distribution API for pulls: manifests and blobs, with
 * anonymous access, the bearer-token challenge flow, and basic auth from the
 * credentials file. One instance per pull (tokens are scoped to a repository).
 */
export class RegistryClient {
  private readonly registry: string;
  private readonly repository: string;
  private readonly base: string;
  private readonly credential: Credential | undefined;
  private readonly userAgent: string;
  private readonly timeoutMs: number;
  private authorization: string | undefined;

  constructor(registry: string, repository: string, options: RegistryClientOptions = {}) {
    this.registry = registry;
    this.repository = repository;
    const host = registryApiHost(registry);
    const plain = isLoopbackRegistry(registry) || (options.insecure ?? []).includes(registry);
    this.base = `${plain ? 'http' : 'https'}://${host}`;
    this.credential = options.credentials?.get(registry) ?? options.credentials?.get(host);
    this.userAgent = options.userAgent ?? 'vessel/0.1';
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  private where(): string {
    return `registry ${this.registry}`;
  }

  private async send(
    url: string,
    headers: Record<string, string>,
    method = 'GET',
  ): Promise<Response> {
    const h: Record<string, string> = { 'user-agent': this.userAgent, ...headers };
    if (this.authorization) h.authorization = this.authorization;
    try {
      return await fetch(url, {
        method,
        headers: h,
        redirect: 'follow',
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw new VesselError(
        'registry_unavailable',
        `cannot reach ${this.where()}: ${errorMessage(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  /** Answer a 401 challenge; returns false when there is nothing more to try. */
  private async authenticate(res: Response): Promise<boolean> {
    const header = res.headers.get('www-authenticate');
    const challenge = header ? parseChallenge(header) : undefined;
    if (!challenge) return false;
    if (challenge.scheme === 'basic') {
      if (!this.credential || this.authorization?.startsWith('Basic ')) return false;
      this.authorization = `Basic ${Buffer.from(`${this.credential.username}:${this.credential.password}`).toString('base64')}`;
      return true;
    }
    if (challenge.scheme !== 'bearer' || this.authorization?.startsWith('Bearer ')) return false;
    const realm = challenge.params.realm;
    if (!realm) return false;
    const url = new URL(realm);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', challenge.params.scope ?? `repository:${this.repository}:pull`);
    const headers: Record<string, string> = { 'user-agent': this.userAgent };
    if (this.credential) {
      headers.authorization = `Basic ${Buffer.from(`${this.credential.username}:${this.credential.password}`).toString('base64')}`;
    }
    let tokenRes: Response;
    try {
      tokenRes = await fetch(url, { headers, signal: AbortSignal.timeout(this.timeoutMs) });
    } catch (err) {
      throw new VesselError(
        'registry_unavailable',
        `cannot reach the token service ${url.origin} of ${this.where()}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    if (tokenRes.status === 401 || tokenRes.status === 403) {
      throw new VesselError(
        'registry_unauthorized',
        `${this.where()} refused the credentials for ${this.repository} (token service answered ${tokenRes.status})`,
      );
    }
    if (!tokenRes.ok) {
      throw new VesselError(
        'registry_unavailable',
        `token service of ${this.where()} answered HTTP ${tokenRes.status}`,
      );
    }
    const body = (await tokenRes.json().catch(() => ({}))) as {
      token?: unknown;
      access_token?: unknown;
    };
    const token = typeof body.token === 'string' ? body.token : body.access_token;
    if (typeof token !== 'string' || token === '') {
      throw new VesselError(
        'registry_protocol',
        `token service of ${this.where()} returned no token`,
      );
    }
    this.authorization = `Bearer ${token}`;
    return true;
  }

  /** GET with authentication retries and status → error mapping. */
  private async get(
    path: string,
    headers: Record<string, string>,
    subject: string,
  ): Promise<Response> {
    const url = `${this.base}/v2/${this.repository}/${path}`;
    let res = await this.send(url, headers);
    for (let i = 0; i < 2 && res.status === 401; i++) {
      await res.body?.cancel();
      if (!(await this.authenticate(res))) break;
      res = await this.send(url, headers);
    }
    if (res.ok) return res;
    const codes = await registryErrorCodes(res);
    const image = `${this.registry}/${this.repository}`;
    if (isNotFoundResponse(res.status, codes)) {
      throw new VesselError('manifest_unknown', `${subject} not found in ${this.where()}`, {
        details: { registry: this.registry, repository: this.repository, status: res.status },
      });
    }
    if (res.status === 401 || res.status === 403) {
      throw new VesselError(
        'registry_unauthorized',
        `${this.where()} denied access to ${image}${this.credential ? ' with the configured credentials' : ' (no credentials configured)'} (HTTP ${res.status})`,
      );
    }
    if (res.status === 429 || res.status >= 500) {
      throw new VesselError(
        'registry_unavailable',
        `${this.where()} answered HTTP ${res.status} for ${subject}`,
      );
    }
    throw new VesselError(
      'registry_protocol',
      `${this.where()} answered HTTP ${res.status} for ${subject}`,
    );
  }

  /**
   * Fetch a manifest or index by tag or digest. The digest is computed from
   * the bytes received; when `reference` is a digest the bytes must match it.
   */
  async manifest(reference: string): Promise<FetchedManifest> {
    const subject = `image "${this.registry}/${this.repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference}"`;
    const res = await this.get(`manifests/${reference}`, { accept: MANIFEST_ACCEPT }, subject);
    const declared = Number(res.headers.get('content-length') ?? '0');
    if (declared > MAX_MANIFEST_BYTES) {
      await res.body?.cancel();
      throw new VesselError(
        'registry_protocol',
        `${subject}: manifest of ${declared} bytes exceeds the 4 MiB limit`,
      );
    }
    const body = Buffer.from(await res.arrayBuffer());
    if (body.length > MAX_MANIFEST_BYTES) {
      throw new VesselError('registry_protocol', `${subject}: manifest exceeds the 4 MiB limit`);
    }
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (reference.startsWith('sha256:') && digest !== reference) {
      throw new VesselError(
        'digest_mismatch',
        `${subject}: registry returned a manifest whose digest is ${digest}`,
      );
    }
    return { body, digest, contentType: res.headers.get('content-type') ?? undefined };
  }

  /** Stream a blob; the caller verifies its digest. */
  async blob(digest: string): Promise<Readable> {
    const res = await this.get(
      `blobs/${digest}`,
      {},
      `blob ${digest} of ${this.registry}/${this.repository}`,
    );
    if (!res.body)
      throw new VesselError(
        'registry_protocol',
        `${this.where()} sent an empty body for blob ${digest}`,
      );
    return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  }
}
