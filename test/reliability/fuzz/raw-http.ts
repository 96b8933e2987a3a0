/**
 * Malformed HTTP on a raw socket: what no HTTP client library would send. Each case is a few
 * chunks written (with pauses where it matters), then our half of the connection is closed;
 * the daemon must answer with 4xx (or 2xx to a valid part) or close, never 5xx, never hang.
 */
import net from 'node:net';
import { errorShapeProblem } from './checks.js';
import { preview } from './request.js';

export interface RawCase {
  readonly name: string;
  /** Chunks to write, in order; a number is a pause in milliseconds. */
  readonly chunks: ReadonlyArray<string | Buffer | number>;
  /** How many 200 responses the valid requests in it must get (0: none expected). */
  readonly ok?: number;
}

/** One response parsed off the wire. */
export interface RawResponse {
  readonly status: number;
  readonly contentType: string;
  readonly body: Buffer;
}

export interface RawResult {
  readonly responses: readonly RawResponse[];
  /** The daemon had not closed the connection this long after our FIN. */
  readonly hung: boolean;
  readonly received: Buffer;
}

const H = 'Host: vessel\r\n';

/** The cases; `auth` is an Authorization header line (TCP) or '' (unix socket). */
export function rawCases(auth: string): RawCase[] {
  const get = (p = '/health', extra = ''): string => `GET ${p} HTTP/1.1\r\n${H}${auth}${extra}\r\n`;
  const post = (headers: string, body: string): string =>
    `POST /instances HTTP/1.1\r\n${H}${auth}content-type: application/json\r\n${headers}\r\n${body}`;
  return [
    { name: 'valid request (control)', chunks: [get()], ok: 1 },
    { name: 'garbage line', chunks: ['GARBAGE\r\n\r\n'] },
    { name: 'request line without target', chunks: ['GET\r\n\r\n'] },
    { name: 'unknown HTTP version', chunks: [`GET /health HTTP/9.9\r\n${H}${auth}\r\n`] },
    { name: 'HTTP/0.9 style', chunks: ['GET /health\r\n\r\n'] },
    { name: 'unknown method', chunks: [`FUZZ /health HTTP/1.1\r\n${H}${auth}\r\n`] },
    { name: 'header without colon', chunks: [get('/health', 'Bad Header\r\n')] },
    { name: 'header name with space', chunks: [get('/health', 'Bad Name: x\r\n')] },
    { name: 'NUL in a header value', chunks: [get('/health', 'x-fz: a\0b\r\n')] },
    {
      name: 'control bytes in the target',
      chunks: [`GET /he\x01\x7flth HTTP/1.1\r\n${H}${auth}\r\n`],
    },
    {
      name: 'raw non-ASCII in the target',
      chunks: [
        Buffer.concat([
          Buffer.from('GET /images/'),
          Buffer.from([0xff, 0xfe, 0xc0, 0xae]),
          Buffer.from(` HTTP/1.1\r\n${H}${auth}\r\n`),
        ]),
      ],
    },
    { name: '64 KiB header', chunks: [get('/health', `x-fz: ${'A'.repeat(64 * 1024)}\r\n`)] },
    { name: '2000 headers', chunks: [get('/health', 'x-fz: a\r\n'.repeat(2000))] },
    { name: '100 KiB URL', chunks: [get(`/images/${'A'.repeat(100 * 1024)}`)] },
    { name: 'HTTP/1.1 without Host', chunks: [`GET /health HTTP/1.1\r\n${auth}\r\n`] },
    { name: 'two Host headers', chunks: [get('/health', 'Host: other\r\n')] },
    {
      name: 'bare LF line ends',
      chunks: [`GET /health HTTP/1.1\n${H.replace('\r', '')}${auth.replace('\r', '')}\n`],
    },
    { name: 'absolute-form target', chunks: [get('http://example.invalid/health')] },
    { name: 'asterisk target', chunks: [`OPTIONS * HTTP/1.1\r\n${H}${auth}\r\n`] },
    { name: 'CONNECT', chunks: [`CONNECT example.invalid:443 HTTP/1.1\r\n${H}${auth}\r\n`] },
    {
      name: 'bad chunk size',
      chunks: [post('transfer-encoding: chunked\r\n', 'zz\r\n{}\r\n0\r\n\r\n')],
    },
    {
      name: 'chunked without last chunk',
      chunks: [post('transfer-encoding: chunked\r\n', '2\r\n{}\r\n')],
    },
    {
      name: 'chunk longer than declared',
      chunks: [post('transfer-encoding: chunked\r\n', '1\r\n{}}\r\n0\r\n\r\n')],
    },
    {
      name: 'huge chunk size',
      chunks: [post('transfer-encoding: chunked\r\n', 'ffffffffffffffffff\r\n{}\r\n')],
    },
    {
      name: 'content-length and chunked',
      chunks: [post('content-length: 2\r\ntransfer-encoding: chunked\r\n', '0\r\n\r\n')],
    },
    {
      name: 'two content-lengths',
      chunks: [post('content-length: 2\r\ncontent-length: 5\r\n', '{}')],
    },
    { name: 'negative content-length', chunks: [post('content-length: -1\r\n', '{}')] },
    { name: 'non-numeric content-length', chunks: [post('content-length: abc\r\n', '{}')] },
    { name: 'truncated body', chunks: [post('content-length: 100\r\n', '{"image":')] },
    { name: '1 GiB declared, nothing sent', chunks: [post('content-length: 1073741824\r\n', '')] },
    {
      name: 'body longer than content-length',
      chunks: [post('content-length: 2\r\n', '{}GARBAGE\r\n\r\n')],
    },
    {
      name: 'pipelined valid then garbage',
      chunks: [get() + 'GARBAGE /x HTTP/1.1\r\n\r\n'],
      ok: 1,
    },
    { name: '50 pipelined requests', chunks: [get().repeat(50)], ok: 50 },
    { name: 'unknown transfer-encoding', chunks: [post('transfer-encoding: gzip\r\n', '{}')] },
    {
      name: 'expect 100-continue, no body',
      chunks: [post('content-length: 2\r\nexpect: 100-continue\r\n', '')],
    },
    { name: 'unknown expectation', chunks: [post('content-length: 2\r\nexpect: fuzz\r\n', '{}')] },
    {
      name: 'websocket upgrade with a bad key',
      chunks: [
        get(
          '/instances/fz/exec',
          'connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: x\r\n',
        ),
      ],
    },
    {
      name: 'h2c upgrade',
      chunks: [
        get(
          '/health',
          'connection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n',
        ),
      ],
    },
    { name: 'HTTP/2 preface', chunks: ['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'] },
    { name: 'TLS ClientHello', chunks: [Buffer.from('16030100a5010000a10303', 'hex')] },
    { name: 'empty connection', chunks: [] },
    { name: 'only CRLFs', chunks: ['\r\n'.repeat(1000)] },
    { name: 'slowloris, completed', chunks: [...[...get()].flatMap((c) => [c, 5])], ok: 1 },
    {
      name: 'slowloris, abandoned',
      chunks: [...[...`GET /health HTTP/1.1\r\n${H}x-fz: `].flatMap((c) => [c, 20])],
    },
  ];
}

