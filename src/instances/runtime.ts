/**
 * A live VM, wired to the manager: its console becomes the console log and
 * boot markers, the agent's main stream becomes the app log (the main
 * command's stdout and stderr, byte for byte), its events and exit drive the
 * state, its control channel carries the agent.
 */
import {
  closeSync,
  constants as fsConstants,
  ftruncateSync,
  openSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import { errorMessage } from '../core/errors.js';
import { StdioKind, encodeStdioHeader } from '../core/stdio-stream.js';
import {
  GuestClient,
  type BootMarker,
  type MainStreamHandler,
  type MarkerParser,
} from '../guest/index.js';
import type { VmExit, VmHandle } from '../vmm/index.js';
import type { InstanceCore, Runtime } from './core.js';
import { describeExit } from './exit.js';
import { rotateIfNeeded } from './log-rotate.js';
import { releaseAddress, releaseTap } from './network-bridge.js';
import { markProgramStart } from './phases.js';
import type { InstanceState } from './state.js';

const SOCKETS = ['qmp.sock', 'control.sock', 'console.sock'];

/**
 * The VMM's run directory inside the instance directory: its sockets and serial log. A
 * confined VMM's uid owns it and sees only it of the instance directory (vmm/jail.ts), so
 * the daemon never follows a symlink in it.
 */
export const RUN_DIR = 'vmm';

/** Where each boot starts in the serial and console logs: re-adoption replays from here. */
export interface BootOffsets {
  readonly serial_offset: number;
  readonly console_offset: number;
}

export const BOOT_OFFSETS_FILE = 'boot.json';

/** A file of the VMM's run directory. */
export function runFile(core: InstanceCore, id: string, name: string): string {
  return core.o.paths.instanceFile(id, `${RUN_DIR}/${name}`);
}

/** Wire a VM handle to the manager: console → console log + markers, events, exit. */
export function attach(
  core: InstanceCore,
  id: string,
  handle: VmHandle,
  parser: MarkerParser,
  marks: Runtime['marks'],
): Runtime {
  const p = core.o.paths;
  const rt: Runtime = {
    handle,
    appFd: openSync(p.instanceFile(id, APP_LOG), 'a', 0o600),
    consoleFd: openSync(p.instanceFile(id, CONSOLE_LOG), 'a', 0o600),
    mainExit: undefined,
    guestConnecting: undefined,
    parser,
    guest: undefined,
    marks,
    ending: undefined,
    guestShutdown: false,
    createStartedAt: undefined,
  };
  core.runtimes.set(id, rt);
  handle.onConsole((chunk) => onConsoleBytes(core, id, rt, chunk));
  handle.onEvent((ev) => {
    if (ev.type !== 'shutdown' || rt.ending !== undefined) return;
    rt.guestShutdown = true;
    const state = core.repo.get(id)?.state as InstanceState | undefined;
    if (state === 'Initializing' || state === 'Running' || state === 'Paused') {
      core.transition(id, 'Shutdown');
    }
  });
  void handle.exited.then((exit) => onExit(core, id, rt, exit));
  return rt;
}

/** The app log: the main command's stdout and stderr, framed (core/stdio-stream.ts). */
export const APP_LOG = 'app.stdio';
/** The serial console's text without boot markers (kernel and vessel-init messages). */
export const CONSOLE_LOG = 'console.log';

function onConsoleBytes(core: InstanceCore, id: string, rt: Runtime, chunk: Buffer): void {
  const { log, markers } = rt.parser.push(chunk);
  if (log.length > 0) {
    appendLog(core, id, rt.consoleFd, CONSOLE_LOG, [log]);
    core.topic.publish({ type: 'log', id, stream: 'console', data: log });
  }
  for (const m of markers) onMarker(core, id, rt, m);
}

/** The agent's main stream: output into the app log, the exit onto the record. */
function mainStream(core: InstanceCore, id: string, rt: Runtime): MainStreamHandler {
  return {
    output: (stream, data) => {
      appendLog(core, id, rt.appFd, APP_LOG, [
        encodeStdioHeader(StdioKind[stream], data.length),
        data,
      ]);
      core.topic.publish({ type: 'log', id, stream, data });
    },
    exit: (status) => {
      rt.mainExit = status;
      const row = core.repo.get(id);
      if (row && status.code !== null)
        core.repo.update({ ...row, exit_code: status.code, exit_message: describeExit(status) });
    },
  };
}

/**
 * QEMU appends every console byte to `vmm/serial.log` too (for the window when no daemon
 * listens: adopt.ts replays it). When the console log rotates, the serial log starts over
 * as well (QEMU writes it O_APPEND, so it carries on at the new end) and the boot offsets
 * go back to 0, so neither file grows without bound. Opened without following a symlink:
 * the VMM's uid owns the run directory.
 */
function restartSerialLog(core: InstanceCore, id: string): void {
  const fd = openSync(
    runFile(core, id, 'serial.log'),
    fsConstants.O_WRONLY | fsConstants.O_NOFOLLOW,
  );
  try {
    ftruncateSync(fd, 0);
  } finally {
    closeSync(fd);
  }
  const offsets: BootOffsets = { serial_offset: 0, console_offset: 0 };
  writeFileSync(core.o.paths.instanceFile(id, BOOT_OFFSETS_FILE), JSON.stringify(offsets), {
    mode: 0o600,
  });
}

/**
 * Append `parts` (one console chunk, or one whole app-log frame) to an instance log, then
 * rotate it when it passed its bound (log-rotate.ts). A failed write (disk full) drops
 * the bytes with a warning instead of throwing into the VMM's console or agent handler,
 * which would take the daemon down with it.
 */
function appendLog(core: InstanceCore, id: string, fd: number, name: string, parts: Buffer[]) {
  const file = core.o.paths.instanceFile(id, name);
  try {
    for (const buf of parts) for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off);
    if (rotateIfNeeded(fd, file) && name === CONSOLE_LOG) restartSerialLog(core, id);
  } catch (err) {
    const key = `${id}/${name}`;
    if (!logWriteFailures.has(key)) {
      logWriteFailures.add(key);
      core.log.warn(
        { id, log: name, err: errorMessage(err) },
        'instance log write failed; dropping output',
      );
    }
  }
}

