/**
 * A 64 KiB firmware image, built in code, that the accelerator probe boots
 * with `qemu-system-x86_64 -bios <file>`.
 *
 * What it does, and the serial bytes it writes to COM1 (0x3f8):
 *   'R'  reset vector reached (real mode, first instruction after power-on)
 *   ...  builds identity page tables at 0x1000, enables PAE + long mode
 *   'L'  running 64-bit code — the mode a Linux kernel runs in
 *   ...  `outer` times: rdmsr(IA32_APIC_BASE), rdtsc, cpuid, out 0x80 (each a
 *        VM exit or an emulated instruction), then `inner` iterations of a
 *        register-only dec/jnz loop (pure guest CPU work)
 *   'D'  done; then `cli; hlt` forever
 *
 * The host times 'L' → 'D'. Encodings were checked against GNU as/objdump.
 */

export const MARK_RESET = 0x52; // 'R'
export const MARK_LONG_MODE = 0x4c; // 'L'
export const MARK_DONE = 0x44; // 'D'

export const PAYLOAD_SIZE = 0x10000;
/** The image is mapped below 1 MiB at 0xF0000 (the ISA BIOS alias) and at 0xFFFF0000. */
const LOAD_BASE = 0xf0000;
/** The CPU starts at CS:IP = F000:FFF0 (physical 0xFFFFFFF0, the image's last 16 bytes). */
const RESET_VECTOR = 0xfff0;

export interface PayloadOptions {
  /** Iterations of the exit-heavy outer loop. */
  readonly outer: number;
  /** Register-only iterations per outer iteration. */
  readonly inner: number;
}

/**
 * 10^7 loop iterations and 1000 rounds of exits: ~0.05–0.8 s under TCG on
 * the development host (idle vs. loaded), tens of milliseconds on a working KVM.
 */
export const DEFAULT_PAYLOAD: PayloadOptions = { outer: 1000, inner: 10000 };

type Fixup = { at: number; label: string; kind: 'rel8' | 'abs16' | 'abs32'; add: number };

/** Just enough of an assembler: raw bytes, labels, and fix-ups resolved at the end. */
class Assembler {
  readonly bytes: number[] = [];
  private readonly labels = new Map<string, number>();
  private readonly fixups: Fixup[] = [];

  emit(...bytes: number[]): this {
    this.bytes.push(...bytes);
    return this;
  }
  u16(n: number): this {
    return this.emit(n & 0xff, (n >>> 8) & 0xff);
  }
  u32(n: number): this {
    return this.emit(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }
  label(name: string): this {
    this.labels.set(name, this.bytes.length);
    return this;
  }
  ref(label: string, kind: Fixup['kind'], add = 0): this {
    this.fixups.push({ at: this.bytes.length, label, kind, add });
    const width = kind === 'rel8' ? 1 : kind === 'abs16' ? 2 : 4;
    return this.emit(...new Array<number>(width).fill(0));
  }
  align(n: number): this {
    while (this.bytes.length % n !== 0) this.emit(0);
    return this;
  }

  link(): Uint8Array {
    const out = Uint8Array.from(this.bytes);
    const view = new DataView(out.buffer);
    for (const f of this.fixups) {
      const target = this.labels.get(f.label);
      if (target === undefined) throw new Error(`payload: undefined label ${f.label}`);
      if (f.kind === 'rel8') {
        const rel = target - (f.at + 1);
        if (rel < -128 || rel > 127) throw new Error(`payload: jump to ${f.label} out of range`);
        view.setInt8(f.at, rel);
      } else if (f.kind === 'abs16') {
        view.setUint16(f.at, target + f.add, true);
      } else {
        view.setUint32(f.at, target + f.add, true);
      }
    }
    return out;
  }
}

function checkCount(name: string, n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 0xffffffff) {
    throw new RangeError(`payload ${name} must be an integer in 1..2^32-1, got ${n}`);
  }
}

