import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { errnoCode, errorMessage } from '../core/errors.js';
import { buildProbePayload, DEFAULT_PAYLOAD } from './bios-payload.js';
import { runPayload, type PayloadRun, type PayloadStage } from './payload-run.js';

/** Whether KVM can run guest code here, decided by running some. */
export interface KvmProbe {
  usable: boolean;
  /** One sentence a human can act on, with the measured numbers. */
  reason: string;
  /** /dev/kvm exists (says nothing about whether it works). */
  device_present: boolean;
  /** Payload time under KVM, 'L' → 'D', when it finished. */
  kvm_ms?: number;
  /** The same payload under TCG, when it finished. */
  tcg_ms?: number;
  /** The `-cpu` model the KVM run used: `host`, or `default` when `-cpu host` made QEMU fail. */
  cpu?: 'host' | 'default';
}

export interface TcgProbe {
  usable: boolean;
  reason: string;
  ms?: number;
}

/** Why KVM is not usable, for choosing the fix; absent when it is usable. */
export type KvmProblem = 'no-qemu' | 'no-device' | 'no-access' | 'failed' | 'slow';

export interface AcceleratorProbe {
  kvm: KvmProbe;
  kvmProblem?: KvmProblem;
  tcg: TcgProbe;
}

export interface AcceleratorProbeOptions {
  /** qemu-system-x86_64, or null when it is not installed. */
  readonly qemu: string | null;
  /** `microvm` when QEMU has it, else `pc`. */
  readonly machine: string;
  readonly kvmDevice?: string;
}

/** KVM must finish the payload within this long after reaching long mode. */
export const KVM_DEADLINE_MS = 3000;
/** KVM slower than TCG by more than this factor counts as broken. */
export const KVM_MAX_SLOWDOWN = 2;
const TCG_DEADLINE_MS = 5000;
const STARTUP_MS = 5000;

const STAGE_TEXT: Record<PayloadStage, string> = {
  none: 'before the firmware wrote anything',
  'real-mode': 'in real mode, before long mode',
  'long-mode': 'in long mode',
  done: 'after finishing',
};

interface DeviceState {
  present: boolean;
  problem?: { kind: 'no-device' | 'no-access'; text: string };
}

async function inspectDevice(device: string): Promise<DeviceState> {
  try {
    const st = await fs.stat(device);
    if (!st.isCharacterDevice()) {
      return {
        present: true,
        problem: { kind: 'no-device', text: `${device} is not a character device` },
      };
    }
  } catch (err) {
    const text =
      errnoCode(err) === 'ENOENT'
        ? `${device} does not exist (no hardware virtualisation, or the kvm module is not loaded)`
        : `cannot stat ${device}: ${errorMessage(err)}`;
    return { present: false, problem: { kind: 'no-device', text } };
  }
  try {
    const fh = await fs.open(device, 'r+');
    await fh.close();
    return { present: true };
  } catch (err) {
    const uid = process.getuid?.() ?? -1;
    const why = errnoCode(err) ?? errorMessage(err);
    return {
      present: true,
      problem: {
        kind: 'no-access',
        text: `${device} exists but uid ${uid} cannot open it read-write (${why})`,
      },
    };
  }
}

function failureText(accel: string, run: PayloadRun, deadlineMs: number): string {
  if (run.outcome === 'timeout') {
    return run.stage === 'long-mode'
      ? `the probe payload did not finish within ${deadlineMs} ms under ${accel} (it reached long mode)`
      : `the probe payload stalled under ${accel} ${STAGE_TEXT[run.stage]}`;
  }
  const how = run.exitCode === null ? 'was killed' : `exited with code ${run.exitCode}`;
  return `qemu ${how} under ${accel} ${STAGE_TEXT[run.stage]}${run.stderr ? `: ${run.stderr}` : ''}`;
}

