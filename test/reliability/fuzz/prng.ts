/**
 * A seeded PRNG (mulberry32) so a fuzz run can be replayed: the seed is printed, and
 * `FUZZ_SEED=<n>` gives the same sequence of generated requests.
 */
export class Rng {
  #state: number;

  constructor(readonly seed: number) {
    this.#state = seed >>> 0;
  }

  /** The seed from `FUZZ_SEED`, or a fresh random one. */
  static fromEnv(): Rng {
    const given = process.env.FUZZ_SEED;
    const seed = given ? Number(given) : Math.floor(Math.random() * 2 ** 32);
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32)
      throw new Error(`FUZZ_SEED must be an integer in [0, 2^32), got "${given}"`);
    return new Rng(seed);
  }

  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** Lower-case letters and digits, `length` of them. */
  word(length: number): string {
    const abc = 'abcdefghijklmnopqrstuvwxyz0123456789';
    let s = '';
    for (let i = 0; i < length; i++) s += abc[Math.floor(this.next() * abc.length)];
    return s;
  }
}
