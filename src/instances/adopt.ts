/**
 * Re-attach to a VM a previous daemon started (daemon restart, kill -9
 * included). The vCPUs are held for the few milliseconds it takes to replay
 * the console output printed while no daemon listened, so the console log and
 * the boot markers stay right.
 */
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import { errnoCode, errorMessage } from '../core/errors.js';
import { MarkerParser, type BootMarker } from '../guest/index.js';
import type { InstanceRow } from '../store/index.js';
import { pidAlive } from '../vmm/index.js';
import { BOOT_OFFSETS_FILE, type BootOffsets } from './boot.js';
import type { InstanceCore } from './core.js';
import { hostNetwork } from './network.js';
import { reattachTap, releaseTap } from './network-bridge.js';
import { CONSOLE_LOG, armBootTimeout, attach, connectGuest, onMarker, runFile } from './runtime.js';
import type { InstanceState } from './state.js';

/** Call under the instance's lock. */
export async function adopt(core: InstanceCore, row: InstanceRow): Promise<void> {
  const alive = row.pid !== null && (await pidAlive(row.pid));
  if (!alive || row.pid === null || !row.sockets) {
    await releaseTap(core, row.id);
    core.settleStopped(row.id, 'the hypervisor exited while the daemon was down');
    return;
  }
  const s = row.sockets;
  const handle = await core.o.hypervisor.adopt(row.pid, {
    qmpSocket: s.qmpSocket ?? '',
    controlSocket: s.controlSocket ?? '',
    consoleSocket: s.consoleSocket ?? '',
  });
  const info = await handle.info();
  if (info.state === 'running') await handle.pause();
  const parser = new MarkerParser();
  const replayed = await replayConsole(core, row.id, parser);
  const rt = attach(core, row.id, handle, parser, { programStart: false, agentReady: false });
  for (const m of replayed) onMarker(core, row.id, rt, m);
  if (info.state === 'running') await handle.resume();
  const state = row.state as InstanceState;
  if (info.state === 'paused' && state === 'Running') core.transition(row.id, 'Paused');
  if (info.state === 'running' && state === 'Paused') core.transition(row.id, 'Running');
  if (info.state === 'shutdown' && state !== 'Shutdown') core.transition(row.id, 'Shutdown');
  if (state === 'Running' || state === 'Paused') {
    rt.marks.programStart = true;
    rt.marks.agentReady = true;
  }
  if (state === 'Initializing') armBootTimeout(core, row.id, rt);
  const host = hostNetwork(row.guest);
  if (host.mode === 'bridge') {
    await reattachTap(core, row, host).catch((err: unknown) =>
      core.markError(row.id, `re-attaching the network failed: ${errorMessage(err)}`),
    );
  }
  void connectGuest(core, row.id, rt);
  core.log.info({ instance: row.name, pid: row.pid, state: info.status }, 're-adopted VM');
}

/**
 * The serial log QEMU wrote: in the run directory (the VMM's uid owns it, so no symlink is
 * followed), or beside it for VMs booted before the run directory existed.
 */
async function readSerialLog(core: InstanceCore, id: string): Promise<Buffer> {
  for (const file of [
    runFile(core, id, 'serial.log'),
    core.o.paths.instanceFile(id, 'serial.log'),
  ]) {
    try {
      const fh = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
      try {
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }
  return Buffer.alloc(0);
}

/**
 * Rebuild this boot's console log from the serial log; returns the markers
 * seen. (The app log needs no replay: while no daemon listens, the guest's
 * writes to the control channel wait.)
 */
async function replayConsole(
  core: InstanceCore,
  id: string,
  parser: MarkerParser,
): Promise<BootMarker[]> {
  const p = core.o.paths;
  let offsets: BootOffsets = { serial_offset: 0, console_offset: 0 };
  try {
    const text = await fs.readFile(p.instanceFile(id, BOOT_OFFSETS_FILE), 'utf8');
    offsets = JSON.parse(text) as BootOffsets;
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw err;
  }
  const serial = await readSerialLog(core, id);
  const { log, markers } = parser.push(serial.subarray(offsets.serial_offset));
  const consoleLog = p.instanceFile(id, CONSOLE_LOG);
  await fs.truncate(consoleLog, offsets.console_offset ?? 0).catch((err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') throw err;
  });
  await fs.appendFile(consoleLog, log, { mode: 0o600 });
  return markers;
}