function judgeKvm(
  run: PayloadRun,
  tcg: TcgProbe,
  cpu: 'host' | 'default',
): { kvm: KvmProbe; kvmProblem?: KvmProblem } {
  const base = { device_present: true, cpu, ...(tcg.ms === undefined ? {} : { tcg_ms: tcg.ms }) };
  const tcgText = tcg.ms === undefined ? 'TCG did not finish it' : `TCG took ${tcg.ms} ms`;
  if (run.outcome !== 'done' || run.ms === undefined) {
    const reason = `${failureText('KVM', run, KVM_DEADLINE_MS)}; ${tcgText}`;
    return {
      kvm: { ...base, usable: false, reason },
      kvmProblem: run.outcome === 'timeout' ? 'slow' : 'failed',
    };
  }
  const kvm_ms = run.ms;
  if (tcg.ms !== undefined && kvm_ms > tcg.ms * KVM_MAX_SLOWDOWN) {
    const factor = (kvm_ms / Math.max(tcg.ms, 0.1)).toFixed(1);
    const reason = `KVM ran the probe payload in ${kvm_ms} ms, ${factor}x slower than TCG (${tcg.ms} ms): guest code is not running at hardware speed`;
    return { kvm: { ...base, kvm_ms, usable: false, reason }, kvmProblem: 'slow' };
  }
  return {
    kvm: {
      ...base,
      kvm_ms,
      usable: true,
      reason: `KVM ran the probe payload in ${kvm_ms} ms (${tcgText})`,
    },
  };
}

async function probe(options: AcceleratorProbeOptions): Promise<AcceleratorProbe> {
  const device = await inspectDevice(options.kvmDevice ?? '/dev/kvm');
  if (options.qemu === null) {
    const reason = 'qemu-system-x86_64 is not installed, so no accelerator can be tried';
    return {
      kvm: { usable: false, device_present: device.present, reason },
      kvmProblem: 'no-qemu',
      tcg: { usable: false, reason },
    };
  }
  const qemu = options.qemu;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-accel-probe-'));
  try {
    const biosPath = path.join(dir, 'probe-bios.bin');
    await fs.writeFile(biosPath, buildProbePayload(DEFAULT_PAYLOAD));
    const common = { qemu, machine: options.machine, biosPath, startupMs: STARTUP_MS };

    // TCG first: it is the baseline KVM is judged against, and a fact of its own.
    const tcgRun = await runPayload({ ...common, accel: 'tcg', deadlineMs: TCG_DEADLINE_MS });
    const tcg: TcgProbe =
      tcgRun.outcome === 'done' && tcgRun.ms !== undefined
        ? { usable: true, ms: tcgRun.ms, reason: `TCG ran the probe payload in ${tcgRun.ms} ms` }
        : { usable: false, reason: failureText('TCG', tcgRun, TCG_DEADLINE_MS) };

    if (device.problem !== undefined) {
      return {
        kvm: { usable: false, device_present: device.present, reason: device.problem.text },
        kvmProblem: device.problem.kind,
        tcg,
      };
    }
    // `-cpu host` is what a guest should get on a working KVM. If QEMU dies
    // with it, try QEMU's default model before calling KVM broken. A timeout
    // is not retried: slowness does not depend on the CPU model.
    let run = await runPayload({
      ...common,
      accel: 'kvm',
      cpu: 'host',
      deadlineMs: KVM_DEADLINE_MS,
    });
    let cpu: 'host' | 'default' = 'host';
    if (run.outcome === 'exited') {
      run = await runPayload({ ...common, accel: 'kvm', deadlineMs: KVM_DEADLINE_MS });
      cpu = 'default';
    }
    return { ...judgeKvm(run, tcg, cpu), tcg };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

let cached: { key: string; result: Promise<AcceleratorProbe> } | undefined;

/**
 * Try KVM and TCG with the probe payload. The result is cached for the life
 * of the process (one probe costs a few seconds on a broken KVM); `refresh`
 * runs it again. Concurrent callers share one probe.
 */
export function probeAccelerators(
  options: AcceleratorProbeOptions,
  refresh = false,
): Promise<AcceleratorProbe> {
  const key = `${options.qemu ?? ''}|${options.machine}|${options.kvmDevice ?? ''}`;
  if (!refresh && cached?.key === key) return cached.result;
  const result = probe(options);
  const entry = { key, result };
  cached = entry;
  // A probe that throws (e.g. no temp dir) is not cached.
  result.catch(() => {
    if (cached === entry) cached = undefined;
  });
  return result;
}
