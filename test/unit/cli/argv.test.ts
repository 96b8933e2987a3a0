import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { hoistGlobalFlags } from '../../../src/cli/main.js';

describe('global flags anywhere, guest commands untouched', () => {
  test('global flags after a subcommand move to the front', () => {
    assert.deepEqual(hoistGlobalFlags(['image', 'ls', '--json']), ['--json', 'image', 'ls']);
    assert.deepEqual(hoistGlobalFlags(['ps', '-a', '--data-dir', '/d', '--json']), [
      '--data-dir',
      '/d',
      '--json',
      'ps',
      '-a',
    ]);
    assert.deepEqual(hoistGlobalFlags(['--json', 'ps']), ['--json', 'ps']);
  });

  test('arguments of the guest command are never taken', () => {
    assert.deepEqual(hoistGlobalFlags(['run', 'alpine', 'echo', '--json']), [
      'run',
      'alpine',
      'echo',
      '--json',
    ]);
    assert.deepEqual(hoistGlobalFlags(['run', '--json', 'alpine', '--', 'x', '--json']), [
      '--json',
      'run',
      'alpine',
      '--',
      'x',
      '--json',
    ]);
    assert.deepEqual(hoistGlobalFlags(['exec', 'web', 'sh', '-c', 'ls --json']), [
      'exec',
      'web',
      'sh',
      '-c',
      'ls --json',
    ]);
  });
});
