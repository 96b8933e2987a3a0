// Registry credentials in Docker's config.json format.
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import { loadCredentials } from '../../../src/images/credentials.js';
import { parseReference, registryApiHost } from '../../../src/images/reference.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

describe('loadCredentials', () => {
  let dir: string;
  let n = 0;
  const write = async (content: unknown): Promise<string> => {
    const file = path.join(dir, `creds-${n++}.json`);
    await fs.writeFile(file, typeof content === 'string' ? content : JSON.stringify(content));
    return file;
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-creds-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('no file configured or a missing file gives an empty map', async () => {
    assert.equal((await loadCredentials(undefined)).size, 0);
    assert.equal((await loadCredentials(path.join(dir, 'absent.json'))).size, 0);
  });

  test('the auth (base64 user:password) form; the password may contain colons', async () => {
    const creds = await loadCredentials(
      await write({ auths: { 'ghcr.io': { auth: b64('bob:s3:cr:et') } } }),
    );
    assert.deepEqual([...creds], [['ghcr.io', { username: 'bob', password: 's3:cr:et' }]]);
  });

  test('the username/password form', async () => {
    const creds = await loadCredentials(
      await write({ auths: { 'localhost:5000': { username: 'u', password: 'p' } } }),
    );
    assert.deepEqual(creds.get('localhost:5000'), { username: 'u', password: 'p' });
  });

  test('URL keys are normalised to the host', async () => {
    const creds = await loadCredentials(
      await write({
        auths: {
          'https://registry.example.com/v1/': { auth: b64('a:1') },
          'http://127.0.0.1:5000': { auth: b64('b:2') },
        },
      }),
    );
    assert.deepEqual([...creds.keys()].sort(), ['127.0.0.1:5000', 'registry.example.com']);
    assert.deepEqual(creds.get('registry.example.com'), { username: 'a', password: '1' });
  });

  test('unusable entries are skipped, not fatal', async () => {
    const creds = await loadCredentials(
      await write({
        auths: {
          'a.io': { auth: b64('no-colon') },
          'b.io': { auth: '' },
          'c.io': 'string',
          'd.io': { username: 'only-user' },
          'e.io': { auth: b64('ok:ok') },
        },
        credsStore: 'desktop',
      }),
    );
    assert.deepEqual([...creds.keys()], ['e.io']);
    assert.equal((await loadCredentials(await write({ credHelpers: {} }))).size, 0);
  });

  test('Docker Hub credentials saved by `docker login` are found for docker.io images', async () => {
    // `docker login` stores Docker Hub under "https://index.docker.io/v1/";
    // RegistryClient looks credentials up by the image's registry ("docker.io")
    // or its API host ("registry-1.docker.io").
    const creds = await loadCredentials(
      await write({ auths: { 'https://index.docker.io/v1/': { auth: b64('hub:pw') } } }),
    );
    const ref = parseReference('alpine');
    const found = creds.get(ref.registry) ?? creds.get(registryApiHost(ref.registry));
    assert.deepEqual(found, { username: 'hub', password: 'pw' });
  });

  test('invalid JSON is invalid_config naming the file', async () => {
    const file = await write('{"auths": ');
    await assert.rejects(loadCredentials(file), (err) => {
      assert.ok(isVesselError(err, 'invalid_config'));
      assert.ok(err.message.includes(file));
      assert.ok(err.cause instanceof SyntaxError);
      return true;
    });
  });

  test('valid JSON that is not an object (null) is invalid_config or empty, never a TypeError', async () => {
    const file = await write('null');
    try {
      assert.equal((await loadCredentials(file)).size, 0);
    } catch (err) {
      assert.ok(isVesselError(err, 'invalid_config'), `got ${String(err)}`);
    }
  });

  test('an unreadable path (a directory) is invalid_config', async () => {
    await assert.rejects(loadCredentials(dir), (err) => isVesselError(err, 'invalid_config'));
  });
});
