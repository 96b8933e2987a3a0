import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  FrameDecoder,
  FrameType,
  MAX_PAYLOAD,
  encodeFrame,
  type Frame,
} from '../../../src/guest/frame.js';
import { isVesselError } from '../../../src/core/errors.js';

/** A deterministic PRNG so a failing fuzz case can be replayed. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('frame codec', () => {
  test('encodes header fields big endian', () => {
    const f = encodeFrame(FrameType.stdout, 0x01020304, 'hi');
    assert.deepEqual([...f.subarray(0, 9)], [0, 0, 0, 7, 0x04, 1, 2, 3, 4]);
    assert.equal(f.subarray(9).toString(), 'hi');
  });

  test('rejects an oversized payload when encoding', () => {
    assert.throws(
      () => encodeFrame(FrameType.data, 1, Buffer.alloc(MAX_PAYLOAD + 1)),
      (e) => isVesselError(e, 'invalid_argument'),
    );
  });

  test('fuzz: any split of a frame sequence decodes to the same frames', () => {
    const rand = prng(42);
    for (let round = 0; round < 200; round++) {
      const frames: Frame[] = [];
      const n = 1 + Math.floor(rand() * 8);
      for (let i = 0; i < n; i++) {
        const size = rand() < 0.1 ? Math.floor(rand() * 70_000) : Math.floor(rand() * 40);
        frames.push({
          type: 1 + Math.floor(rand() * 16),
          stream: Math.floor(rand() * 2 ** 32),
          payload: randomBytes(size),
        });
      }
      const wire = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.stream, f.payload)));
      const dec = new FrameDecoder();
      const got: Frame[] = [];
      let off = 0;
      while (off < wire.length) {
        const step = 1 + Math.floor(rand() * (rand() < 0.5 ? 3 : 5000));
        got.push(...dec.push(wire.subarray(off, off + step)));
        off += step;
      }
      assert.equal(got.length, frames.length, `round ${round}`);
      for (const [i, f] of frames.entries()) {
        assert.equal(got[i]!.type, f.type);
        assert.equal(got[i]!.stream, f.stream);
        assert.ok(got[i]!.payload.equals(f.payload));
      }
    }
  });

  test('fuzz: random garbage either decodes or fails with a protocol error, never anything else', () => {
    const rand = prng(7);
    for (let round = 0; round < 500; round++) {
      const dec = new FrameDecoder();
      const junk = Buffer.from(
        Array.from({ length: Math.floor(rand() * 64) }, () => Math.floor(rand() * 256)),
      );
      try {
        for (const f of dec.push(junk)) assert.ok(f.payload.length <= MAX_PAYLOAD);
      } catch (err) {
        assert.ok(isVesselError(err, 'internal'), String(err));
        assert.match((err as Error).message, /frame length \d+ is out of range/);
      }
    }
  });

  test('a length below the header or above the limit is rejected before buffering the body', () => {
    const small = Buffer.from([0, 0, 0, 4, 1, 0, 0, 0]);
    assert.throws(() => new FrameDecoder().push(small), /out of range/);
    const big = Buffer.alloc(4);
    big.writeUInt32BE(5 + MAX_PAYLOAD + 1);
    assert.throws(() => new FrameDecoder().push(big), /out of range/);
  });
});
