/**
 * What the server does with one query, decided without sockets: answer it from the
 * instances (names under the suffix), refuse it, or forward it upstream.
 */
import {
  CLASS_IN,
  DnsFormatError,
  OPCODE_QUERY,
  RCODE,
  TYPE_A,
  TYPE_ANY,
  TYPE_SOA,
  encodeResponse,
  parseHeader,
  parseQuery,
  type DnsRecord,
  type Rcode,
} from './message.js';

/** An instance name → its IPv4 address, or undefined when there is no such instance (or no address). */
export type DnsLookup = (name: string) => string | undefined;

export type DnsDecision =
  | { readonly kind: 'reply'; readonly bytes: Buffer }
  | { readonly kind: 'forward'; readonly id: number }
  | { readonly kind: 'drop'; readonly reason: string };

export interface AnswerOptions {
  /** Zone served from the instances, lower case, no dots at the ends (e.g. `vm`). */
  readonly suffix: string;
  readonly lookup: DnsLookup;
  /** TTL of answers; short, because an instance name can be re-created with a new address. */
  readonly ttl: number;
}

/** Lower-cased, no trailing dot: the form names are compared in. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/**
 * The address `<name>.<suffix>` answers for an instance's network view: its own address on
 * a routed network (any mode besides `user` and `none`). A user-mode guest's address
 * (10.0.2.15, the same in every VM) is unreachable from outside it, so it has none.
 */
export function dnsAddressOf(network: {
  readonly mode: string;
  readonly ip: string | null;
}): string | undefined {
  return network.mode !== 'user' && network.mode !== 'none' && network.ip ? network.ip : undefined;
}

/** A minimal SOA for the suffix zone, so resolvers cache negative answers briefly (RFC 2308). */
function soa(suffix: string, ttl: number): DnsRecord {
  return {
    type: TYPE_SOA,
    name: suffix,
    ttl,
    mname: `ns.${suffix}`,
    rname: `hostmaster.${suffix}`,
    serial: 1,
    minimum: ttl,
  };
}

/**
 * Decide the reply to `packet`. Fewer than 12 bytes, or a response: dropped (there is no
 * query id to answer, or answering a response invites loops). An unreadable question:
 * FORMERR. Not a standard query: NOTIMP. A name under the suffix: answered here (A from
 * `lookup`, other types NOERROR with no data, unknown names NXDOMAIN). Anything else:
 * forwarded.
 */
export function decide(packet: Uint8Array, options: AnswerOptions): DnsDecision {
  const header = parseHeader(packet);
  if (!header) return { kind: 'drop', reason: `${packet.length} bytes is shorter than a header` };
  if (header.qr) return { kind: 'drop', reason: 'a response, not a query' };
  const fail = (rcode: Rcode): DnsDecision => ({
    kind: 'reply',
    bytes: encodeResponse({
      id: header.id,
      opcode: header.opcode,
      rd: header.rd,
      aa: false,
      rcode,
    }),
  });
  if (header.opcode !== OPCODE_QUERY) return fail(RCODE.NOTIMP);
  let query;
  try {
    query = parseQuery(packet);
  } catch (err) {
    if (err instanceof DnsFormatError) return fail(RCODE.FORMERR);
    throw err;
  }
  const q = query.question;
  const name = normalizeName(q.name);
  const suffix = options.suffix;
  const under = name === suffix || name.endsWith(`.${suffix}`);
  if (!under) return { kind: 'forward', id: header.id };
  const reply = (rcode: Rcode, answers: DnsRecord[], authority: DnsRecord[]): DnsDecision => ({
    kind: 'reply',
    bytes: encodeResponse({
      id: header.id,
      rd: header.rd,
      aa: true,
      rcode,
      question: query.questionBytes,
      answers,
      authority,
    }),
  });
  if (q.class !== CLASS_IN && q.class !== TYPE_ANY) return reply(RCODE.REFUSED, [], []);
  if (name === suffix) return reply(RCODE.NOERROR, [], [soa(suffix, options.ttl)]);
  const instance = name.slice(0, -(suffix.length + 1));
  const address = options.lookup(instance);
  if (address === undefined) return reply(RCODE.NXDOMAIN, [], [soa(suffix, options.ttl)]);
  if (q.type === TYPE_A || q.type === TYPE_ANY) {
    return reply(RCODE.NOERROR, [{ type: TYPE_A, name: undefined, ttl: options.ttl, address }], []);
  }
  // The name exists, but only with an IPv4 address: NOERROR, no data (not NXDOMAIN, which
  // would make resolvers give up on the A record too).
  return reply(RCODE.NOERROR, [], [soa(suffix, options.ttl)]);
}

/** SERVFAIL for a query whose id is known (forwarding failed or timed out). */
export function servfail(packet: Uint8Array): Buffer | undefined {
  const header = parseHeader(packet);
  if (!header) return undefined;
  let question: Buffer | undefined;
  try {
    question = parseQuery(packet).questionBytes;
  } catch {
    question = undefined;
  }
  return encodeResponse({
    id: header.id,
    rd: header.rd,
    aa: false,
    rcode: RCODE.SERVFAIL,
    ...(question ? { question } : {}),
  });
}
