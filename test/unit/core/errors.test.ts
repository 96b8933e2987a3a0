// The error registry and the wrapping of foreign errors.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  ERROR_CODES,
  VesselError,
  errnoCode,
  isVesselError,
  toVesselError,
  type ErrorCode,
  type ErrorKind,
} from '../../../src/core/errors.js';

const KINDS: readonly ErrorKind[] = [
  'NotFound',
  'AlreadyExists',
  'InvalidArgument',
  'FailedPrecondition',
  'Conflict',
  'Unavailable',
  'Unauthenticated',
  'ResourceExhausted',
  'Internal',
];

describe('ERROR_CODES', () => {
  test('every code is snake_case with a kind from the closed set and a description', () => {
    for (const [code, spec] of Object.entries(ERROR_CODES)) {
      assert.match(code, /^[a-z]+(_[a-z]+)*$/, code);
      assert.ok(KINDS.includes(spec.kind), `${code}: kind ${spec.kind}`);
      assert.match(spec.description, /^[A-Z].*\.$/, `${code}: description is a sentence`);
    }
  });

  test('a VesselError takes its kind from the registry', () => {
    for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
      const err = new VesselError(code, 'm');
      assert.equal(err.kind, ERROR_CODES[code].kind);
      assert.equal(err.code, code);
      assert.equal(err.name, 'VesselError');
      assert.ok(err instanceof Error);
    }
  });
});

describe('VesselError', () => {
  test('keeps cause and details; no cause property when none given', () => {
    const cause = new Error('root');
    const err = new VesselError('not_found', 'x', { cause, details: { id: 'a' } });
    assert.equal(err.cause, cause);
    assert.deepEqual(err.details, { id: 'a' });
    const bare = new VesselError('not_found', 'x');
    assert.equal('cause' in bare, false);
    assert.equal(bare.details, undefined);
  });

  test('isVesselError with and without a code', () => {
    const err = new VesselError('conflict', 'x');
    assert.equal(isVesselError(err), true);
    assert.equal(isVesselError(err, 'conflict'), true);
    assert.equal(isVesselError(err, 'internal'), false);
    assert.equal(isVesselError(new Error('x')), false);
    assert.equal(isVesselError({ code: 'conflict', kind: 'Conflict' }), false);
  });

  test('errnoCode reads string codes only', () => {
    assert.equal(errnoCode(Object.assign(new Error('x'), { code: 'ENOENT' })), 'ENOENT');
    assert.equal(errnoCode({ code: 5 }), undefined);
    assert.equal(errnoCode(null), undefined);
    assert.equal(errnoCode('ENOENT'), undefined);
  });
});

describe('toVesselError', () => {
  test('passes VesselErrors through unchanged', () => {
    const err = new VesselError('image_not_found', 'gone');
    assert.equal(toVesselError(err, 'ctx'), err);
    assert.equal(toVesselError(err, 'ctx', 'tool_failed'), err);
  });

  test('maps ENOSPC to disk_full, keeping the cause', () => {
    const cause = Object.assign(new Error('write failed'), { code: 'ENOSPC' });
    const err = toVesselError(cause, 'writing blob sha256:ab');
    assert.equal(err.code, 'disk_full');
    assert.equal(err.kind, 'ResourceExhausted');
    assert.equal(err.message, 'writing blob sha256:ab: no space left on device');
    assert.equal(err.cause, cause);
    assert.equal(toVesselError({ code: 'ENOSPC' }, 'c').code, 'disk_full');
  });

  test('wraps anything else with the context, the given code and the cause', () => {
    const cause = Object.assign(new Error('permission denied'), { code: 'EACCES' });
    const err = toVesselError(cause, 'opening db');
    assert.equal(err.code, 'internal');
    assert.equal(err.message, 'opening db: permission denied');
    assert.equal(err.cause, cause);
    const tool = toVesselError('exit 1', 'mkfs.erofs', 'tool_failed');
    assert.equal(tool.code, 'tool_failed');
    assert.equal(tool.message, 'mkfs.erofs: exit 1');
    assert.equal(tool.cause, 'exit 1');
  });
});