/** Parse the responses in `buf` (content-length and chunked bodies; the rest up to the end). */
export function parseResponses(buf: Buffer): RawResponse[] {
  const out: RawResponse[] = [];
  let at = 0;
  while (at < buf.length) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const head = buf.subarray(at, end).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1] ?? NaN);
    if (!Number.isInteger(status)) break;
    const header = (name: string): string | undefined =>
      head
        .find((l) => l.toLowerCase().startsWith(`${name}:`))
        ?.slice(name.length + 1)
        .trim();
    let bodyEnd = buf.length;
    let body: Buffer;
    const length = header('content-length');
    if (length !== undefined) {
      bodyEnd = Math.min(buf.length, end + 4 + Number(length));
      body = buf.subarray(end + 4, bodyEnd);
    } else if (header('transfer-encoding')?.includes('chunked')) {
      const chunks: Buffer[] = [];
      let p = end + 4;
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', p);
        const size = lineEnd < 0 ? 0 : parseInt(buf.subarray(p, lineEnd).toString(), 16);
        if (!(size > 0)) {
          bodyEnd = lineEnd < 0 ? buf.length : Math.min(buf.length, lineEnd + 4);
          break;
        }
        chunks.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        p = lineEnd + 2 + size + 2;
      }
      body = Buffer.concat(chunks);
    } else {
      body =
        status === 101 || status === 204 || status === 304
          ? Buffer.alloc(0)
          : buf.subarray(end + 4);
      if (body.length === 0) bodyEnd = end + 4;
    }
    out.push({ status, contentType: header('content-type') ?? '', body });
    at = bodyEnd;
  }
  return out;
}

/** Play `c` on a fresh connection to `socketPath`; the result after close (or `closeWaitMs`). */
export async function playRaw(
  socketPath: string,
  c: RawCase,
  closeWaitMs = 5000,
): Promise<RawResult> {
  const sock = net.connect({ path: socketPath, allowHalfOpen: true });
  const received: Buffer[] = [];
  sock.on('data', (d: Buffer) => received.push(d));
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.on('error', () => undefined); // a reset is an answer too: "closed"
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  for (const chunk of c.chunks) {
    if (sock.destroyed || sock.writableEnded) break;
    if (typeof chunk === 'number') await new Promise((r) => setTimeout(r, chunk));
    else sock.write(chunk);
  }
  if (!sock.destroyed) sock.end();
  const timer = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), closeWaitMs));
  const hung = (await Promise.race([closed, timer])) === 'timeout';
  sock.destroy();
  const buf = Buffer.concat(received);
  return { responses: parseResponses(buf), hung, received: buf };
}

/** What is wrong with the result of case `c`, or an empty list. */
export function rawProblems(c: RawCase, r: RawResult): string[] {
  const problems: string[] = [];
  if (r.hung) problems.push('connection still open 5 s after the client closed its side');
  for (const res of r.responses) {
    if (res.status >= 500) problems.push(`answered ${res.status}`);
    if (res.status >= 400 && res.body.length > 0) {
      const p = errorShapeProblem(res.contentType, res.body);
      if (p) problems.push(`${res.status} without the error body (${p}): ${preview(res.body)}`);
    }
  }
  const oks = r.responses.filter((x) => x.status === 200).length;
  if (c.ok !== undefined && oks !== c.ok) problems.push(`${oks} × 200 where ${c.ok} expected`);
  if (r.received.length > 0 && r.responses.length === 0)
    problems.push(`unparseable answer ${preview(r.received)}`);
  return problems;
}
