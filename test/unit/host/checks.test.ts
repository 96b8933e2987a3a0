import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildChecks, type Check, type HostFacts } from '../../../src/host/checks.js';

const GiB = 1024 ** 3;

function facts(over: Partial<HostFacts> = {}): HostFacts {
  return {
    resources: {
      cpus: 2,
      memory_bytes: 8 * GiB,
      memory_free_bytes: 6 * GiB,
      disk: { path: '/var/lib/vessel', total_bytes: 100 * GiB, free_bytes: 50 * GiB },
      arch: 'x86_64',
      kernel: '6.1.0',
    },
    qemu: {
      path: '/usr/bin/qemu-system-x86_64',
      version: { text: '7.2.22', major: 7, minor: 2 },
      machines: ['microvm', 'pc'],
    },
    accelerators: {
      kvm: {
        usable: true,
        reason: 'KVM ran the probe payload in 12 ms',
        device_present: true,
        kvm_ms: 12,
        tcg_ms: 300,
      },
      tcg: { usable: true, reason: 'TCG ran the probe payload in 300 ms', ms: 300 },
    },
    tun: { present: true },
    vsock: { present: false },
    erofs: { path: '/usr/bin/mkfs.erofs', compressors: ['lz4hc', 'lz4'] },
    ext4: { path: '/usr/sbin/mkfs.ext4', version: { text: '1.47.0', major: 1, minor: 47 } },
    firecracker: {
      path: '/usr/local/bin/firecracker',
      version: { text: '1.7.0', major: 1, minor: 7 },
    },
    cloudHypervisor: { path: null, version: null },
    ...over,
  };
}

function byId(checks: Check[], id: string): Check {
  const c = checks.find((x) => x.id === id);
  assert.ok(c, `check ${id} exists`);
  return c;
}

void describe('buildChecks', () => {
  void it('gives every check a status and a fix exactly when it is not ok', () => {
    const checks = buildChecks(facts());
    assert.deepEqual(
      checks.map((c) => c.id),
      [
        'qemu',
        'qemu-microvm',
        'kvm',
        'tcg',
        'tun',
        'vsock',
        'mkfs-erofs',
        'mkfs-ext4',
        'disk',
        'firecracker',
        'cloud-hypervisor',
      ],
    );
    for (const c of checks) {
      assert.equal(c.fix !== undefined, c.status !== 'ok', `${c.id}: ${c.status} ${c.fix ?? ''}`);
      assert.ok(c.detail.length > 0);
    }
    assert.equal(byId(checks, 'qemu').detail, 'QEMU 7.2.22 at /usr/bin/qemu-system-x86_64');
    assert.equal(byId(checks, 'firecracker').status, 'ok');
    assert.equal(byId(checks, 'cloud-hypervisor').status, 'warn');
    assert.match(byId(checks, 'cloud-hypervisor').detail, /optional backend/);
  });

  void it('fails QEMU, microvm and TCG with the apt-get fix when QEMU is missing', () => {
    const reason = 'qemu-system-x86_64 is not installed, so no accelerator can be tried';
    const checks = buildChecks(
      facts({
        qemu: { path: null, version: null, machines: [] },
        accelerators: {
          kvm: { usable: false, reason, device_present: true },
          kvmProblem: 'no-qemu',
          tcg: { usable: false, reason },
        },
      }),
    );
    for (const id of ['qemu', 'qemu-microvm', 'tcg']) {
      assert.equal(byId(checks, id).status, 'fail', id);
      assert.match(byId(checks, id).fix ?? '', /apt-get install qemu-system-x86/);
    }
    assert.equal(byId(checks, 'kvm').status, 'warn');
  });

  void it('fails microvm when QEMU lacks the machine', () => {
    const qemu = {
      path: '/usr/bin/qemu-system-x86_64',
      version: { text: '4.0.0', major: 4, minor: 0 },
      machines: ['pc'],
    };
    const checks = buildChecks(facts({ qemu }));
    assert.equal(byId(checks, 'qemu-microvm').status, 'fail');
    assert.equal(byId(checks, 'qemu').status, 'warn');
  });

  void it('warns about an unusable KVM with a fix that matches the cause', () => {
    const tcg = { usable: true, reason: 'TCG ran the probe payload in 300 ms', ms: 300 };
    const slow = buildChecks(
      facts({
        accelerators: {
          kvm: {
            usable: false,
            reason: 'did not finish within 3000 ms',
            device_present: true,
            tcg_ms: 300,
          },
          kvmProblem: 'slow',
          tcg,
        },
      }),
    );
    assert.equal(byId(slow, 'kvm').status, 'warn');
    assert.match(byId(slow, 'kvm').detail, /instances run under TCG/);
    assert.match(byId(slow, 'kvm').fix ?? '', /hardware speed/);

    const perm = buildChecks(
      facts({
        accelerators: {
          kvm: {
            usable: false,
            reason: '/dev/kvm exists but uid 1000 cannot open it',
            device_present: true,
          },
          kvmProblem: 'no-access',
          tcg,
        },
      }),
    );
    assert.match(byId(perm, 'kvm').fix ?? '', /usermod -aG kvm/);

    const none = buildChecks(
      facts({
        accelerators: {
          kvm: { usable: false, reason: '/dev/kvm does not exist', device_present: false },
          kvmProblem: 'no-device',
          tcg,
        },
      }),
    );
    assert.match(byId(none, 'kvm').fix ?? '', /modprobe kvm_intel/);
  });

  void it('warns when mkfs.erofs lacks lz4 or is missing, and fails without mkfs.ext4', () => {
    const noLz4 = buildChecks(
      facts({ erofs: { path: '/usr/bin/mkfs.erofs', compressors: ['lzma'] } }),
    );
    assert.equal(byId(noLz4, 'mkfs-erofs').status, 'warn');
    assert.match(byId(noLz4, 'mkfs-erofs').detail, /ext4 instead/);

    const missing = buildChecks(
      facts({ erofs: { path: null, compressors: [] }, ext4: { path: null, version: null } }),
    );
    assert.equal(byId(missing, 'mkfs-erofs').fix, 'apt-get install erofs-utils');
    assert.equal(byId(missing, 'mkfs-ext4').status, 'fail');
    assert.equal(byId(missing, 'mkfs-ext4').fix, 'apt-get install e2fsprogs');
  });

  void it('warns about /dev/net/tun without failing (user-mode networking remains)', () => {
    const checks = buildChecks(facts({ tun: { present: false } }));
    assert.equal(byId(checks, 'tun').status, 'warn');
    assert.match(byId(checks, 'tun').fix ?? '', /modprobe tun/);
  });

  void it('grades free disk: ok at 5 GiB, warn below, fail below 1 GiB', () => {
    const withFree = (free: number): Check => {
      const base = facts();
      return byId(
        buildChecks(
          facts({
            resources: { ...base.resources, disk: { ...base.resources.disk, free_bytes: free } },
          }),
        ),
        'disk',
      );
    };
    assert.equal(withFree(5 * GiB).status, 'ok');
    assert.equal(withFree(5 * GiB - 1).status, 'warn');
    assert.equal(withFree(1 * GiB).status, 'warn');
    assert.equal(withFree(1 * GiB - 1).status, 'fail');
    assert.match(withFree(0).detail, /0\.0 GiB free/);
  });
});
