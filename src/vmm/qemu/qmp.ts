/**
 * A QMP (QEMU Machine Protocol) client over a unix socket: greeting,
 * capability negotiation, commands correlated by id, asynchronous events.
 * QMP errors are classified by their `error.class`, never by text.
 */
import net from 'node:net';
import type { VesselError } from '../../core/errors.js';
import { vmmError } from '../errors.js';

export interface QmpEvent {
  readonly event: string;
  readonly data: Record<string, unknown>;
  readonly timestamp: { readonly seconds: number; readonly microseconds: number } | undefined;
}

export type QmpEventListener = (event: QmpEvent) => void;

/** QMP error classes (qapi/error.json). */
export type QmpErrorClass =
  'GenericError' | 'CommandNotFound' | 'DeviceNotActive' | 'DeviceNotFound' | 'KVMMissingCap';

interface Pending {
  readonly command: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: VesselError) => void;
}

export interface QmpConnectOptions {
  /** Deadline for connect + greeting + `qmp_capabilities`; default 5000 ms. */
  readonly timeoutMs?: number;
}

/** Map a QMP error reply to a VesselError by its class. */
export function qmpErrorToVessel(command: string, cls: string, desc: string): VesselError {
  const details = { qmpClass: cls, qmpCommand: command };
  const message = `QMP ${command} failed (${cls}): ${desc}`;
  switch (cls as QmpErrorClass) {
    case 'DeviceNotFound':
      return vmmError('notFound', message, { details });
    case 'DeviceNotActive':
      return vmmError('state', message, { details });
    case 'CommandNotFound':
    case 'KVMMissingCap':
    case 'GenericError':
    default:
      return vmmError('failed', message, { details });
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export class QmpClient {
  readonly path: string;
  readonly greeting: Record<string, unknown>;
  private readonly socket: net.Socket;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<QmpEventListener>();
  private readonly closeListeners = new Set<() => void>();
  private nextId = 1;
  private closedFlag = false;
  /** Resolves when the connection is closed (by either side). */
  readonly closed: Promise<void>;

  private constructor(path: string, socket: net.Socket, greeting: Record<string, unknown>) {
    this.path = path;
    this.socket = socket;
    this.greeting = greeting;
    this.closed = new Promise((resolve) => {
      socket.once('close', () => {
        this.closedFlag = true;
        const err = vmmError('unavailable', `QMP connection ${path} closed`);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        for (const l of this.closeListeners) l();
        resolve();
      });
    });
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  /** Connect, read the greeting and leave capability negotiation mode. */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 5000;
    const socket = net.createConnection({ path });
    const ref: { client?: QmpClient } = {};
    let buffer = '';
    let greetingWaiter: ((g: Record<string, unknown>) => void) | undefined;
    const earlyFail = new Promise<never>((_, reject) => {
      const timer = setTimeout(() => {
        socket.destroy();
        reject(vmmError('timeout', `QMP ${path}: no greeting within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(vmmError('unavailable', `QMP ${path}: ${err.message}`, { cause: err }));
      });
      socket.once('close', () => {
        clearTimeout(timer);
        reject(vmmError('unavailable', `QMP ${path}: closed during negotiation`));
      });
      greetingWaiter = () => clearTimeout(timer);
    });
    const greeting = new Promise<Record<string, unknown>>((resolve) => {
      const prev = greetingWaiter;
      greetingWaiter = (g) => {
        prev?.(g);
        resolve(g);
      };
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line === '') continue;
        let msg: unknown;
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        if (!isRecord(msg)) continue;
        if (ref.client) ref.client.dispatch(msg);
        else if ('QMP' in msg && isRecord(msg.QMP)) greetingWaiter?.(msg.QMP);
      }
    });
    const g = await Promise.race([greeting, earlyFail]);
    socket.removeAllListeners('error');
    socket.removeAllListeners('close');
    socket.on('error', () => {
      /* 'close' follows and rejects pending commands */
    });
    const client = new QmpClient(path, socket, g);
    ref.client = client;
    try {
      await client.execute('qmp_capabilities');
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** Run a command; resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedFlag) {
      return Promise.reject(vmmError('unavailable', `QMP ${this.path} is closed (${command})`));
    }
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      const msg =
        args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      this.socket.write(JSON.stringify(msg) + '\r\n');
    });
  }

  /** Subscribe to events; returns the unsubscribe function. */
  onEvent(listener: QmpEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onClose(listener: () => void): () => void {
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  close(): void {
    this.socket.destroy();
  }

  private dispatch(msg: Record<string, unknown>): void {
    if (typeof msg.event === 'string') {
      const ts = isRecord(msg.timestamp)
        ? {
            seconds: Number(msg.timestamp.seconds),
            microseconds: Number(msg.timestamp.microseconds),
          }
        : undefined;
      const ev: QmpEvent = {
        event: msg.event,
        data: isRecord(msg.data) ? msg.data : {},
        timestamp: ts,
      };
      for (const l of this.listeners) l(ev);
      return;
    }
    if (typeof msg.id !== 'number') return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if ('return' in msg) {
      p.resolve(msg.return);
    } else if (isRecord(msg.error)) {
      const cls = typeof msg.error.class === 'string' ? msg.error.class : 'GenericError';
      const desc = typeof msg.error.desc === 'string' ? msg.error.desc : '';
      p.reject(qmpErrorToVessel(p.command, cls, desc));
    } else {
      p.reject(vmmError('failed', `QMP ${p.command}: malformed reply`));
    }
  }
}
