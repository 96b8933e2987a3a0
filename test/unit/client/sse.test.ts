// The client's incremental Server-Sent Events parser.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SseParser, type SseEvent } from '../../../src/client/sse.js';

const STREAM =
  ': vessel\n\n' +
  'event: status\ndata: {"status":"pulling"}\n\n' +
  'data: first line\ndata: second line\n\n' +
  ': keep-alive\n\n' +
  'event: progress\ndata:{"current":5}\n\n' +
  'event: deleted\r\ndata: {"name":"x"}\r\n\r\n';

const EXPECTED: SseEvent[] = [
  { event: 'status', data: '{"status":"pulling"}' },
  { event: 'message', data: 'first line\nsecond line' },
  { event: 'progress', data: '{"current":5}' },
  { event: 'deleted', data: '{"name":"x"}' },
];

function feed(chunks: string[]): SseEvent[] {
  const p = new SseParser();
  return chunks.flatMap((c) => p.push(c));
}

describe('SseParser', () => {
  test('the whole stream in one chunk', () => {
    assert.deepEqual(feed([STREAM]), EXPECTED);
  });

  test('split into two chunks at every position (CRLF split included)', () => {
    for (let i = 0; i <= STREAM.length; i++) {
      assert.deepEqual(feed([STREAM.slice(0, i), STREAM.slice(i)]), EXPECTED, `split at ${i}`);
    }
  });

  test('one character at a time', () => {
    assert.deepEqual(feed([...STREAM]), EXPECTED);
  });

  test('an event is only emitted at the blank line that ends it', () => {
    const p = new SseParser();
    assert.deepEqual(p.push('event: status\ndata: a\n'), []);
    assert.deepEqual(p.push('\n'), [{ event: 'status', data: 'a' }]);
  });

  test('the event name resets to message after each event', () => {
    assert.deepEqual(feed(['event: x\ndata: 1\n\ndata: 2\n\n']), [
      { event: 'x', data: '1' },
      { event: 'message', data: '2' },
    ]);
  });

  test('blocks without data, comments and unknown fields produce nothing', () => {
    assert.deepEqual(feed(['event: lonely\n\n: comment\n\nid: 7\nretry: 10\n\n']), []);
  });

  test('only one leading space is stripped; colons in values survive; a bare data line is empty', () => {
    assert.deepEqual(feed(['data:  two spaces\ndata: a:b:c\ndata\n\n']), [
      { event: 'message', data: ' two spaces\na:b:c\n' },
    ]);
  });
});
