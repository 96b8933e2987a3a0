import { VesselClient, type LifecycleEvent } from '../../../src/client/index.js';
import { VesselError } from '../../../src/core/errors.js';
import { DEFAULT_DATA_DIR, Paths } from '../../../src/core/paths.js';
import type { LifecycleEventType } from './types.js';

/**
 * Where the daemon listens. Explicit options win; then, like the CLI, `VESSEL_HOST` +
 * `VESSEL_TOKEN` (TCP), else the unix socket of `VESSEL_DATA_DIR` (default /var/lib/vessel).
 */
export interface ConnectionOptions {
  /** Unix socket of the daemon (default `<dataDir>/vessel.sock`). */
  readonly socketPath?: string;
  /** Data directory whose socket to use (default `VESSEL_DATA_DIR`, else /var/lib/vessel). */
  readonly dataDir?: string;
  /** `http://host:port` (or `host:port`) of the daemon's TCP listener; needs `token`. */
  readonly baseUrl?: string;
  /** Bearer token for `baseUrl` (default `VESSEL_TOKEN`). */
  readonly token?: string;
  /** Timeout of ordinary API calls in ms (default 60 000); boots and pulls get longer. */
  readonly requestTimeoutMs?: number;
  /** Process environment to read the defaults from (default `process.env`). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Filter of {@link Vessel.events}. */
export interface EventsOptions {
  /** Only this instance (id or name). */
  readonly instance?: string;
  /** Only these event types. */
  readonly types?: readonly LifecycleEventType[];
  /** Ends the iteration (the `for await` loop finishes without an error). */
  readonly signal?: AbortSignal;
}

function clientOptions(o: ConnectionOptions): ConstructorParameters<typeof VesselClient>[0] {
  const env = o.env ?? process.env;
  const timeout = o.requestTimeoutMs === undefined ? {} : { timeoutMs: o.requestTimeoutMs };
  const unix = o.socketPath ?? (o.dataDir === undefined ? undefined : new Paths(o.dataDir).socket);
  const host = unix === undefined ? (o.baseUrl ?? env.VESSEL_HOST) : undefined;
  if (host === undefined || host === '') {
    const socketPath = unix ?? new Paths(env.VESSEL_DATA_DIR || DEFAULT_DATA_DIR).socket;
    return { socketPath, ...timeout };
  }
  const token = o.token ?? env.VESSEL_TOKEN;
  if (!token) {
    throw new VesselError(
      'invalid_argument',
      `the Vessel daemon at ${host} is reached over TCP and needs a bearer token (token option or VESSEL_TOKEN)`,
    );
  }
  return { baseUrl: host.includes('://') ? host : `http://${host}`, token, ...timeout };
}

/**
 * A connection to a Vessel daemon. Cheap to create; {@link Vessel.close} releases its
 * kept-alive sockets. Sandboxes made through it share it.
 */
export class Vessel {
  /** The typed REST client underneath: every endpoint of the API, in the API's own shapes. */
  readonly api: VesselClient;

  constructor(options: ConnectionOptions | { readonly client: VesselClient } = {}) {
    this.api = 'client' in options ? options.client : new VesselClient(clientOptions(options));
  }

  /** The daemon's version and uptime; rejects with `daemon_unreachable` when it does not answer. */
  health(): ReturnType<VesselClient['health']> {
    return this.api.health();
  }

  /**
   * Lifecycle events as they happen (`GET /events`, Server-Sent Events), as an async
   * iterator. Breaking out of the loop, or aborting `signal`, closes the stream.
   */
  async *events(options: EventsOptions = {}): AsyncGenerator<LifecycleEvent, void, undefined> {
    const filter = {
      ...(options.instance === undefined ? {} : { instance: options.instance }),
      ...(options.types === undefined ? {} : { types: [...options.types] }),
    };
    const signal = options.signal;
    if (signal?.aborted) return;
    try {
      yield* this.api.events(filter, signal);
    } catch (err) {
      if (signal?.aborted) return;
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.api.close();
  }
}
