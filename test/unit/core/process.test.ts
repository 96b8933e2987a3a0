// The process runner: output lines as they come, and aborting a process group leaves no
// grandchild behind (golden images run mmdebstrap this way).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import { run } from '../../../src/core/process.js';

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('run', () => {
  test('onLine gets every line of stdout and stderr, the last one without a newline too', async () => {
    const lines: string[] = [];
    await run('sh', ['-c', 'echo one; echo two >&2; printf "three\\r\\nfour"'], {
      onLine: (l) => lines.push(l),
    });
    assert.deepEqual([...lines].sort(), ['four', 'one', 'three', 'two']);
  });

  test('aborting a process group ends the grandchildren as well', async () => {
    const abort = new AbortController();
    const lines: string[] = [];
    const done = run('sh', ['-c', 'sleep 60 & echo $!; wait'], {
      signal: abort.signal,
      processGroup: true,
      onLine: (l) => lines.push(l),
    }).then(
      () => 'resolved',
      (err: unknown) => (isVesselError(err, 'tool_failed') ? 'failed' : String(err)),
    );
    for (let i = 0; i < 100 && lines.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    const sleeper = Number(lines[0]);
    assert.ok(sleeper > 0 && alive(sleeper), 'the grandchild runs');
    abort.abort();
    assert.equal(await done, 'failed');
    for (let i = 0; i < 100 && alive(sleeper); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(alive(sleeper), false, 'the grandchild is gone');
  });
});
