import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chooseLayout, limitFiles, parseMountinfo } from '../../../src/vmm/cgroups.js';
import { jailedCommand, type Confinement } from '../../../src/vmm/jail.js';
import type { VmSpec } from '../../../src/vmm/types.js';

// A hybrid host (this one): v1 controllers and an empty v2 tree at /sys/fs/cgroup/unified.
const HYBRID = [
  '30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755',
  '31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec shared:10 - cgroup2 cgroup2 rw,nsdelegate',
  '34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory',
  '35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct',
  '36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:17 - cgroup cgroup rw,pids',
  '37 30 0:33 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,blkio',
].join('\n');
const PURE_V2 =
  '29 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot';

void describe('cgroup layout detection', () => {
  void it('a hybrid host uses the v1 controllers, not the empty v2 tree', async () => {
    const mounts = parseMountinfo(HYBRID);
    assert.ok(
      mounts.some((m) => m.point === '/sys/fs/cgroup/my dir'),
      'octal escapes decoded',
    );
    const layout = await chooseLayout(mounts, () => Promise.resolve(''));
    assert.deepEqual(layout, {
      version: 'v1',
      mounts: {
        memory: '/sys/fs/cgroup/memory',
        cpu: '/sys/fs/cgroup/cpu,cpuacct',
        pids: '/sys/fs/cgroup/pids',
      },
      controllers: ['memory', 'cpu', 'pids'],
    });
  });

  void it('a pure v2 host uses the unified tree for every controller it offers', async () => {
    const layout = await chooseLayout(parseMountinfo(PURE_V2), () =>
      Promise.resolve('cpuset cpu io memory hugetlb pids rdma misc\n'),
    );
    assert.equal(layout?.version, 'v2');
    assert.deepEqual(layout?.controllers, ['memory', 'cpu', 'pids']);
    assert.equal(layout?.mounts.memory, '/sys/fs/cgroup');
  });

  void it('no controllers anywhere: null (limits are skipped, doctor warns)', async () => {
    assert.equal(await chooseLayout(parseMountinfo(''), () => Promise.resolve('')), null);
  });

  void it('limits are written in each version’s own files', () => {
    const limits = {
      memoryBytes: 640 << 20,
      cpuQuotaUs: 200_000,
      cpuPeriodUs: 100_000,
      pidsMax: 512,
    };
    assert.deepEqual(limitFiles('v2', limits).cpu, [['cpu.max', '200000 100000']]);
    assert.deepEqual(limitFiles('v2', limits).memory[0], ['memory.max', String(640 << 20)]);
    assert.deepEqual(limitFiles('v1', limits).cpu, [
      ['cpu.cfs_period_us', '100000'],
      ['cpu.cfs_quota_us', '200000'],
    ]);
    assert.deepEqual(limitFiles('v1', limits).pids, [['pids.max', '512']]);
  });
});

const C: Confinement = {
  jailer: '/opt/vessel-jailer',
  rootDir: '/var/lib/vessel/jail',
  cgroups: null,
};

function spec(over: Partial<VmSpec> = {}): VmSpec {
  const dir = '/var/lib/vessel/instances/abc';
  return {
    id: 'abc',
    kernel: '/var/lib/vessel/kernels/k/vmlinuz',
    initrd: '/var/lib/vessel/initramfs/x.cpio',
    cmdline: [],
    vcpus: 1,
    memoryMiB: 256,
    disks: [
      { path: '/var/lib/vessel/images/d/rootfs.erofs', readonly: true, serial: 'r', format: 'raw' },
      { path: `${dir}/overlay.ext4`, readonly: false, serial: 'o', format: 'raw' },
      { path: '/var/lib/vessel/volumes/v.ext4', readonly: false, serial: 'v', format: 'raw' },
    ],
    controlSocket: `${dir}/vmm/control.sock`,
    consoleSocket: `${dir}/vmm/console.sock`,
    serialLog: `${dir}/vmm/serial.log`,
    qmpSocket: `${dir}/vmm/qmp.sock`,
    accel: 'tcg',
    workDir: dir,
    ...over,
  };
}

function pairs(args: readonly string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? ''] : []));
}

void describe('the jailer command line', () => {
  const jail = { uid: 200_005, gid: 200_005 };

  void it('binds only what the VM needs, read-only unless it writes it', async () => {
    const s = spec();
    const cmd = await jailedCommand(
      C,
      s,
      jail,
      '/var/lib/vessel/instances/abc/vmm',
      '/usr/bin/qemu',
      ['-S'],
    );
    assert.equal(cmd.file, '/opt/vessel-jailer');
    assert.deepEqual(pairs(cmd.args, '--uid'), ['200005']);
    assert.deepEqual(pairs(cmd.args, '--root'), ['/var/lib/vessel/jail']);
    const rw = pairs(cmd.args, '--rw');
    assert.deepEqual(rw.sort(), [
      '/var/lib/vessel/instances/abc/overlay.ext4',
      '/var/lib/vessel/instances/abc/vmm',
      '/var/lib/vessel/volumes/v.ext4',
    ]);
    const ro = pairs(cmd.args, '--ro');
    for (const p of [s.kernel, s.initrd, '/var/lib/vessel/images/d/rootfs.erofs', '/usr']) {
      assert.ok(ro.includes(p), `${p} is bound read-only`);
    }
    assert.ok(!ro.some((p) => p.startsWith('/var/lib/vessel/instances/abc/vmm')));
    assert.ok(!pairs(cmd.args, '--dev').includes('/dev/kvm'), 'no /dev/kvm under TCG');
    assert.deepEqual(pairs(cmd.args, '--keep-cap'), []);
    assert.deepEqual(cmd.args.slice(cmd.args.indexOf('--')), ['--', '/usr/bin/qemu', '-S']);
    assert.equal(cmd.cgroup, null);
  });

  void it('a TAP is opened by the jailer; a low published port keeps net_bind_service alone', async () => {
    const tap = await jailedCommand(
      C,
      spec({ net: { mode: 'tap', mac: '52:54:00:00:00:01', ifname: 'vt1' } }),
      jail,
      '/r',
      '/q',
      [],
      { name: 'vt1', fd: 3 },
    );
    assert.deepEqual(pairs(tap.args, '--tap'), ['vt1:3']);
    const user = (hostPort: number) =>
      spec({
        net: {
          mode: 'user',
          mac: '52:54:00:00:00:01',
          stack: 'slirp',
          isolated: true,
          forwards: [{ protocol: 'tcp', hostIp: '127.0.0.1', hostPort, guestPort: 80 }],
        },
      });
    const low = await jailedCommand(C, user(80), jail, '/r', '/q', []);
    assert.deepEqual(pairs(low.args, '--keep-cap'), ['net_bind_service']);
    const high = await jailedCommand(C, user(8080), jail, '/r', '/q', []);
    assert.deepEqual(pairs(high.args, '--keep-cap'), []);
  });
});