/** Logs whose write failure was reported already (one warning per log, not per chunk). */
const logWriteFailures = new Set<string>();

export function armBootTimeout(core: InstanceCore, id: string, rt: Runtime): void {
  const ms = core.o.bootTimeoutMs ?? 120_000;
  const timer = setTimeout(() => {
    if (core.repo.get(id)?.state === 'Initializing' && core.runtimes.get(id) === rt) {
      core.markError(id, `the guest did not become ready within ${ms / 1000} s`);
      // Ended on purpose: the timeout stays the reason, not "the hypervisor exited unexpectedly".
      rt.ending = 'stop';
      void rt.handle.kill();
    }
  }, ms);
  timer.unref();
  void rt.handle.exited.then(() => clearTimeout(timer));
}

export function onMarker(core: InstanceCore, id: string, rt: Runtime, m: BootMarker): void {
  switch (m.kind) {
    case 'program-start':
      rt.marks.programStart = true;
      markProgramStart(core, id);
      break;
    case 'agent-ready':
      rt.marks.agentReady = true;
      break;
    case 'failed':
      core.markError(id, `guest boot failed: ${m.reason}`);
      break;
    case 'exit':
      // The agent's EXIT on the main stream is the authority; the marker covers a
      // main stream that never reached this daemon.
      if (!rt.mainExit) core.repo.update({ ...core.row(id), exit_code: m.code });
      break;
  }
  maybeRunning(core, id, rt);
}

/** Initializing → Running once both markers and the agent's hello are in. */
function maybeRunning(core: InstanceCore, id: string, rt: Runtime): void {
  if (!rt.marks.programStart || !rt.marks.agentReady || !rt.guest) return;
  if (core.repo.get(id)?.state !== 'Initializing') return;
  core.transition(id, 'Running');
  if (rt.createStartedAt !== undefined) {
    core.metrics?.createSeconds.observe((performance.now() - rt.createStartedAt) / 1000);
    rt.createStartedAt = undefined;
  }
}

/**
 * Connect the agent's control channel; resolves once it said hello (or
 * failed). Kept on the runtime, so an exec arriving while a re-adopted or
 * restored VM's agent reconnects waits for it instead of failing.
 */
export function connectGuest(core: InstanceCore, id: string, rt: Runtime): Promise<void> {
  rt.guestConnecting = connect(core, id, rt);
  return rt.guestConnecting;
}

async function connect(core: InstanceCore, id: string, rt: Runtime): Promise<void> {
  try {
    const sock = net.connect(rt.handle.controlSocket);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    rt.guest = await GuestClient.connect(sock, {
      timeoutMs: core.o.bootTimeoutMs ?? 120_000,
      main: mainStream(core, id, rt),
      onProtocolError: (err) =>
        core.log.warn(
          { id, err: errorMessage(err) },
          "guest protocol error: closing this instance's agent connection",
        ),
    });
    maybeRunning(core, id, rt);
  } catch (err) {
    if (core.runtimes.get(id) === rt)
      core.log.warn({ id, err: errorMessage(err) }, 'guest agent connection failed');
  }
}

/** How long a finished VMM's control channel may take to deliver its last bytes. */
const DRAIN_MS = 10_000;

/**
 * The VMM process is gone: read what its control channel still holds (the
 * main command's last output and its exit), then release what it held and
 * settle the state.
 */
export async function onExit(
  core: InstanceCore,
  id: string,
  rt: Runtime,
  exit: VmExit,
): Promise<void> {
  if (core.runtimes.get(id) !== rt) return;
  if (rt.guest) await rt.guest.drained(DRAIN_MS);
  if (core.runtimes.get(id) !== rt) return;
  core.runtimes.delete(id);
  rt.guest?.close();
  closeSync(rt.appFd);
  closeSync(rt.consoleFd);
  for (const s of SOCKETS) void fs.rm(runFile(core, id, s), { force: true });
  void releaseTap(core, id);
  void core.o.hypervisor.releaseCgroup?.(id);
  const row = core.repo.get(id);
  if (!row || rt.ending === 'standby') return;
  releaseAddress(core, id);
  const crashed = rt.ending === undefined && !rt.guestShutdown && exit.code !== 0;
  const how = exit.signal ? `killed by ${exit.signal}` : `exit status ${String(exit.code)}`;
  core.settleStopped(
    id,
    crashed ? `the hypervisor exited unexpectedly (${how})` : (row.state_error ?? null),
  );
}

/** Daemon shutdown without stopping the VM: the next daemon re-adopts it. */
export function detach(core: InstanceCore, id: string, rt: Runtime): void {
  core.runtimes.delete(id);
  rt.guest?.close();
  rt.handle.detach();
  closeSync(rt.appFd);
  closeSync(rt.consoleFd);
}
