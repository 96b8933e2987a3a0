import path from 'node:path';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isVesselError } from '../../../src/core/errors.js';
import {
  buildQemuArgs,
  kernelCmdline,
  netArgs,
  qemuOptValue,
} from '../../../src/vmm/qemu/cmdline.js';
import type { UserNet, VmSpec } from '../../../src/vmm/types.js';

function spec(over: Partial<VmSpec> = {}): VmSpec {
  return {
    id: 'vm-1',
    kernel: '/k/vmlinuz',
    initrd: '/k/initrd.img',
    cmdline: ['console=ttyS0', 'panic=-1'],
    vcpus: 2,
    memoryMiB: 512,
    disks: [
      { path: '/d/root.erofs', readonly: true, serial: 'vessel-root', format: 'raw' },
      { path: '/d/overlay.ext4', readonly: false, serial: 'vessel-overlay', format: 'raw' },
      { path: '/d/config.json', readonly: true, serial: 'vessel-config', format: 'raw' },
    ],
    controlSocket: '/run/vm-1/control.sock',
    consoleSocket: '/run/vm-1/console.sock',
    serialLog: '/var/log/vm-1/serial.log',
    qmpSocket: '/run/vm-1/qmp.sock',
    accel: 'tcg',
    tscKhz: 2000000,
    workDir: '/run/vm-1',
    ...over,
  };
}

/** The value following `flag` at each occurrence. */
function values(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag) out.push(args[i + 1] ?? '');
  });
  return out;
}

void describe('buildQemuArgs', () => {
  void it('builds a microvm with ACPI, no defaults, no reboot, vCPUs stopped', () => {
    const args = buildQemuArgs(spec());
    assert.deepEqual(values(args, '-machine'), ['microvm,acpi=on']);
    for (const f of ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-S']) {
      assert.ok(args.includes(f), f);
    }
    assert.deepEqual(values(args, '-m'), ['512M']);
    assert.deepEqual(values(args, '-smp'), ['2']);
    assert.deepEqual(values(args, '-kernel'), ['/k/vmlinuz']);
    assert.deepEqual(values(args, '-initrd'), ['/k/initrd.img']);
    assert.deepEqual(values(args, '-name'), ['vessel-vm-1']);
  });

  void it('uses TCG with tsc_early_khz, KVM with -cpu host and no tsc arg', () => {
    const tcg = buildQemuArgs(spec());
    assert.deepEqual(values(tcg, '-accel'), ['tcg,tb-size=256']);
    assert.deepEqual(values(tcg, '-cpu'), []);
    assert.deepEqual(values(tcg, '-append'), ['console=ttyS0 panic=-1 tsc_early_khz=2000000']);

    const kvm = buildQemuArgs(spec({ accel: 'kvm' }));
    assert.deepEqual(values(kvm, '-accel'), ['kvm']);
    assert.deepEqual(values(kvm, '-cpu'), ['host']);
    assert.deepEqual(values(kvm, '-append'), ['console=ttyS0 panic=-1']);
  });

  void it('keeps an explicit tsc_early_khz and skips it when the frequency is unknown', () => {
    const explicit = spec({ cmdline: ['tsc_early_khz=1234'] });
    assert.equal(kernelCmdline(explicit), 'tsc_early_khz=1234');
    const { tscKhz: _omit, ...rest } = spec();
    assert.equal(kernelCmdline(rest), 'console=ttyS0 panic=-1');
  });

  void it('adds disks in order with serials and read-only flags', () => {
    const args = buildQemuArgs(spec());
    assert.deepEqual(values(args, '-drive'), [
      'file=/d/root.erofs,format=raw,if=none,id=disk0,readonly=on,cache=writeback',
      'file=/d/overlay.ext4,format=raw,if=none,id=disk1,readonly=off,cache=writeback,werror=report',
      'file=/d/config.json,format=raw,if=none,id=disk2,readonly=on,cache=writeback',
    ]);
    assert.deepEqual(
      values(args, '-device').filter((d) => d.startsWith('virtio-blk-device')),
      [
        'virtio-blk-device,drive=disk0,serial=vessel-root',
        'virtio-blk-device,drive=disk1,serial=vessel-overlay',
        'virtio-blk-device,drive=disk2,serial=vessel-config',
      ],
    );
  });

  void it('wires console, control port, QMP and rng', () => {
    const args = buildQemuArgs(spec());
    assert.deepEqual(values(args, '-chardev'), [
      'socket,id=con,path=/run/vm-1/console.sock,server=on,wait=off,logfile=/var/log/vm-1/serial.log,logappend=on',
      'socket,id=ctl,path=/run/vm-1/control.sock,server=on,wait=off',
    ]);
    assert.deepEqual(values(args, '-serial'), ['chardev:con']);
    assert.deepEqual(values(args, '-qmp'), ['unix:/run/vm-1/qmp.sock,server=on,wait=off']);
    const devices = values(args, '-device');
    assert.ok(devices.includes('virtio-serial-device'));
    assert.ok(devices.includes('virtserialport,chardev=ctl,name=vessel.control'));
    assert.ok(devices.includes('virtio-rng-device'));
    // the serial bus exists before its port
    assert.ok(
      devices.indexOf('virtio-serial-device') <
        devices.indexOf('virtserialport,chardev=ctl,name=vessel.control'),
    );
  });

  void it('escapes commas in paths', () => {
    assert.equal(qemuOptValue('/a,b/c'), '/a,,b/c');
    const args = buildQemuArgs(spec({ qmpSocket: '/run/a,b/qmp.sock' }));
    assert.deepEqual(values(args, '-qmp'), ['unix:/run/a,,b/qmp.sock,server=on,wait=off']);
  });

  void it('rejects bad input with invalid_argument', () => {
    const bad: Partial<VmSpec>[] = [
      { vcpus: 0 },
      { vcpus: 1.5 },
      { memoryMiB: 8 },
      { tscKhz: -1 },
      { cmdline: ['a\nb'] },
      { disks: [{ path: '/x', readonly: true, serial: 'has space', format: 'raw' }] },
      { disks: [{ path: '/x', readonly: true, serial: 'a'.repeat(21), format: 'raw' }] },
      {
        disks: [
          { path: '/x', readonly: true, serial: 'dup', format: 'raw' },
          { path: '/y', readonly: true, serial: 'dup', format: 'raw' },
        ],
      },
    ];
    for (const over of bad) {
      assert.throws(
        () => buildQemuArgs(spec(over)),
        (err) => isVesselError(err, 'invalid_argument'),
        JSON.stringify(over),
      );
    }
  });
});

