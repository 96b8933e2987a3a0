// CLI formatting helpers.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ago, humanBytes, shortDigest, table } from '../../../src/cli/output.js';

describe('humanBytes', () => {
  test('decimal units with one decimal below 10 and none above', () => {
    const cases: [number | null | undefined, string][] = [
      [null, '-'],
      [undefined, '-'],
      [0, '0 B'],
      [999, '999 B'],
      [1000, '1.0 kB'],
      [1500, '1.5 kB'],
      [12_345, '12 kB'],
      [999_499, '999 kB'],
      [5_300_000, '5.3 MB'],
      [7e9, '7.0 GB'],
      [2.5e12, '2.5 TB'],
      [3e15, '3000 TB'],
    ];
    for (const [n, want] of cases) assert.equal(humanBytes(n), want, String(n));
  });
});

describe('shortDigest', () => {
  test('12 hex characters without the algorithm; - for nothing', () => {
    assert.equal(shortDigest(`sha256:0123456789abcdef${'0'.repeat(48)}`), '0123456789ab');
    assert.equal(shortDigest('0123456789abcdef'), '0123456789ab');
    assert.equal(shortDigest(null), '-');
    assert.equal(shortDigest(undefined), '-');
    assert.equal(shortDigest(''), '-');
  });
});

describe('ago', () => {
  test('seconds, minutes, hours, days; never negative', () => {
    const now = Date.parse('2024-01-10T12:00:00Z');
    assert.equal(ago('2024-01-10T11:59:30Z', now), '30s ago');
    assert.equal(ago('2024-01-10T11:58:00Z', now), '2m ago');
    assert.equal(ago('2024-01-10T09:00:00Z', now), '3h ago');
    assert.equal(ago('2024-01-06T12:00:00Z', now), '4d ago');
    assert.equal(ago('2024-01-10T12:00:05Z', now), '0s ago');
  });
});

describe('table', () => {
  test('columns are left-aligned to the widest cell with three spaces between', () => {
    const out = table(
      ['NAME', 'STATUS', 'SIZE'],
      [
        ['docker.io/library/alpine:latest', 'ready', '3.4 MB'],
        ['x', 'pulling', '-'],
      ],
    );
    assert.equal(
      out,
      [
        'NAME                              STATUS    SIZE',
        'docker.io/library/alpine:latest   ready     3.4 MB',
        'x                                 pulling   -',
      ].join('\n'),
    );
  });

  test('every column after the first starts at the same offset on every line', () => {
    const rows = [
      ['a', 'bb', 'ccc', 'd'],
      ['eeeeee', 'f', 'g', 'hhhhhhhh'],
    ];
    const lines = table(['H1', 'HEADER2', 'H3', 'H4'], rows).split('\n');
    const starts = (line: string, cells: string[]): number[] => {
      let from = 0;
      return cells.map((c) => {
        const at = line.indexOf(c, from);
        from = at + c.length;
        return at;
      });
    };
    const header = starts(lines[0]!, ['H1', 'HEADER2', 'H3', 'H4']);
    assert.deepEqual(starts(lines[1]!, rows[0]!), header);
    assert.deepEqual(starts(lines[2]!, rows[1]!), header);
  });

  test('no trailing spaces; missing cells are blank; no rows gives just the header', () => {
    const out = table(['A', 'B'], [['x'], ['longer', 'y']]);
    for (const line of out.split('\n')) assert.equal(line, line.trimEnd());
    assert.equal(out, 'A        B\nx\nlonger   y');
    assert.equal(table(['A', 'B'], []), 'A   B');
  });
});
