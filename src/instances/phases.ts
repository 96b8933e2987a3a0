/**
 * Phase accounting: how long an instance has spent in each state (the hypeman
 * API's `phase_durations_ms`, `current_phase`, `current_phase_since`), and how
 * long its latest cold boot spent in each boot phase (Vessel's
 * `boot_durations_ms`: VMM start, guest boot, agent ready).
 *
 * State time is closed on every state change, in the one write path
 * (`InstanceCore.save`), and stored on the row, so it survives daemon
 * restarts. Boot phases are timed in memory between the boot request, the VMM
 * running (→ Initializing), the guest's program-start marker and Running.
 */
import type { InstanceRow } from '../store/index.js';
import type { InstanceState } from './state.js';

export interface BootDurations {
  readonly vmm_start: number;
  readonly guest_boot: number;
  readonly agent_ready: number;
  readonly total: number;
}

/** What `phases_json` holds. */
export interface PhaseRecord {
  /** Closed time per phase (state in lower case), in ms. */
  readonly durations: Readonly<Record<string, number>>;
  readonly current: string;
  readonly since: string;
  readonly boot?: BootDurations | null;
}

interface BootClock {
  begin: number;
  vmm?: number;
  programStart?: number;
}

/** Boot clocks of instances booting right now, per manager (keyed by anything stable). */
const clocks = new WeakMap<object, Map<string, BootClock>>();

function clocksOf(owner: object): Map<string, BootClock> {
  let m = clocks.get(owner);
  if (!m) clocks.set(owner, (m = new Map<string, BootClock>()));
  return m;
}

/** A cold boot of `id` starts now (not a restore). */
export function markBootBegin(owner: object, id: string, now = Date.now()): void {
  clocksOf(owner).set(id, { begin: now });
}

/** The guest's program-start marker arrived. */
export function markProgramStart(owner: object, id: string, now = Date.now()): void {
  const c = clocksOf(owner).get(id);
  if (c && c.programStart === undefined) c.programStart = now;
}

/** The phase record of a row, derived for rows that have none yet (older rows, Created). */
export function phaseRecord(row: InstanceRow): PhaseRecord {
  const stored = row.phases as PhaseRecord | null | undefined;
  if (stored && typeof stored.current === 'string') return stored;
  const live = ['Initializing', 'Running', 'Paused', 'Shutdown'].includes(row.state);
  const since = (live ? row.started_at : row.stopped_at) ?? row.created_at;
  return { durations: {}, current: row.state.toLowerCase(), since, boot: null };
}

/**
 * The row after a state change `from` → `row.state` at `now`: the old phase
 * closed, the new one open; a boot that just reached Running records its
 * boot phases.
 */
export function accruePhase(
  owner: object,
  row: InstanceRow,
  from: InstanceState | null,
  now = Date.now(),
): InstanceRow {
  const rec = phaseRecord(from === null ? row : { ...row, state: from });
  const spent = Math.max(0, now - Date.parse(rec.since));
  const durations = { ...rec.durations, [rec.current]: (rec.durations[rec.current] ?? 0) + spent };
  let boot = rec.boot ?? null;
  const clock = clocksOf(owner).get(row.id);
  if (clock && row.state === 'Initializing') clock.vmm = now;
  if (clock && row.state === 'Running' && from === 'Initializing' && clock.vmm !== undefined) {
    const ps = clock.programStart ?? now;
    boot = {
      vmm_start: clock.vmm - clock.begin,
      guest_boot: ps - clock.vmm,
      agent_ready: now - ps,
      total: now - clock.begin,
    };
    clocksOf(owner).delete(row.id);
  } else if (clock && row.state !== 'Initializing') {
    clocksOf(owner).delete(row.id); // the boot ended some other way
  }
  const next: PhaseRecord = {
    durations,
    current: row.state.toLowerCase(),
    since: new Date(now).toISOString(),
    boot,
  };
  return { ...row, phases: next as unknown as Record<string, unknown> };
}

/** The API fields: closed time plus the current phase's time up to `now`. */
export function phaseView(
  row: InstanceRow,
  now = Date.now(),
): {
  phase_durations_ms: Record<string, number>;
  current_phase: string;
  current_phase_since: string;
  boot_durations_ms: BootDurations | null;
} {
  const rec = phaseRecord(row);
  const open = Math.max(0, now - Date.parse(rec.since));
  const durations: Record<string, number> = {};
  for (const [k, v] of Object.entries(rec.durations)) durations[k] = Math.round(v);
  durations[rec.current] = Math.round((rec.durations[rec.current] ?? 0) + open);
  return {
    phase_durations_ms: durations,
    current_phase: rec.current,
    current_phase_since: rec.since,
    boot_durations_ms: rec.boot ?? null,
  };
}
