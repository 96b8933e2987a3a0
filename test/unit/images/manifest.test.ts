// Manifest and index parsing: every descriptor is checked before its digest is
// used to build a blob path, and platform selection explains what exists.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isVesselError, type ErrorCode } from '../../../src/core/errors.js';
import {
  formatPlatform,
  parseManifest,
  selectPlatform,
  type ImageIndex,
} from '../../../src/images/manifest.js';
import { MediaType } from '../../../src/images/media-types.js';

const d = (c: string): string => `sha256:${c.repeat(64)}`;
const body = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

function manifestJson(
  mediaType: string | undefined,
  layerType: string = MediaType.ociLayerGzip,
): Record<string, unknown> {
  return {
    schemaVersion: 2,
    ...(mediaType ? { mediaType } : {}),
    config: { mediaType: MediaType.ociConfig, digest: d('c'), size: 100 },
    layers: [
      { mediaType: layerType, digest: d('1'), size: 10 },
      { mediaType: layerType, digest: d('2'), size: 20, annotations: { a: 'b' } },
    ],
  };
}

function indexJson(mediaType: string | undefined): Record<string, unknown> {
  return {
    schemaVersion: 2,
    ...(mediaType ? { mediaType } : {}),
    manifests: [
      {
        mediaType: MediaType.ociManifest,
        digest: d('a'),
        size: 500,
        platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
      },
      {
        mediaType: MediaType.ociManifest,
        digest: d('b'),
        size: 501,
        platform: { os: 'linux', architecture: 'amd64' },
      },
    ],
  };
}

