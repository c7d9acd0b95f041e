/**
 * The fuzzer's random source: a seeded PRNG (splitmix32), one independent stream per step.
 *
 * Each step draws from a stream of its own, made from the seed and the step number, so a step
 * chooses the same action with the same arguments on every run with that seed, however many
 * numbers earlier steps drew. Earlier steps may still leave a different state behind (how many
 * requests a `doIo(min 0)` found complete depends on the kernel's timing), and then the same
 * draw can mean something else; but a run never drifts just because one branch drew more.
 *
 * @module
 */

/** One splitmix32 output for state `x` (the state advances by the golden ratio each call). */
function mix(x: number): number {
  let t = x ^ (x >>> 16);
  t = Math.imul(t, 0x21f0aaad);
  t ^= t >>> 15;
  t = Math.imul(t, 0x735a2d97);
  return (t ^ (t >>> 15)) >>> 0;
}

/** A deterministic stream of pseudo-random numbers. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uniform 32-bit unsigned integer. */
  next(): number {
    this.#state = (this.#state + 0x9e3779b9) >>> 0;
    return mix(this.#state);
  }

  /** A uniform integer in [0, n) (n >= 1). */
  int(n: number): number {
    // Two draws for ranges above 2^32 (offsets are below 2^53, lengths far below).
    if (n <= 0x100000000) return Math.floor((this.next() / 0x100000000) * n);
    return Math.floor(((this.next() * 0x100000000 + this.next()) / 2 ** 64) * n);
  }

  /** A uniform integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }

  /** One element of `items` (not empty). */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** One value of `table`, each row chosen with probability proportional to its weight. */
  weighted<T>(table: readonly (readonly [number, T])[]): T {
    let total = 0;
    for (const [w] of table) total += w;
    let r = this.next() / 0x100000000 * total;
    for (const [w, v] of table) {
      if (r < w) return v;
      r -= w;
    }
    return table[table.length - 1][1];
  }

  /**
   * A new stream seeded from this one (one draw): what the child draws, however much, never
   * shifts what this stream draws next.
   */
  fork(): Rng {
    return new Rng(mix(this.next()));
  }

  /** Fills `buf` with random bytes. */
  fill(buf: Uint8Array): void {
    let i = 0;
    for (; i + 4 <= buf.length; i += 4) {
      const v = this.next();
      buf[i] = v;
      buf[i + 1] = v >>> 8;
      buf[i + 2] = v >>> 16;
      buf[i + 3] = v >>> 24;
    }
    for (; i < buf.length; i++) buf[i] = this.next();
  }
}

/** The stream of step `step` of a run with `seed` (independent of every other step's). */
export function stepRng(seed: number, step: number): Rng {
  return new Rng(mix((seed >>> 0) ^ mix(step + 0x632be5ab)));
}
