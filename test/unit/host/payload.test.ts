import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildProbePayload,
  DEFAULT_PAYLOAD,
  MARK_DONE,
  MARK_LONG_MODE,
  MARK_RESET,
  PAYLOAD_SIZE,
} from '../../../src/host/bios-payload.js';
import { payloadArgs } from '../../../src/host/payload-run.js';

const bytes = (...b: number[]): Buffer => Buffer.from(b);
const le32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};

void describe('buildProbePayload', () => {
  const image = Buffer.from(buildProbePayload({ outer: 0x01020304, inner: 0x0a0b0c0d }));

  void it('is exactly 64 KiB with a far jump to F000:0000 at the reset vector', () => {
    assert.equal(image.length, PAYLOAD_SIZE);
    assert.deepEqual([...image.subarray(0xfff0, 0xfff5)], [0xea, 0x00, 0x00, 0x00, 0xf0]);
  });

  void it('starts with cli; cld and writes R, L, D to COM1 in that order', () => {
    assert.deepEqual([...image.subarray(0, 2)], [0xfa, 0xfc]);
    const r = image.indexOf(bytes(0xb0, MARK_RESET, 0xee));
    const l = image.indexOf(bytes(0xb0, MARK_LONG_MODE, 0xee));
    const d = image.indexOf(bytes(0xb0, MARK_DONE, 0xee));
    assert.ok(r > 0 && r < l && l < d, `markers at ${r}, ${l}, ${d}`);
  });

  void it('patches the loop counts and closes the loops with short backward jumps', () => {
    const outer = image.indexOf(Buffer.concat([bytes(0xbd), le32(0x01020304)]));
    const inner = image.indexOf(Buffer.concat([bytes(0xbe), le32(0x0a0b0c0d)]));
    assert.ok(outer > 0 && inner > outer);
    // dec esi; jnz -4 (back to dec esi), right after `mov esi, inner`.
    assert.deepEqual([...image.subarray(inner + 5, inner + 9)], [0xff, 0xce, 0x75, 0xfc]);
    // dec ebp; jnz back to the instruction after `mov ebp, outer`.
    const jnz = inner + 9;
    assert.deepEqual([...image.subarray(jnz, jnz + 3)], [0xff, 0xcd, 0x75]);
    assert.equal(jnz + 4 + image.readInt8(jnz + 3), outer + 5);
  });

  void it('points the 64-bit far jump and the GDT pointer at their absolute addresses', () => {
    const gdt = image.indexOf(Buffer.concat([le32(0x0000ffff), le32(0x00af9b00)])) - 8;
    assert.ok(gdt > 0 && gdt % 8 === 0);
    const gdtr = gdt + 24;
    assert.equal(image.readUInt16LE(gdtr), 23);
    assert.equal(image.readUInt32LE(gdtr + 2), 0xf0000 + gdt);
    const lgdt = image.indexOf(bytes(0x2e, 0x66, 0x0f, 0x01, 0x16));
    assert.equal(image.readUInt16LE(lgdt + 5), gdtr);
    const ljmp = image.indexOf(bytes(0x66, 0xea));
    const target = image.readUInt32LE(ljmp + 2) - 0xf0000;
    assert.equal(image.readUInt16LE(ljmp + 6), 0x08);
    assert.equal(target, ljmp + 8, '64-bit code follows the far jump');
  });

  void it('is deterministic and rejects counts the loop cannot hold', () => {
    assert.deepEqual(buildProbePayload(DEFAULT_PAYLOAD), buildProbePayload(DEFAULT_PAYLOAD));
    assert.throws(() => buildProbePayload({ outer: 0, inner: 1 }), RangeError);
    assert.throws(() => buildProbePayload({ outer: 1, inner: 2 ** 32 }), RangeError);
    assert.throws(() => buildProbePayload({ outer: 1.5, inner: 1 }), RangeError);
  });
});

void describe('payloadArgs', () => {
  void it('builds a device-free QEMU command line that exits on reset', () => {
    const args = payloadArgs({
      accel: 'kvm',
      cpu: 'host',
      machine: 'microvm',
      biosPath: '/tmp/x/bios.bin',
    });
    assert.deepEqual(args.slice(0, 4), ['-accel', 'kvm', '-cpu', 'host']);
    for (const flag of ['-nodefaults', '-no-user-config', '-no-reboot'])
      assert.ok(args.includes(flag), flag);
    assert.equal(args[args.indexOf('-bios') + 1], '/tmp/x/bios.bin');
    assert.equal(args[args.indexOf('-serial') + 1], 'stdio');
  });

  void it('omits -cpu when no model is given', () => {
    const args = payloadArgs({ accel: 'tcg', machine: 'pc', biosPath: 'b' });
    assert.equal(args.includes('-cpu'), false);
    assert.equal(args[args.indexOf('-machine') + 1], 'pc');
  });
});
