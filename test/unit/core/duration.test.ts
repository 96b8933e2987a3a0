import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatGoDuration,
  parseDurationOrSeconds,
  parseGoDuration,
} from '../../../src/core/duration.js';
import { isVesselError } from '../../../src/core/errors.js';
import { formatSize, parseSize } from '../../../src/core/size.js';
import { foldDeepTags, matchTags } from '../../../src/core/tags.js';

describe('Go durations', () => {
  test('units, fractions, sums and signs, as time.ParseDuration reads them', () => {
    const cases: [string, number][] = [
      ['120s', 120_000],
      ['5m', 300_000],
      ['1h30m', 5_400_000],
      ['500ms', 500],
      ['1.5h', 5_400_000],
      ['.5s', 500],
      ['1m30.5s', 90_500],
      ['2h45m10s', 9_910_000],
      ['1500us', 1.5],
      ['1500µs', 1.5],
      ['1500μs', 1.5],
      ['2000000ns', 2],
      ['0', 0],
      ['0s', 0],
      ['+3s', 3000],
      ['-3s', -3000],
      [' 10s ', 10_000],
    ];
    for (const [input, ms] of cases) assert.equal(parseGoDuration(input, 'ttl'), ms, input);
  });

  test('malformed input is invalid_argument naming the field and the value', () => {
    for (const input of ['', '10', '1d', 'abc', '5 m', 's', '1h-5m', '--1s', '1.2.3s', '-']) {
      assert.throws(
        () => parseGoDuration(input, 'timeout'),
        (err: unknown) =>
          isVesselError(err, 'invalid_argument') &&
          err.message.startsWith('timeout must be a duration') &&
          err.message.includes(`"${input}"`) &&
          err.details?.field === 'timeout',
        input,
      );
    }
  });

  test('Vessel numbers stay seconds; strings of digits too; negatives are refused', () => {
    assert.equal(parseDurationOrSeconds(120, 'timeout'), 120_000);
    assert.equal(parseDurationOrSeconds(0.5, 'timeout'), 500);
    assert.equal(parseDurationOrSeconds('120', 'timeout'), 120_000);
    assert.equal(parseDurationOrSeconds('120s', 'timeout'), 120_000);
    assert.equal(parseDurationOrSeconds('2m', 'timeout'), 120_000);
    for (const bad of [-1, '-5s', Number.NaN]) {
      assert.throws(() => parseDurationOrSeconds(bad, 'ttl'), /ttl must be a duration/);
    }
  });

  test('formatting', () => {
    assert.equal(formatGoDuration(0), '0s');
    assert.equal(formatGoDuration(250), '250ms');
    assert.equal(formatGoDuration(90_000), '1m30s');
    assert.equal(formatGoDuration(5_400_000), '1h30m0s');
    assert.equal(parseGoDuration(formatGoDuration(9_910_500), 'x'), 9_910_500);
  });
});

describe('human-readable sizes (binary units, as Go datasize)', () => {
  test('parse', () => {
    assert.equal(parseSize('1GB', 'size'), 1024 ** 3);
    assert.equal(parseSize('512MB', 'size'), 512 * 1024 ** 2);
    assert.equal(parseSize('2G', 'size'), 2 * 1024 ** 3);
    assert.equal(parseSize('1.5GiB', 'size'), 1.5 * 1024 ** 3);
    assert.equal(parseSize('10 gb', 'size'), 10 * 1024 ** 3);
    assert.equal(parseSize('4096', 'size'), 4096);
    assert.equal(parseSize('64KB', 'size'), 65536);
    for (const bad of ['', 'GB', '1XB', '-1GB', '1.5', 'ten']) {
      assert.throws(
        () => parseSize(bad, 'overlay_size'),
        (err: unknown) =>
          isVesselError(err, 'invalid_argument') && err.message.startsWith('overlay_size must be'),
        bad,
      );
    }
  });

  test('format: the largest whole unit', () => {
    assert.equal(formatSize(1024 ** 3), '1GB');
    assert.equal(formatSize(512 * 1024 ** 2), '512MB');
    assert.equal(formatSize(1536 * 1024 ** 2), '1536MB');
    assert.equal(formatSize(4 * 1024 ** 4), '4TB');
    assert.equal(formatSize(1000), '1000B');
    assert.equal(parseSize(formatSize(3 * 1024 ** 3), 'x'), 3 * 1024 ** 3);
  });
});

describe('tags', () => {
  test('a filter matches when every pair is present', () => {
    const tags = { team: 'backend', env: 'dev' };
    assert.equal(matchTags(tags, undefined), true);
    assert.equal(matchTags(tags, {}), true);
    assert.equal(matchTags(tags, { team: 'backend' }), true);
    assert.equal(matchTags(tags, { team: 'backend', env: 'dev' }), true);
    assert.equal(matchTags(tags, { team: 'backend', env: 'prod' }), false);
    assert.equal(matchTags(undefined, { team: 'backend' }), false);
  });

  test('deepObject query keys fold into one object', () => {
    assert.deepEqual(
      foldDeepTags({ state: 'Running', 'tags[team]': 'a', 'tags[env]': ['x', 'y'] }),
      {
        state: 'Running',
        tags: { team: 'a', env: 'y' },
      },
    );
    assert.deepEqual(foldDeepTags({ state: 'Running' }), { state: 'Running' });
  });
});
