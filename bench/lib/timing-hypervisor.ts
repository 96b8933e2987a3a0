// A stopwatch around a real Hypervisor, for benchmarks.
import { performance } from 'node:perf_hooks';
import { MarkerParser } from '../../src/guest/index.js';
import { buildQemuArgs, type Hypervisor, type VmHandle, type VmSpec } from '../../src/vmm/index.js';

/** When things happened to one VM (performance.now() values), and its QEMU argv. */
export interface VmTimes {
  spawnAt?: number;
  startedAt?: number;
  programStartAt?: number;
  agentReadyAt?: number;
  argv?: string[];
}

/**
 * The real backend with a stopwatch: it records when the manager asks for the
 * VM, when `start()` returns (the VM is up), and when each boot marker crosses
 * the console (on its own listener, next to the manager's). It changes nothing
 * the manager sees.
 */
export class TimingHypervisor implements Hypervisor {
  readonly name: Hypervisor['name'];
  /** By VM id (the instance id). */
  readonly times = new Map<string, VmTimes>();

  constructor(private readonly inner: Hypervisor) {
    this.name = inner.name;
  }

  capabilities(): ReturnType<Hypervisor['capabilities']> {
    return this.inner.capabilities();
  }

  adopt(...args: Parameters<Hypervisor['adopt']>): Promise<VmHandle> {
    return this.inner.adopt(...args);
  }

  async start(spec: VmSpec): Promise<VmHandle> {
    const t: VmTimes = { spawnAt: performance.now(), argv: buildQemuArgs(spec) };
    this.times.set(spec.id, t);
    const handle = await this.inner.start(spec);
    t.startedAt = performance.now();
    const parser = new MarkerParser();
    const off = handle.onConsole((chunk) => {
      for (const m of parser.push(chunk).markers) {
        if (m.kind === 'program-start') t.programStartAt ??= performance.now();
        if (m.kind === 'agent-ready') t.agentReadyAt ??= performance.now();
      }
    });
    void handle.exited.then(off);
    return handle;
  }
}