void describe('buildQemuArgs: network', () => {
  const user = (over: Partial<UserNet> = {}): UserNet => ({
    mode: 'user',
    mac: '52:54:00:0a:0b:0c',
    stack: 'slirp',
    isolated: true,
    forwards: [],
    ...over,
  });

  void it('adds no NIC without a net spec', () => {
    const args = buildQemuArgs(spec());
    assert.deepEqual(values(args, '-netdev'), []);
    assert.equal(values(args, '-device').filter((d) => d.startsWith('virtio-net')).length, 0);
  });

  void it('user mode: slirp on the fixed subnet, IPv6 off, restricted, a virtio-mmio NIC with the MAC', () => {
    const args = buildQemuArgs(spec({ net: user() }));
    assert.deepEqual(values(args, '-netdev'), [
      'user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,ipv6=off,restrict=on',
    ]);
    assert.ok(
      values(args, '-device').includes('virtio-net-device,netdev=net0,mac=52:54:00:0a:0b:0c'),
    );
    // The backend is declared before the device that uses it.
    assert.ok(
      args.indexOf('-netdev') < args.indexOf('virtio-net-device,netdev=net0,mac=52:54:00:0a:0b:0c'),
    );
  });

  void it('user mode with egress: a stream netdev to passt beside the QMP socket, never slirp', () => {
    const s = spec({ net: user({ isolated: false, stack: 'passt' }) });
    const args = buildQemuArgs(s);
    assert.deepEqual(values(args, '-netdev'), [
      `stream,id=net0,server=off,addr.type=unix,addr.path=${path.join(path.dirname(s.qmpSocket), 'passt.sock')}`,
    ]);
    assert.ok(!args.some((a) => a.startsWith('user,')), 'no slirp netdev');
    assert.ok(
      values(args, '-device').includes('virtio-net-device,netdev=net0,mac=52:54:00:0a:0b:0c'),
    );
    // passt has no isolated mode: an isolated NIC on it is a bug, refused.
    assert.throws(
      () => buildQemuArgs(spec({ net: user({ isolated: true, stack: 'passt' }) })),
      (err) => isVesselError(err, 'invalid_argument'),
    );
  });

  void it('publishes tcp and udp ports to the guest address', () => {
    const args = buildQemuArgs(
      spec({
        net: user({
          forwards: [
            { protocol: 'tcp', hostIp: '127.0.0.1', hostPort: 18080, guestPort: 80 },
            { protocol: 'udp', hostIp: '0.0.0.0', hostPort: 5353, guestPort: 53 },
            { protocol: 'tcp', hostIp: '127.0.0.1', hostPort: 2222, guestPort: 22 },
          ],
        }),
      }),
    );
    const [netdev] = values(args, '-netdev');
    assert.equal(
      netdev,
      'user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,ipv6=off,restrict=on,' +
        'hostfwd=tcp:127.0.0.1:18080-10.0.2.15:80,hostfwd=udp:0.0.0.0:5353-10.0.2.15:53,' +
        'hostfwd=tcp:127.0.0.1:2222-10.0.2.15:22',
    );
    assert.deepEqual(netArgs(user()), [
      '-netdev',
      'user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,ipv6=off,restrict=on',
      '-device',
      'virtio-net-device,netdev=net0,mac=52:54:00:0a:0b:0c',
    ]);
  });

  void it('rejects a bad MAC, bad ports, a non-IPv4 host address and a host port used twice', () => {
    const fwd = { protocol: 'tcp', hostIp: '127.0.0.1', hostPort: 8080, guestPort: 80 } as const;
    const bad: UserNet[] = [
      user({ mac: '52:54:00:0A:0B:0C' }),
      user({ mac: '52:54:00:0a:0b' }),
      user({ forwards: [{ ...fwd, hostPort: 0 }] }),
      user({ forwards: [{ ...fwd, guestPort: 65536 }] }),
      user({ forwards: [{ ...fwd, hostPort: 80.5 }] }),
      user({ forwards: [{ ...fwd, hostIp: '::1' }] }),
      user({ forwards: [{ ...fwd, hostIp: '127.0.0.1,restrict=off' }] }),
      user({ forwards: [fwd, { ...fwd, guestPort: 81 }] }),
    ];
    for (const net of bad) {
      assert.throws(
        () => buildQemuArgs(spec({ net })),
        (err) => isVesselError(err, 'invalid_argument'),
        JSON.stringify(net),
      );
    }
    // The same host port on tcp and udp is two different sockets.
    const ok = buildQemuArgs(spec({ net: user({ forwards: [fwd, { ...fwd, protocol: 'udp' }] }) }));
    assert.match(values(ok, '-netdev')[0] ?? '', /hostfwd=udp:127\.0\.0\.1:8080-10\.0\.2\.15:80$/);
  });

  void it('tap mode: opens the prepared TAP by name with no scripts, same virtio-mmio NIC', () => {
    const tap = { mode: 'tap', mac: '52:54:00:0a:0b:0c', ifname: 'vt0123456789ab' } as const;
    assert.deepEqual(netArgs(tap), [
      '-netdev',
      'tap,id=net0,ifname=vt0123456789ab,script=no,downscript=no',
      '-device',
      'virtio-net-device,netdev=net0,mac=52:54:00:0a:0b:0c',
    ]);
    assert.deepEqual(values(buildQemuArgs(spec({ net: tap })), '-netdev'), [
      'tap,id=net0,ifname=vt0123456789ab,script=no,downscript=no',
    ]);
    for (const ifname of ['', 'vt0123456789abcd', 'vt0,script=/x', 'a b']) {
      assert.throws(
        () => buildQemuArgs(spec({ net: { ...tap, ifname } })),
        (err) => isVesselError(err, 'invalid_argument'),
        ifname,
      );
    }
    assert.throws(
      () => buildQemuArgs(spec({ net: { ...tap, mac: 'zz' } })),
      (err) => isVesselError(err, 'invalid_argument'),
    );
  });

  void it('a disk I/O limit puts every disk in one throttle group; none without it', () => {
    const limited = values(buildQemuArgs(spec({ diskIoBps: 2_097_152 })), '-drive');
    assert.ok(limited.length > 0);
    for (const d of limited) {
      assert.match(d, /,throttling\.bps-total=2097152,throttling\.group=vessel-io$/);
    }
    for (const d of values(buildQemuArgs(spec()), '-drive')) assert.doesNotMatch(d, /throttling/);
    assert.throws(() => buildQemuArgs(spec({ diskIoBps: 0 })), /diskIoBps/);
  });

  void it('confined: the seccomp sandbox, and the TAP from an inherited fd', () => {
    const tap = { mode: 'tap' as const, mac: '52:54:00:12:34:56', ifname: 'vt0' };
    const args = buildQemuArgs(spec({ net: tap }), { sandbox: true, tapFd: 3 });
    assert.deepEqual(values(args, '-sandbox'), [
      'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
    ]);
    assert.deepEqual(values(args, '-netdev'), ['tap,id=net0,fd=3']);
    const open = buildQemuArgs(spec({ net: tap }));
    assert.deepEqual(values(open, '-sandbox'), []);
    assert.match(values(open, '-netdev')[0] ?? '', /ifname=vt0,script=no/);
  });
});
