/** Memory of a live process from /proc/PID/status (Linux), for tests that bound it. */
import { readFileSync } from 'node:fs';

export type MemoryField = 'VmRSS' | 'VmHWM';

/** `field` of /proc/PID/status in KiB; undefined once the process is gone (or a zombie). */
export function statusKiB(pid: number, field: MemoryField): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(text);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

export interface MemorySampler {
  /** The largest value seen so far (KiB); 0 before the first sample. */
  readonly max: number;
  /** How many samples were taken (a test can check that sampling really ran). */
  readonly samples: number;
  /** Take one last sample, stop, and return the largest value seen. */
  stop(): number;
}

/** Sample `field` of `pid` every `everyMs` and keep the largest value. */
export function sampleMemory(pid: number, field: MemoryField, everyMs = 100): MemorySampler {
  let max = 0;
  let samples = 0;
  const take = (): void => {
    const v = statusKiB(pid, field);
    if (v === undefined) return;
    samples++;
    if (v > max) max = v;
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    get max() {
      return max;
    },
    get samples() {
      return samples;
    },
    stop() {
      take();
      clearInterval(timer);
      return max;
    },
  };
}
