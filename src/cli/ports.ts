import { VesselError } from '../core/errors.js';
import type { PortMapping, PortMappingRequest } from '../core/wire.js';

const PORT = /^\d{1,5}$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

function port(spec: string, what: string, text: string): number {
  const n = Number(text);
  if (!PORT.test(text) || n < 1 || n > 65535) {
    throw new VesselError(
      'invalid_argument',
      `-p "${spec}": ${what} "${text}" is not a port number (1-65535)`,
    );
  }
  return n;
}

/**
 * Parse a `-p/--publish` value like docker's: `HOSTPORT:GUESTPORT`,
 * `HOSTIP:HOSTPORT:GUESTPORT`, each optionally followed by `/tcp` or `/udp`.
 * The host address defaults (daemon side) to 127.0.0.1.
 */
export function parsePublish(spec: string): PortMappingRequest {
  const slash = spec.lastIndexOf('/');
  const body = slash < 0 ? spec : spec.slice(0, slash);
  const proto = slash < 0 ? 'tcp' : spec.slice(slash + 1).toLowerCase();
  if (proto !== 'tcp' && proto !== 'udp') {
    throw new VesselError('invalid_argument', `-p "${spec}": protocol must be tcp or udp`);
  }
  const parts = body.split(':');
  let hostIp: string | undefined;
  let hostPort: string;
  let guestPort: string;
  if (parts.length === 2) {
    [hostPort, guestPort] = parts as [string, string];
  } else if (parts.length === 3) {
    [hostIp, hostPort, guestPort] = parts as [string, string, string];
    if (!IPV4.test(hostIp) || hostIp.split('.').some((o) => Number(o) > 255)) {
      throw new VesselError(
        'invalid_argument',
        `-p "${spec}": host address "${hostIp}" is not an IPv4 address`,
      );
    }
  } else {
    throw new VesselError(
      'invalid_argument',
      `-p "${spec}": expected HOSTPORT:GUESTPORT or HOSTIP:HOSTPORT:GUESTPORT, optionally /tcp or /udp`,
    );
  }
  return {
    host_port: port(spec, 'host port', hostPort),
    guest_port: port(spec, 'guest port', guestPort),
    protocol: proto,
    ...(hostIp === undefined ? {} : { host_ip: hostIp }),
  };
}

/** `127.0.0.1:8080->80/tcp, 127.0.0.1:5353->53/udp`, like `docker ps`. */
export function formatPorts(ports: readonly PortMapping[]): string {
  return ports.map((p) => `${p.host_ip}:${p.host_port}->${p.guest_port}/${p.protocol}`).join(', ');
}

/** The create request's `network` and `ports` from `--network`, `--net-group`, `--egress` and `-p`. */
export function networkRequest(o: {
  network?: string;
  netGroup?: string;
  egress?: boolean;
  publish: string[];
}): {
  network?: { enabled: boolean; mode?: 'bridge' | 'user'; egress?: boolean; name?: string };
  ports?: PortMappingRequest[];
} {
  const raw = o.network;
  if (raw !== undefined && raw !== 'bridge' && raw !== 'user' && raw !== 'none') {
    throw new VesselError('invalid_argument', `--network "${raw}" must be bridge, user or none`);
  }
  const mode = raw;
  if (mode === 'none' && (o.publish.length > 0 || o.egress || o.netGroup)) {
    throw new VesselError(
      'invalid_argument',
      '--network none cannot be combined with -p, --egress or --net-group',
    );
  }
  if (o.netGroup !== undefined && mode === 'user') {
    throw new VesselError(
      'invalid_argument',
      '--net-group needs bridge networking, not --network user',
    );
  }
  const ports = o.publish.map(parsePublish);
  const network =
    mode === undefined && !o.egress && o.netGroup === undefined
      ? undefined
      : {
          enabled: mode !== 'none',
          ...(mode === 'bridge' ? { mode: 'bridge' as const } : {}),
          ...(mode === 'user' ? { mode: 'user' as const } : {}),
          ...(o.egress ? { egress: true } : {}),
          ...(o.netGroup !== undefined ? { name: o.netGroup } : {}),
        };
  return { ...(network ? { network } : {}), ...(ports.length > 0 ? { ports } : {}) };
}
