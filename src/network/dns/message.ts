/**
 * The DNS wire format (RFC 1035 §4), as much of it as a small authoritative-and-forwarding
 * server needs: parse a query's header and question (with name compression and loop
 * protection), and encode answers. Pure functions; every malformed input is a
 * {@link DnsFormatError}, never a crash.
 */

export const TYPE_A = 1;
export const TYPE_SOA = 6;
export const TYPE_AAAA = 28;
export const TYPE_ANY = 255;
export const CLASS_IN = 1;

export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;
export type Rcode = (typeof RCODE)[keyof typeof RCODE];

export const OPCODE_QUERY = 0;

/** A query that cannot be parsed; `id` is set when the header was readable (answer FORMERR). */
export class DnsFormatError extends Error {
  readonly id: number | undefined;
  constructor(message: string, id?: number) {
    super(message);
    this.name = 'DnsFormatError';
    this.id = id;
  }
}

export interface DnsHeader {
  readonly id: number;
  /** true for a response. */
  readonly qr: boolean;
  readonly opcode: number;
  /** Recursion desired. */
  readonly rd: boolean;
  readonly tc: boolean;
  readonly rcode: number;
  readonly qdcount: number;
  readonly ancount: number;
  readonly nscount: number;
  readonly arcount: number;
}

export interface DnsQuestion {
  /** The name as sent (case kept, no trailing dot; "" for the root). */
  readonly name: string;
  readonly type: number;
  readonly class: number;
}

export interface DnsQuery {
  readonly header: DnsHeader;
  readonly question: DnsQuestion;
  /** The question section as received, echoed verbatim in replies (labels may hold any byte). */
  readonly questionBytes: Buffer;
}

export const HEADER_BYTES = 12;
const MAX_NAME_BYTES = 255;

/** The header alone: undefined when fewer than 12 bytes arrived (nothing to answer to). */
export function parseHeader(buf: Uint8Array): DnsHeader | undefined {
  if (buf.length < HEADER_BYTES) return undefined;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const flags = v.getUint16(2);
  return {
    id: v.getUint16(0),
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    tc: (flags & 0x0200) !== 0,
    rd: (flags & 0x0100) !== 0,
    rcode: flags & 0xf,
    qdcount: v.getUint16(4),
    ancount: v.getUint16(6),
    nscount: v.getUint16(8),
    arcount: v.getUint16(10),
  };
}

/**
 * Read a (possibly compressed) domain name at `offset`. Returns the dotted name and the
 * offset just past it in the original position. Pointers must point backwards, which
 * rules out loops; labels are 1..63 bytes, the whole name at most 255.
 */
export function readName(
  buf: Uint8Array,
  offset: number,
  id?: number,
): { name: string; end: number; compressed: boolean } {
  const labels: string[] = [];
  let pos = offset;
  let end: number | undefined;
  let total = 0;
  for (;;) {
    if (pos >= buf.length) throw new DnsFormatError('name runs past the end of the message', id);
    const len = buf[pos]!;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= buf.length) throw new DnsFormatError('truncated compression pointer', id);
      const target = ((len & 0x3f) << 8) | buf[pos + 1]!;
      if (target >= pos) throw new DnsFormatError('compression pointer does not point back', id);
      end ??= pos + 2;
      pos = target;
      continue;
    }
    if ((len & 0xc0) !== 0)
      throw new DnsFormatError(`unsupported label type 0x${len.toString(16)}`, id);
    if (len === 0) {
      end ??= pos + 1;
      break;
    }
    if (pos + 1 + len > buf.length)
      throw new DnsFormatError('label runs past the end of the message', id);
    total += len + 1;
    if (total > MAX_NAME_BYTES) throw new DnsFormatError('name longer than 255 bytes', id);
    labels.push(latin1(buf.subarray(pos + 1, pos + 1 + len)));
    pos += 1 + len;
  }
  return { name: labels.join('.'), end, compressed: end !== pos + 1 };
}

function latin1(b: Uint8Array): string {
  let s = '';
  for (const c of b) s += String.fromCharCode(c);
  return s;
}

/**
 * Parse a query: a header with QR clear, and exactly one question (the only form real
 * resolvers send). Records after the question (an EDNS OPT) are not read.
 */
export function parseQuery(buf: Uint8Array): DnsQuery {
  const header = parseHeader(buf);
  if (!header) throw new DnsFormatError(`message of ${buf.length} bytes is shorter than a header`);
  if (header.qr) throw new DnsFormatError('message is a response, not a query', header.id);
  if (header.qdcount !== 1)
    throw new DnsFormatError(`query has ${header.qdcount} questions, expected 1`, header.id);
  const { name, end, compressed } = readName(buf, HEADER_BYTES, header.id);
  if (end + 4 > buf.length) throw new DnsFormatError('question runs past the end', header.id);
  // The only earlier bytes are the header: a pointer in the first name is nonsense.
  if (compressed) throw new DnsFormatError('compression pointer in the question name', header.id);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    header,
    question: { name, type: v.getUint16(end), class: v.getUint16(end + 2) },
    questionBytes: Buffer.from(buf.subarray(HEADER_BYTES, end + 4)),
  };
}

/** Encode a name without compression (labels as given, case kept; a trailing dot is optional). */
export function encodeName(name: string): Buffer {
  const bare = name.replace(/\.$/, '');
  const parts = bare === '' ? [] : bare.split('.');
  const out: number[] = [];
  for (const p of parts) {
    if (p.length === 0 || p.length > 63) throw new RangeError(`bad label "${p}" in "${name}"`);
    out.push(p.length);
    for (let i = 0; i < p.length; i++) out.push(p.charCodeAt(i) & 0xff);
  }
  out.push(0);
  if (out.length > MAX_NAME_BYTES) throw new RangeError(`name "${name}" is longer than 255 bytes`);
  return Buffer.from(out);
}