/** Build the 64 KiB firmware image. Pure: same options, same bytes. */
export function buildProbePayload(options: PayloadOptions = DEFAULT_PAYLOAD): Uint8Array {
  checkCount('outer', options.outer);
  checkCount('inner', options.inner);
  const a = new Assembler();
  const com1 = [0xba, 0xf8, 0x03]; // mov dx, 0x3f8

  // --- 16-bit real mode, CS = 0xF000 (entered by the far jump at the reset vector)
  a.label('entry');
  a.emit(0xfa, 0xfc); // cli; cld
  a.emit(...com1, 0xb0, MARK_RESET, 0xee); // mov al, 'R'; out dx, al
  a.emit(0x31, 0xc0, 0x8e, 0xc0); // xor ax, ax; mov es, ax
  a.emit(0xbf).u16(0x1000); // mov di, 0x1000
  a.emit(0xb9).u16(0x0c00); // mov cx, 3 pages of dwords
  a.emit(0x66, 0x31, 0xc0, 0x66, 0xf3, 0xab); // xor eax, eax; rep stosd
  a.emit(0x26, 0x66, 0xc7, 0x06).u16(0x1000).u32(0x2003); // PML4[0] = PDPT | P | RW
  a.emit(0x26, 0x66, 0xc7, 0x06).u16(0x2000).u32(0x3003); // PDPT[0] = PD | P | RW
  a.emit(0x26, 0x66, 0xc7, 0x06).u16(0x3000).u32(0x0083); // PD[0] = 2 MiB page at 0
  a.emit(0x2e, 0x66, 0x0f, 0x01, 0x16).ref('gdtr', 'abs16'); // lgdt cs:[gdtr]
  a.emit(0x0f, 0x20, 0xe0, 0x66, 0x83, 0xc8, 0x20, 0x0f, 0x22, 0xe0); // cr4 |= PAE
  a.emit(0x66, 0xb8).u32(0x1000).emit(0x0f, 0x22, 0xd8); // cr3 = 0x1000
  a.emit(0x66, 0xb9).u32(0xc0000080).emit(0x0f, 0x32); // rdmsr EFER
  a.emit(0x66, 0x0d).u32(0x100).emit(0x0f, 0x30); // EFER |= LME; wrmsr
  a.emit(0x0f, 0x20, 0xc0, 0x66, 0x0d).u32(0x80000001).emit(0x0f, 0x22, 0xc0); // cr0 |= PG | PE
  a.emit(0x66, 0xea).ref('code64', 'abs32', LOAD_BASE).u16(0x08); // jmp far 0x08:code64

  // --- 64-bit long mode
  a.label('code64');
  a.emit(0xb8).u32(0x10).emit(0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0); // ds = es = ss = 0x10
  a.emit(0x66, ...com1, 0xb0, MARK_LONG_MODE, 0xee); // 'L'
  a.emit(0xbd).u32(options.outer); // mov ebp, outer
  a.label('outer');
  a.emit(0xb9).u32(0x1b).emit(0x0f, 0x32); // rdmsr IA32_APIC_BASE
  a.emit(0x0f, 0x31); // rdtsc
  a.emit(0x31, 0xc0, 0x0f, 0xa2); // xor eax, eax; cpuid
  a.emit(0xe6, 0x80); // out 0x80, al
  a.emit(0xbe).u32(options.inner); // mov esi, inner
  a.label('inner');
  a.emit(0xff, 0xce, 0x75).ref('inner', 'rel8'); // dec esi; jnz inner
  a.emit(0xff, 0xcd, 0x75).ref('outer', 'rel8'); // dec ebp; jnz outer
  a.emit(0x66, ...com1, 0xb0, MARK_DONE, 0xee); // 'D'
  a.label('halt');
  a.emit(0xfa, 0xf4, 0xeb).ref('halt', 'rel8'); // cli; hlt; jmp halt

  // --- GDT (accessed bits preset so the CPU never writes to the ROM)
  a.align(8).label('gdt');
  a.u32(0).u32(0); // null
  a.u32(0x0000ffff).u32(0x00af9b00); // 0x08: 64-bit code, present, DPL 0
  a.u32(0x0000ffff).u32(0x00cf9300); // 0x10: data, present, writable
  a.label('gdtr');
  a.u16(3 * 8 - 1).ref('gdt', 'abs32', LOAD_BASE);

  const code = a.link();
  const image = new Uint8Array(PAYLOAD_SIZE).fill(0xf4); // hlt everywhere else
  image.set(code, 0);
  // Reset vector: jmp far 0xF000:0x0000 (into the low alias, where `entry` is at offset 0).
  image.set([0xea, 0x00, 0x00, 0x00, 0xf0], RESET_VECTOR);
  return image;
}
