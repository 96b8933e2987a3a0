import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MarkerParser, parseMarkerLine, type BootMarker } from '../../../src/guest/markers.js';

const CONSOLE =
  '[    0.000000] Linux version 6.1\r\nVESSEL-MARKER program-start\nvessel-init: root filesystem is erofs\n' +
  'VESSEL-MARKER agent-ready\r\nhello from the app\nVESSEL-MARKERS are not markers\n  VESSEL-MARKER indented is app output\n' +
  'VESSEL-MARKER exit 3\n';

function feed(chunks: Buffer[]): { log: string; markers: BootMarker[] } {
  const p = new MarkerParser();
  const logs: Buffer[] = [];
  const markers: BootMarker[] = [];
  for (const c of chunks) {
    const r = p.push(c);
    logs.push(r.log);
    markers.push(...r.markers);
  }
  logs.push(p.flush());
  return { log: Buffer.concat(logs).toString(), markers };
}

describe('boot marker parser', () => {
  test('parses each marker line', () => {
    assert.deepEqual(parseMarkerLine('VESSEL-MARKER program-start'), { kind: 'program-start' });
    assert.deepEqual(parseMarkerLine('VESSEL-MARKER agent-ready\r'), { kind: 'agent-ready' });
    assert.deepEqual(parseMarkerLine('VESSEL-MARKER failed entrypoint /app not found'), {
      kind: 'failed',
      reason: 'entrypoint /app not found',
    });
    assert.deepEqual(parseMarkerLine('VESSEL-MARKER exit 137'), { kind: 'exit', code: 137 });
    assert.equal(parseMarkerLine('VESSEL-MARKER exit abc'), undefined);
    assert.equal(parseMarkerLine('hello'), undefined);
  });

  test('markers are removed from the app log at every possible split point', () => {
    const bytes = Buffer.from(CONSOLE);
    const want = feed([bytes]);
    assert.deepEqual(
      want.markers.map((m) => m.kind),
      ['program-start', 'agent-ready', 'exit'],
    );
    assert.doesNotMatch(want.log, /^VESSEL-MARKER (program-start|agent-ready|exit)/m);
    assert.match(want.log, /hello from the app/);
    assert.match(want.log, /VESSEL-MARKERS are not markers/);
    assert.match(want.log, / {2}VESSEL-MARKER indented is app output/);
    for (let i = 0; i <= bytes.length; i++) {
      for (const j of [i, Math.min(bytes.length, i + 1), Math.min(bytes.length, i + 13)]) {
        const got = feed([bytes.subarray(0, i), bytes.subarray(i, j), bytes.subarray(j)]);
        assert.equal(got.log, want.log, `split at ${i}/${j}`);
        assert.deepEqual(got.markers, want.markers, `split at ${i}/${j}`);
      }
    }
  });

  test('an unfinished marker-looking line is released by flush', () => {
    const p = new MarkerParser();
    assert.equal(p.push(Buffer.from('VESSEL-MAR')).log.length, 0);
    assert.equal(p.flush().toString(), 'VESSEL-MAR');
  });
});
