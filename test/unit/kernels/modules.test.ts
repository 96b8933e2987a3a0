// modules.dep parsing and load-order resolution, from a fixture shaped like
// Debian 12's cloud kernel.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import {
  moduleName,
  parseModulesBuiltin,
  parseModulesDep,
  resolveLoadOrder,
} from '../../../src/kernels/modules.js';
import { catalogEntry } from '../../../src/kernels/catalog.js';
import { parseImageDepends } from '../../../src/kernels/source.js';

const FIXTURE = `kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/lib/libcrc32c.ko:
kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko
kernel/fs/overlayfs/overlay.ko:
`;

const base = (p: string): string => p.slice(p.lastIndexOf('/') + 1);

describe('modules', () => {
  test('moduleName normalises paths, extensions and dashes', () => {
    assert.equal(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko.xz'), 'virtio_rng');
    assert.equal(moduleName('virtio-rng'), 'virtio_rng');
    assert.equal(moduleName('a/b/erofs.ko.zst'), 'erofs');
    assert.equal(moduleName('overlay.ko'), 'overlay');
  });

  test('load order puts every dependency first, each module once', () => {
    const deps = parseModulesDep(FIXTURE);
    const { order, builtin } = resolveLoadOrder(
      deps,
      ['virtio_blk', 'virtio-net', 'virtio_rng', 'erofs', 'overlay', 'ext4'],
      parseModulesBuiltin('kernel/fs/ext4/ext4.ko\n'),
    );
    assert.deepEqual(order.map(base), [
      'virtio_ring.ko',
      'virtio.ko',
      'virtio_blk.ko',
      'failover.ko',
      'net_failover.ko',
      'virtio_net.ko',
      'virtio-rng.ko.xz',
      'libcrc32c.ko',
      'erofs.ko',
      'overlay.ko',
    ]);
    assert.deepEqual(builtin, ['ext4']);
    for (const [i, p] of order.entries()) {
      for (const d of deps.get(moduleName(p))!.deps) {
        assert.ok(order.indexOf(d) < i, `${d} loads before ${p}`);
      }
    }
  });

  test('an unknown module is not_found and names who needed it', () => {
    const deps = parseModulesDep('a.ko: missing.ko\n');
    assert.throws(
      () => resolveLoadOrder(deps, ['nope']),
      (e) => isVesselError(e, 'not_found') && e.message.includes('"nope"'),
    );
    assert.throws(
      () => resolveLoadOrder(deps, ['a']),
      (e) => isVesselError(e, 'not_found') && e.message.includes('needed by a'),
    );
  });

  test('a cycle and a malformed line are rejected', () => {
    assert.throws(
      () => resolveLoadOrder(parseModulesDep('a.ko: b.ko\nb.ko: a.ko\n'), ['a']),
      (e) => isVesselError(e, 'invalid_argument'),
    );
    assert.throws(
      () => parseModulesDep('no colon here\n'),
      (e) => isVesselError(e, 'invalid_argument'),
    );
  });

  test('apt-cache depends output resolves the meta package', () => {
    const out = 'linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n';
    assert.equal(parseImageDepends(out), 'linux-image-6.1.0-56-cloud-amd64');
    assert.equal(parseImageDepends('foo\n  Depends: libc6\n'), undefined);
  });

  test('the catalog knows debian-cloud-6.1 and refuses bad names', () => {
    assert.equal(catalogEntry('debian-cloud-6.1').source.type, 'apt');
    assert.throws(
      () => catalogEntry('nope'),
      (e) => isVesselError(e, 'not_found'),
    );
    assert.throws(
      () => catalogEntry('../x'),
      (e) => isVesselError(e, 'invalid_argument'),
    );
  });
});
