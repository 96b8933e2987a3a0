// --chown and --chmod of COPY/ADD: names and ids resolved against the image's
// accounts, octal modes, and clear errors for everything else.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import { parseChmod, parseChown } from '../../../src/builds/chown-chmod.js';

describe('parseChown and parseChmod', () => {
  const accounts = {
    user: (n: string): number | undefined => ({ app: 1000, root: 0 })[n],
    group: (n: string): number | undefined => ({ staff: 50, root: 0 })[n],
  };
  test('names, ids and the uid-as-gid default', () => {
    assert.deepEqual(parseChown('1000:1000', accounts), { uid: 1000, gid: 1000 });
    assert.deepEqual(parseChown('55', accounts), { uid: 55, gid: 55 });
    assert.deepEqual(parseChown('app', accounts), { uid: 1000, gid: 1000 });
    assert.deepEqual(parseChown('app:staff', accounts), { uid: 1000, gid: 50 });
    assert.deepEqual(parseChown('0:staff', accounts), { uid: 0, gid: 50 });
  });
  test('errors', () => {
    const bad: [string, RegExp][] = [
      ['', /invalid --chown/],
      [':1', /invalid --chown/],
      ['1:', /invalid --chown/],
      ['a:b:c', /invalid --chown/],
      ['nobody', /no user "nobody" in the image's \/etc\/passwd/],
      ['app:nogroup', /no group "nogroup" in the image's \/etc\/group/],
      ['99999999999', /too large/],
    ];
    for (const [spec, message] of bad) {
      assert.throws(
        () => parseChown(spec, accounts),
        (err: unknown) => isVesselError(err, 'invalid_argument') && message.test(err.message),
        spec,
      );
    }
  });
  test('--chmod is octal', () => {
    assert.equal(parseChmod('755'), 0o755);
    assert.equal(parseChmod('0600'), 0o600);
    assert.equal(parseChmod('4755'), 0o4755);
    for (const bad of ['u+x', '888', '75555', ''])
      assert.throws(() => parseChmod(bad), /invalid --chmod/);
  });
});