export interface ARecord {
  readonly type: typeof TYPE_A;
  /** Undefined: the question's name (a compression pointer to it). */
  readonly name: string | undefined;
  readonly ttl: number;
  readonly address: string;
}

export interface SoaRecord {
  readonly type: typeof TYPE_SOA;
  readonly name: string;
  readonly ttl: number;
  readonly mname: string;
  readonly rname: string;
  readonly serial: number;
  /** Also the negative-caching TTL (RFC 2308). */
  readonly minimum: number;
}

export type DnsRecord = ARecord | SoaRecord;

export interface DnsResponse {
  readonly id: number;
  readonly opcode?: number;
  readonly rd: boolean;
  /** Authoritative answer (names under the suffix). */
  readonly aa: boolean;
  readonly rcode: Rcode;
  /** The raw question section to echo (from {@link parseQuery}). */
  readonly question?: Buffer;
  readonly answers?: readonly DnsRecord[];
  readonly authority?: readonly DnsRecord[];
}

function encodeRecord(r: DnsRecord): Buffer {
  let rdata: Buffer;
  switch (r.type) {
    case TYPE_A: {
      const octets = r.address.split('.').map(Number);
      if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255))
        throw new RangeError(`"${r.address}" is not an IPv4 address`);
      rdata = Buffer.from(octets);
      break;
    }
    case TYPE_SOA: {
      const nums = Buffer.alloc(20);
      nums.writeUInt32BE(r.serial >>> 0, 0);
      nums.writeUInt32BE(3600, 4); // refresh
      nums.writeUInt32BE(600, 8); // retry
      nums.writeUInt32BE(86400, 12); // expire
      nums.writeUInt32BE(r.minimum, 16);
      rdata = Buffer.concat([encodeName(r.mname), encodeName(r.rname), nums]);
      break;
    }
  }
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(r.type, 0);
  fixed.writeUInt16BE(CLASS_IN, 2);
  fixed.writeUInt32BE(r.ttl, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  const name = r.name === undefined ? Buffer.from([0xc0, HEADER_BYTES]) : encodeName(r.name);
  return Buffer.concat([name, fixed, rdata]);
}

/** Encode a response: header, the echoed question, answers and authority records. */
export function encodeResponse(res: DnsResponse): Buffer {
  const answers = res.answers ?? [];
  const authority = res.authority ?? [];
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt16BE(res.id, 0);
  const flags =
    0x8000 |
    ((res.opcode ?? OPCODE_QUERY) << 11) |
    (res.aa ? 0x0400 : 0) |
    (res.rd ? 0x0100 : 0) |
    0x0080 | // recursion available: everything outside the suffix is forwarded
    res.rcode;
  header.writeUInt16BE(flags, 2);
  header.writeUInt16BE(res.question ? 1 : 0, 4);
  header.writeUInt16BE(answers.length, 6);
  header.writeUInt16BE(authority.length, 8);
  header.writeUInt16BE(0, 10);
  const parts: Buffer[] = [header];
  if (res.question) parts.push(res.question);
  for (const r of [...answers, ...authority]) parts.push(encodeRecord(r));
  return Buffer.concat(parts);
}

/** A parsed resource record of a response (for clients and tests). */
export interface ParsedRecord {
  readonly name: string;
  readonly type: number;
  readonly class: number;
  readonly ttl: number;
  readonly data: Buffer;
}

/** Parse a whole response: header, questions, and every record's raw data. */
export function parseResponse(buf: Uint8Array): {
  header: DnsHeader;
  questions: DnsQuestion[];
  answers: ParsedRecord[];
  authority: ParsedRecord[];
} {
  const header = parseHeader(buf);
  if (!header) throw new DnsFormatError('response shorter than a header');
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = HEADER_BYTES;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < header.qdcount; i++) {
    const { name, end } = readName(buf, pos, header.id);
    if (end + 4 > buf.length) throw new DnsFormatError('question runs past the end', header.id);
    questions.push({ name, type: v.getUint16(end), class: v.getUint16(end + 2) });
    pos = end + 4;
  }
  const records = (n: number): ParsedRecord[] => {
    const out: ParsedRecord[] = [];
    for (let i = 0; i < n; i++) {
      const { name, end } = readName(buf, pos, header.id);
      if (end + 10 > buf.length) throw new DnsFormatError('record runs past the end', header.id);
      const len = v.getUint16(end + 8);
      if (end + 10 + len > buf.length)
        throw new DnsFormatError('rdata runs past the end', header.id);
      out.push({
        name,
        type: v.getUint16(end),
        class: v.getUint16(end + 2),
        ttl: v.getUint32(end + 4),
        data: Buffer.from(buf.subarray(end + 10, end + 10 + len)),
      });
      pos = end + 10 + len;
    }
    return out;
  };
  const answers = records(header.ancount);
  const authority = records(header.nscount);
  return { header, questions, answers, authority };
}

/** Encode a query (one question, RD set): what a stub resolver sends. */
export function encodeQuery(id: number, name: string, type: number): Buffer {
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2);
  header.writeUInt16BE(1, 4);
  const q = Buffer.alloc(4);
  q.writeUInt16BE(type, 0);
  q.writeUInt16BE(CLASS_IN, 2);
  return Buffer.concat([header, encodeName(name), q]);
}
