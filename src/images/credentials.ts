import fs from 'node:fs/promises';
import { VesselError, errnoCode, errorMessage } from '../core/errors.js';

export interface Credential {
  readonly username: string;
  readonly password: string;
}

/**
 * Registry credentials in Docker's `config.json` format:
 * `{"auths": {"registry.example.com": {"auth": base64("user:pass")}}}`
 * (`username`/`password` fields are accepted too). Read on every pull so
 * edits apply without a daemon restart.
 */
export async function loadCredentials(file: string | undefined): Promise<Map<string, Credential>> {
  const out = new Map<string, Credential>();
  if (!file) return out;
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return out;
    throw new VesselError(
      'invalid_config',
      `cannot read credentials file ${file}: ${errorMessage(err)}`,
      { cause: err },
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new VesselError('invalid_config', `credentials file ${file} is not valid JSON`, {
      cause: err,
    });
  }
  if (typeof json !== 'object' || json === null) {
    throw new VesselError('invalid_config', `credentials file ${file} must hold a JSON object`);
  }
  const auths = (json as { auths?: unknown }).auths;
  if (typeof auths !== 'object' || auths === null) return out;
  for (const [rawHost, entry] of Object.entries(auths as Record<string, unknown>)) {
    if (typeof entry !== 'object' || entry === null) continue;
    const e = entry as Record<string, unknown>;
    let host = rawHost.replace(/^https?:\/\//, '').replace(/\/.*$/, '');
    // `docker login` stores Docker Hub as https://index.docker.io/v1/.
    if (host === 'index.docker.io' || host === 'registry-1.docker.io') host = 'docker.io';
    if (typeof e.auth === 'string' && e.auth !== '') {
      const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0)
        out.set(host, { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) });
    } else if (typeof e.username === 'string' && typeof e.password === 'string') {
      out.set(host, { username: e.username, password: e.password });
    }
  }
  return out;
}
