// Image reference parsing and normalisation, the way `docker pull` reads names.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import {
  digestHex,
  formatReference,
  isLoopbackRegistry,
  manifestReference,
  normaliseReference,
  parseReference,
  registryApiHost,
} from '../../../src/images/reference.js';

const HEX = 'a'.repeat(64);
const DIGEST = `sha256:${HEX}`;

describe('parseReference normalisation', () => {
  const cases: [string, string][] = [
    ['alpine', 'docker.io/library/alpine:latest'],
    ['alpine:3.20', 'docker.io/library/alpine:3.20'],
    ['user/app', 'docker.io/user/app:latest'],
    ['docker.io/alpine', 'docker.io/library/alpine:latest'],
    ['ghcr.io/o/r:tag', 'ghcr.io/o/r:tag'],
    ['localhost/x', 'localhost/x:latest'],
    ['localhost:5000/x', 'localhost:5000/x:latest'],
    ['127.0.0.1:5000/a/b:1', '127.0.0.1:5000/a/b:1'],
    ['index.docker.io/library/x', 'docker.io/library/x:latest'],
    ['registry-1.docker.io/library/x:2', 'docker.io/library/x:2'],
    ['[::1]:5000/x', '[::1]:5000/x:latest'],
    ['  alpine  ', 'docker.io/library/alpine:latest'],
    ['docker.io/u/a.b_c__d-e--f', 'docker.io/u/a.b_c__d-e--f:latest'],
  ];
  for (const [input, want] of cases) {
    test(`${JSON.stringify(input)} → ${want}`, () => {
      assert.equal(normaliseReference(input), want);
    });
  }

  test('fields of a registry reference with port, nested path and tag', () => {
    assert.deepEqual(parseReference('127.0.0.1:5000/a/b:1'), {
      registry: '127.0.0.1:5000',
      repository: 'a/b',
      tag: '1',
      digest: undefined,
    });
  });

  test('a single-component name with a dot is a repository, not a registry', () => {
    // Only a first component followed by more path can be a host.
    assert.deepEqual(parseReference('my.app'), {
      registry: 'docker.io',
      repository: 'library/my.app',
      tag: 'latest',
      digest: undefined,
    });
  });

  test('tag and digest together keep both', () => {
    const ref = parseReference(`ghcr.io/o/r:v1@${DIGEST}`);
    assert.equal(ref.tag, 'v1');
    assert.equal(ref.digest, DIGEST);
    assert.equal(formatReference(ref), `ghcr.io/o/r:v1@${DIGEST}`);
    assert.equal(manifestReference(ref), DIGEST, 'the digest wins when pinned');
  });

  test('digest only gets no default tag', () => {
    const ref = parseReference(`alpine@${DIGEST}`);
    assert.equal(ref.tag, undefined);
    assert.equal(ref.digest, DIGEST);
    assert.equal(formatReference(ref), `docker.io/library/alpine@${DIGEST}`);
    assert.equal(manifestReference(ref), DIGEST);
  });

  test('a registry port followed by a digest is not mistaken for a tag', () => {
    const ref = parseReference(`localhost:5000/x@${DIGEST}`);
    assert.equal(ref.registry, 'localhost:5000');
    assert.equal(ref.repository, 'x');
    assert.equal(ref.tag, undefined);
  });

  test('manifestReference uses the tag when not pinned', () => {
    assert.equal(manifestReference(parseReference('alpine:3.20')), '3.20');
    assert.equal(manifestReference(parseReference('alpine')), 'latest');
    assert.equal(
      manifestReference({ registry: 'r', repository: 'x', tag: undefined, digest: undefined }),
      'latest',
    );
  });
});

describe('parseReference rejects bad input with invalid_reference', () => {
  const bad: [string, string][] = [
    ['uppercase repository', 'Alpine'],
    ['uppercase in a nested path', 'ghcr.io/Owner/repo'],
    ['empty', ''],
    ['only spaces', '   '],
    ['space inside', 'al pine'],
    ['bad digest (short)', 'alpine@sha256:abc'],
    ['bad digest (uppercase hex)', `alpine@sha256:${'A'.repeat(64)}`],
    ['bad digest (other algorithm)', `alpine@md5:${HEX}`],
    ['empty path component', 'a//b'],
    ['trailing slash', 'a/b/'],
    ['129-character tag', `alpine:${'t'.repeat(129)}`],
    ['tag starting with a dot', 'alpine:.x'],
    ['empty tag', 'alpine:'],
    ['leading dash', '-leading'],
    ['trailing separator', 'alpine-'],
    ['port alone', ':5000'],
    ['bad registry host', 'bad_host.io:5000/x'],
    ['over-long', 'a'.repeat(600)],
    ['over-long repository path', `ghcr.io/${'a/'.repeat(130)}a`],
  ];
  for (const [why, input] of bad) {
    test(`${why}: ${JSON.stringify(input.length > 40 ? input.slice(0, 40) + '…' : input)}`, () => {
      assert.throws(
        () => parseReference(input),
        (err) => {
          assert.ok(isVesselError(err, 'invalid_reference'), `got ${String(err)}`);
          assert.equal(err.kind, 'InvalidArgument');
          const shown = input.length > 512 ? input.slice(0, 40) : input;
          assert.ok(
            err.message.includes(`"${shown}`),
            `message names the input: ${err.message.slice(0, 120)}`,
          );
          return true;
        },
      );
    });
  }

  test('a 128-character tag is the longest accepted', () => {
    assert.equal(parseReference(`alpine:${'t'.repeat(128)}`).tag, 't'.repeat(128));
  });
});

describe('registry helpers', () => {
  test('isLoopbackRegistry', () => {
    for (const r of ['localhost', 'localhost:5000', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000'])
      assert.equal(isLoopbackRegistry(r), true, r);
    for (const r of [
      'docker.io',
      'ghcr.io',
      '10.0.0.1:5000',
      'localhost.example.com',
      '[::2]:5000',
    ])
      assert.equal(isLoopbackRegistry(r), false, r);
  });

  test('registryApiHost maps Docker Hub to its API host only', () => {
    assert.equal(registryApiHost('docker.io'), 'registry-1.docker.io');
    assert.equal(registryApiHost('ghcr.io'), 'ghcr.io');
    assert.equal(registryApiHost('localhost:5000'), 'localhost:5000');
  });

  test('digestHex returns the hex of a valid digest', () => {
    assert.equal(digestHex(DIGEST), HEX);
  });

  test('digestHex rejects anything else (it builds blob paths)', () => {
    for (const d of [
      'sha256:../../etc/passwd',
      `sha256:${HEX}/x`,
      HEX,
      'sha256:',
      `sha512:${HEX}`,
    ]) {
      assert.throws(
        () => digestHex(d),
        (err) => isVesselError(err, 'invalid_argument') && err.message.includes(d),
        d,
      );
    }
  });
});