function rejects(fn: () => unknown, code: ErrorCode, pattern: RegExp): void {
  assert.throws(fn, (err) => {
    assert.ok(isVesselError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('parseManifest', () => {
  test('OCI manifest by body mediaType', () => {
    const m = parseManifest(body(manifestJson(MediaType.ociManifest)), undefined, 'img');
    assert.equal(m.kind, 'manifest');
    assert.ok(m.kind === 'manifest');
    assert.equal(m.mediaType, MediaType.ociManifest);
    assert.deepEqual(m.config, { mediaType: MediaType.ociConfig, digest: d('c'), size: 100 });
    assert.deepEqual(
      m.layers.map((l) => [l.digest, l.size]),
      [
        [d('1'), 10],
        [d('2'), 20],
      ],
    );
    assert.deepEqual(m.layers[1]?.annotations, { a: 'b' });
  });

  test('Docker schema2 manifest by Content-Type (with parameters) when the body has no mediaType', () => {
    const m = parseManifest(
      body(manifestJson(undefined, MediaType.dockerLayerGzip)),
      `${MediaType.dockerManifest}; charset=utf-8`,
      'img',
    );
    assert.equal(m.kind, 'manifest');
    assert.equal(m.mediaType, MediaType.dockerManifest);
  });

  test('the body mediaType wins over a contradicting Content-Type', () => {
    const m = parseManifest(body(indexJson(MediaType.ociIndex)), MediaType.ociManifest, 'img');
    assert.equal(m.kind, 'index');
  });

  test('OCI index by body mediaType, with platforms', () => {
    const idx = parseManifest(body(indexJson(MediaType.ociIndex)), undefined, 'img');
    assert.ok(idx.kind === 'index');
    assert.equal(idx.manifests.length, 2);
    assert.deepEqual(idx.manifests[0]?.platform, {
      os: 'linux',
      architecture: 'arm64',
      variant: 'v8',
    });
    assert.deepEqual(idx.manifests[1]?.platform, { os: 'linux', architecture: 'amd64' });
  });

  test('Docker manifest list by body mediaType and by Content-Type', () => {
    const a = parseManifest(body(indexJson(MediaType.dockerManifestList)), undefined, 'img');
    assert.equal(a.kind, 'index');
    assert.equal(a.mediaType, MediaType.dockerManifestList);
    const b = parseManifest(body(indexJson(undefined)), MediaType.dockerManifestList, 'img');
    assert.equal(b.kind, 'index');
    assert.equal(b.mediaType, MediaType.dockerManifestList);
  });

  test('without any media type the shape decides', () => {
    assert.equal(parseManifest(body(indexJson(undefined)), undefined, 'img').kind, 'index');
    assert.equal(parseManifest(body(manifestJson(undefined)), undefined, 'img').kind, 'manifest');
  });

  test('schemaVersion 1 is unsupported_media_type', () => {
    rejects(
      () =>
        parseManifest(
          body({ schemaVersion: 1, name: 'x', fsLayers: [] }),
          'application/vnd.docker.distribution.manifest.v1+prettyjws',
          'img',
        ),
      'unsupported_media_type',
      /img: manifest schemaVersion 1 is not supported/,
    );
  });

  test('an unknown manifest media type is unsupported_media_type', () => {
    rejects(
      () => parseManifest(body(manifestJson('application/vnd.example+json')), undefined, 'img'),
      'unsupported_media_type',
      /application\/vnd\.example\+json/,
    );
  });

  test('invalid JSON and non-objects are registry_protocol', () => {
    rejects(
      () => parseManifest(Buffer.from('{nope'), undefined, 'img'),
      'registry_protocol',
      /img/,
    );
    rejects(() => parseManifest(Buffer.from('null'), undefined, 'img'), 'registry_protocol', /img/);
  });

  test('a descriptor digest that could traverse blob paths is registry_protocol', () => {
    for (const bad of ['sha256:../../etc', `sha256:${'a'.repeat(63)}/`, 'sha256:', 42]) {
      const m = manifestJson(MediaType.ociManifest);
      (m.layers as Record<string, unknown>[])[1]!.digest = bad;
      rejects(
        () => parseManifest(body(m), undefined, 'img'),
        'registry_protocol',
        /img layers\[1\]: descriptor digest .* is not a sha256 digest/,
      );
    }
    const idx = indexJson(MediaType.ociIndex);
    (idx.manifests as Record<string, unknown>[])[0]!.digest = 'sha256:../../etc';
    rejects(
      () => parseManifest(body(idx), undefined, 'img'),
      'registry_protocol',
      /manifests\[0\]/,
    );
    const cfg = manifestJson(MediaType.ociManifest);
    (cfg.config as Record<string, unknown>).digest = '../config';
    rejects(() => parseManifest(body(cfg), undefined, 'img'), 'registry_protocol', /img config/);
  });

  test('negative, fractional or missing sizes are registry_protocol', () => {
    for (const size of [-1, 1.5, '10', undefined]) {
      const m = manifestJson(MediaType.ociManifest);
      (m.layers as Record<string, unknown>[])[0]!.size = size;
      rejects(() => parseManifest(body(m), undefined, 'img'), 'registry_protocol', /invalid size/);
    }
  });

  test('a missing layers array or descriptor mediaType is registry_protocol', () => {
    const noLayers = manifestJson(MediaType.ociManifest);
    delete noLayers.layers;
    rejects(() => parseManifest(body(noLayers), undefined, 'img'), 'registry_protocol', /layers/);
    const noType = manifestJson(MediaType.ociManifest);
    delete (noType.layers as Record<string, unknown>[])[0]!.mediaType;
    rejects(() => parseManifest(body(noType), undefined, 'img'), 'registry_protocol', /mediaType/);
    rejects(
      () =>
        parseManifest(body({ schemaVersion: 2, mediaType: MediaType.ociIndex }), undefined, 'img'),
      'registry_protocol',
      /no manifests array/,
    );
  });

  test('an unsupported layer media type is unsupported_media_type naming the layer', () => {
    rejects(
      () =>
        parseManifest(
          body(manifestJson(MediaType.ociManifest, 'application/vnd.oci.image.layer.v1.tar+bzip2')),
          undefined,
          'img',
        ),
      'unsupported_media_type',
      new RegExp(
        `layer ${d('1')} has media type application/vnd\\.oci\\.image\\.layer\\.v1\\.tar\\+bzip2`,
      ),
    );
  });

  test('every supported layer media type is accepted', () => {
    for (const t of [
      MediaType.ociLayer,
      MediaType.ociLayerGzip,
      MediaType.ociLayerZstd,
      MediaType.dockerLayer,
      MediaType.dockerLayerGzip,
    ]) {
      assert.equal(
        parseManifest(body(manifestJson(MediaType.ociManifest, t)), undefined, 'i').kind,
        'manifest',
      );
    }
  });
});

describe('selectPlatform', () => {
  const entry = (c: string, os: string, architecture: string, variant?: string) => ({
    mediaType: MediaType.ociManifest,
    digest: d(c),
    size: 1,
    platform: { os, architecture, ...(variant ? { variant } : {}) },
  });
  const index: ImageIndex = {
    kind: 'index',
    mediaType: MediaType.ociIndex,
    manifests: [
      { mediaType: MediaType.ociManifest, digest: d('0'), size: 1 },
      entry('1', 'windows', 'amd64'),
      entry('2', 'linux', 'arm', 'v7'),
      entry('3', 'linux', 'arm64', 'v7'),
      entry('4', 'linux', 'arm64', 'v8'),
      entry('5', 'linux', 'amd64'),
      entry('6', 'unknown', 'unknown'),
    ],
  };

  test('picks linux/amd64 among several', () => {
    assert.equal(
      selectPlatform(index, { os: 'linux', architecture: 'amd64' }, 'img').digest,
      d('5'),
    );
  });

  test('matches the variant when both sides have one', () => {
    assert.equal(
      selectPlatform(index, { os: 'linux', architecture: 'arm64', variant: 'v8' }, 'img').digest,
      d('4'),
    );
  });

  test('a missing variant on either side matches', () => {
    assert.equal(
      selectPlatform(index, { os: 'linux', architecture: 'arm64' }, 'img').digest,
      d('3'),
      'host without variant takes the first arm64',
    );
    const noVariant: ImageIndex = { ...index, manifests: [entry('9', 'linux', 'arm64')] };
    assert.equal(
      selectPlatform(noVariant, { os: 'linux', architecture: 'arm64', variant: 'v8' }, 'img')
        .digest,
      d('9'),
    );
  });

  test('platform_not_found lists the available platforms', () => {
    rejects(
      () => selectPlatform(index, { os: 'linux', architecture: 'riscv64' }, 'image x'),
      'platform_not_found',
      /^image x has no image for linux\/riscv64 \(available: windows\/amd64, linux\/arm\/v7, linux\/arm64\/v7, linux\/arm64\/v8, linux\/amd64, unknown\/unknown\)$/,
    );
    rejects(
      () => selectPlatform(index, { os: 'linux', architecture: 'arm', variant: 'v6' }, 'img'),
      'platform_not_found',
      /linux\/arm\/v6/,
    );
    rejects(
      () =>
        selectPlatform({ ...index, manifests: [] }, { os: 'linux', architecture: 'amd64' }, 'img'),
      'platform_not_found',
      /available: none/,
    );
  });

  test('formatPlatform', () => {
    assert.equal(
      formatPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' }),
      'linux/arm64/v8',
    );
    assert.equal(formatPlatform({ os: 'linux', architecture: 'amd64' }), 'linux/amd64');
  });
});
