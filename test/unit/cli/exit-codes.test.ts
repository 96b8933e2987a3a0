// Exit codes scripts rely on: one per error kind, 1 for anything else.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  EXIT,
  exitCodeFor,
  exitCodeForImageError,
  exitCodeForKind,
} from '../../../src/cli/exit-codes.js';
import {
  ERROR_CODES,
  VesselError,
  type ErrorCode,
  type ErrorKind,
} from '../../../src/core/errors.js';

const BY_KIND: Record<ErrorKind, number> = {
  InvalidArgument: 2,
  Unavailable: 3,
  NotFound: 4,
  AlreadyExists: 5,
  Conflict: 5,
  FailedPrecondition: 5,
  Unauthenticated: 1,
  ResourceExhausted: 1,
  Internal: 1,
};

describe('exit codes', () => {
  test('the documented numbers', () => {
    assert.deepEqual(EXIT, {
      ok: 0,
      failure: 1,
      usage: 2,
      unavailable: 3,
      notFound: 4,
      conflict: 5,
    });
  });

  test('exitCodeForKind for every kind', () => {
    for (const [kind, code] of Object.entries(BY_KIND)) {
      assert.equal(exitCodeForKind(kind as ErrorKind), code, kind);
    }
  });

  test('exitCodeFor a VesselError follows its kind, for every registered code', () => {
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
      assert.equal(exitCodeFor(new VesselError(code, 'x')), BY_KIND[ERROR_CODES[code].kind], code);
    }
    assert.equal(exitCodeFor(new VesselError('invalid_reference', 'x')), 2);
    assert.equal(exitCodeFor(new VesselError('daemon_unreachable', 'x')), 3);
    assert.equal(exitCodeFor(new VesselError('image_not_found', 'x')), 4);
    assert.equal(exitCodeFor(new VesselError('image_in_use', 'x')), 5);
  });

  test('anything that is not a VesselError exits 1', () => {
    for (const err of [
      new Error('x'),
      new TypeError('y'),
      'string',
      undefined,
      { code: 'not_found', kind: 'NotFound' },
    ]) {
      assert.equal(exitCodeFor(err), 1, JSON.stringify(err) ?? 'undefined');
    }
  });

  test('exitCodeForImageError maps a stored error code; unknown or none is 1', () => {
    assert.equal(exitCodeForImageError('registry_unavailable'), 3);
    assert.equal(exitCodeForImageError('manifest_unknown'), 4);
    assert.equal(exitCodeForImageError('unsafe_layer'), 2);
    assert.equal(exitCodeForImageError('tool_missing'), 5);
    assert.equal(exitCodeForImageError('disk_full'), 1);
    assert.equal(exitCodeForImageError('made_up_code'), 1);
    assert.equal(exitCodeForImageError(''), 1);
    assert.equal(exitCodeForImageError(null), 1);
  });

  test('exitCodeForImageError is not fooled by Object.prototype names', () => {
    // The code comes from the daemon over the wire; it must still give a number.
    for (const code of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
      assert.equal(exitCodeForImageError(code), 1, code);
    }
  });
});
