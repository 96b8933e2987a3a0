// The P1 baseline: QEMU started by hand (no Vessel code on the path) with the
// same VM as Vessel boots, timed from spawn() to a boot marker on its console.
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { MarkerParser } from '../../src/guest/index.js';
import { TCG_TB_SIZE_MIB } from '../../src/vmm/qemu/cmdline.js';

/**
 * The guest kernel arguments, written out by hand. p1-boot.ts fails its setup
 * when they drift from Vessel's GUEST_KERNEL_ARGS, so both sides boot the same
 * command line.
 */
export const BARE_KERNEL_ARGS: readonly string[] = [
  'console=ttyS0',
  'panic=-1',
  'quiet',
  'loglevel=0',
  'i8042.noaux',
  'i8042.nopnp',
  '8250.nr_uarts=1',
  'mitigations=off',
  'random.trust_cpu=on',
  'cryptomgr.notests',
  'no_timer_check',
];

export interface BareVm {
  readonly kernel: string;
  readonly initrd: string;
  /** Read-only image disk (serial vessel-root). */
  readonly rootDisk: string;
  /** Writable overlay disk (serial vessel-overlay). */
  readonly overlayDisk: string;
  /** Config disk (serial vessel-config). */
  readonly configDisk: string;
  /** Host end of the `vessel.control` virtio-serial port (a unix socket QEMU creates). */
  readonly controlSocket: string;
  readonly accel: 'tcg' | 'kvm';
  readonly tscKhz: number;
  readonly vcpus: number;
  readonly memoryMiB: number;
}

/**
 * The QEMU command line, by hand: the same machine, accelerator, memory,
 * vCPUs, kernel, initramfs, kernel arguments, disks (same serials), control
 * port and RNG as Vessel's VMs. Not here, because they are Vessel's control
 * plane rather than the VM: `-S` + QMP (Vessel starts paused and sends `cont`
 * once it follows the console) and the console socket with its log file (this
 * VM writes its console to stdout).
 */
export function bareQemuArgv(vm: BareVm): string[] {
  const append = [...BARE_KERNEL_ARGS];
  if (vm.accel === 'tcg') append.push(`tsc_early_khz=${vm.tscKhz}`);
  const drive = (file: string, id: string, ro: boolean, serial: string): string[] => [
    '-drive',
    `file=${file},format=raw,if=none,id=${id},readonly=${ro ? 'on' : 'off'},cache=writeback`,
    '-device',
    `virtio-blk-device,drive=${id},serial=${serial}`,
  ];
  return [
    '-name',
    'p1-baseline',
    '-machine',
    'microvm,acpi=on',
    ...(vm.accel === 'kvm'
      ? ['-accel', 'kvm', '-cpu', 'host']
      : ['-accel', `tcg,tb-size=${TCG_TB_SIZE_MIB}`]),
    '-m',
    `${vm.memoryMiB}M`,
    '-smp',
    String(vm.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-kernel',
    vm.kernel,
    '-initrd',
    vm.initrd,
    '-append',
    append.join(' '),
    '-chardev',
    'stdio,id=con,signal=off',
    '-serial',
    'chardev:con',
    ...drive(vm.rootDisk, 'disk0', true, 'vessel-root'),
    ...drive(vm.overlayDisk, 'disk1', false, 'vessel-overlay'),
    ...drive(vm.configDisk, 'disk2', true, 'vessel-config'),
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=ctl,path=${vm.controlSocket},server=on,wait=off`,
    '-device',
    'virtserialport,chardev=ctl,name=vessel.control',
    '-device',
    'virtio-rng-device',
  ];
}

/**
 * Spawn `qemu-system-x86_64 argv` and resolve once `agent-ready` is on its
 * console, with the times (performance.now()) of spawn, program-start and
 * agent-ready. `onChild` gets the process right away; the caller kills it.
 */
export async function bootBareQemu(
  argv: readonly string[],
  timeoutMs: number,
  onChild: (child: ChildProcess) => void,
): Promise<{ spawnedAt: number; programStartAt: number; agentReadyAt: number }> {
  const spawnedAt = performance.now();
  const child = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  onChild(child);
  return new Promise((resolve, reject) => {
    const parser = new MarkerParser();
    let programStartAt: number | undefined;
    let stderr = '';
    const timer = setTimeout(
      () => reject(new Error(`baseline VM: no agent-ready within ${timeoutMs} ms`)),
      timeoutMs,
    );
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.on('data', (chunk: Buffer) => {
      const now = performance.now();
      for (const m of parser.push(chunk).markers) {
        if (m.kind === 'program-start') programStartAt ??= now;
        if (m.kind === 'failed') reject(new Error(`baseline VM boot failed: ${m.reason}`));
        if (m.kind === 'agent-ready') {
          clearTimeout(timer);
          resolve({ spawnedAt, programStartAt: programStartAt ?? now, agentReadyAt: now });
        }
      }
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`baseline QEMU exited (${code ?? signal}): ${stderr.trim()}`));
    });
  });
}
