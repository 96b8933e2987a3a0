// The exec WebSocket's message codec: binary messages with a stream byte, JSON text
// messages, close codes and exit codes.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Value } from '@sinclair/typebox/value';
import { isVesselError } from '../../../src/core/errors.js';
import {
  EXEC_MAX_DATA,
  ExecControlSchema,
  ExecStartSchema,
  decodeExecData,
  encodeExecData,
  encodeExecDataChunks,
  execCloseCode,
  parseExecText,
  shellExitCode,
  type ExecStreamName,
} from '../../../src/core/exec-stream.js';

describe('exec stream codec', () => {
  test('binary messages round-trip for every stream, including empty and binary payloads', () => {
    const names: ExecStreamName[] = ['stdin', 'stdout', 'stderr'];
    for (const [i, stream] of names.entries()) {
      for (const data of [Buffer.alloc(0), Buffer.from('héllo\n'), randomBytes(1000)]) {
        const message = encodeExecData(stream, data);
        assert.equal(message[0], i, `${stream} is stream byte ${i}, like its fd`);
        assert.equal(message.length, data.length + 1);
        const back = decodeExecData(message);
        assert.equal(back.stream, stream);
        assert.deepEqual(back.data, data);
      }
    }
  });

  test('large writes are split into messages of at most EXEC_MAX_DATA bytes, in order', () => {
    const data = randomBytes(EXEC_MAX_DATA * 2 + 17);
    const messages = encodeExecDataChunks('stdout', data);
    assert.equal(messages.length, 3);
    for (const m of messages) assert.ok(m.length <= EXEC_MAX_DATA + 1);
    const joined = Buffer.concat(messages.map((m) => decodeExecData(m).data));
    assert.deepEqual(joined, data);
    assert.deepEqual(encodeExecDataChunks('stdin', Buffer.alloc(0)), []);
  });

  test('an empty binary message or an unknown stream byte is invalid_argument', () => {
    assert.throws(
      () => decodeExecData(Buffer.alloc(0)),
      (err) => isVesselError(err, 'invalid_argument') && /no stream byte/.test(err.message),
    );
    for (const id of [3, 4, 255]) {
      assert.throws(
        () => decodeExecData(Buffer.from([id, 1, 2])),
        (err) => isVesselError(err, 'invalid_argument') && err.message.includes(`byte ${id}`),
      );
    }
  });

  test('text messages must be JSON objects with a string type', () => {
    assert.deepEqual(parseExecText('{"type":"eof"}'), { type: 'eof' });
    for (const bad of ['', 'not json', '[]', 'null', '"exec"', '{"type":5}', '{}']) {
      assert.throws(
        () => parseExecText(bad),
        (err) => isVesselError(err, 'invalid_argument'),
        `rejects ${JSON.stringify(bad)}`,
      );
    }
  });

  test('the schemas accept the documented messages and refuse bad ones', () => {
    assert.ok(Value.Check(ExecStartSchema, { type: 'exec', argv: ['sh'] }));
    assert.ok(
      Value.Check(ExecStartSchema, {
        type: 'exec',
        argv: ['sh', '-c', 'x'],
        env: ['A=1'],
        cwd: '/',
        user: '0:0',
        tty: true,
        rows: 30,
        cols: 100,
        stdin: true,
      }),
    );
    for (const bad of [
      { type: 'exec', argv: [] },
      { type: 'exec' },
      { type: 'exec', argv: ['sh'], rows: 0 },
      { type: 'exec', argv: ['sh'], cols: 70000 },
      { type: 'exec', argv: ['sh'], env: ['NOEQUALS'] },
      { type: 'exec', argv: ['sh'], tty: 'yes' },
      { type: 'exec', argv: ['sh'], extra: 1 },
    ]) {
      assert.equal(Value.Check(ExecStartSchema, bad), false, JSON.stringify(bad));
    }
    for (const ok of [
      { type: 'resize', rows: 50, cols: 132 },
      { type: 'signal', signal: 2 },
      { type: 'eof' },
    ])
      assert.ok(Value.Check(ExecControlSchema, ok), JSON.stringify(ok));
    for (const bad of [
      { type: 'resize', rows: 50 },
      { type: 'signal', signal: 0 },
      { type: 'signal', signal: 65 },
      { type: 'eof', now: true },
      { type: 'exit', code: 0 },
    ])
      assert.equal(Value.Check(ExecControlSchema, bad), false, JSON.stringify(bad));
  });

  test('close codes are 4000 + the HTTP status; exit codes are code or 128 + signal', () => {
    assert.equal(execCloseCode(400), 4400);
    assert.equal(execCloseCode(404), 4404);
    assert.equal(execCloseCode(409), 4409);
    assert.equal(execCloseCode(500), 4500);
    assert.equal(shellExitCode({ code: 7, signal: null }), 7);
    assert.equal(shellExitCode({ code: 0, signal: null }), 0);
    assert.equal(shellExitCode({ code: null, signal: 9 }), 137);
    assert.equal(shellExitCode({ code: null, signal: null }), 1);
  });
});
