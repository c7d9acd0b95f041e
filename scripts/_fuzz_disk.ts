/**
 * The fuzzer's model of the target's contents: the byte the target must hold at every offset,
 * or that it cannot be known.
 *
 * A write that completed defines its bytes. Where another write-like request (write, write
 * zeroes, discard) overlapped it while it was in flight, either may have landed last, so that
 * part becomes unknown until a later write defines it again. A discard lets each byte be its old
 * value or zero (libblkio: "discard makes data undefined (may still read old data)"), and a write
 * aborted in flight its old value or the write's. A read that finds an unknown byte learns it:
 * with nothing in flight over it, the target holds that byte from now on, and later reads must
 * agree.
 *
 * Files can grow (`can-grow`): bytes past the end read as zeroes, and the size is kept as a
 * range, since a write zeroes past the end may or may not extend it ("file size past EOF
 * unspecified") and a failed write past it may have landed in part.
 *
 * @module
 */

/** A byte range `[start, end)`. */
export type Interval = readonly [number, number];

/** Nothing is known about the byte. */
export const UNKNOWN = 0;
/** The byte must be `expected`. */
export const KNOWN = 1;
/**
 * The byte must be `expected` or `alt` (zero after a discard of known data; an aborted write's
 * byte).
 */
export const EITHER = 2;

/** Origin of bytes of the initial contents, and of bytes learned from a read. */
export const INITIAL = -1;
export const LEARNED = -2;

/**
 * How a completed request changes the model. "either" is a write that may or may not have
 * landed (aborted): each byte keeps its value or takes the write's.
 */
export type Effect = "data" | "zero" | "discard" | "either" | "forget";

/** The overlap of `[a0, a1)` and `[b0, b1)`, or null. */
export function overlap(a0: number, a1: number, b0: number, b1: number): Interval | null {
  const s = Math.max(a0, b0), e = Math.min(a1, b1);
  return s < e ? [s, e] : null;
}

/** The expected contents of the target. */
export class DiskModel {
  /** Bytes modelled: requests never reach past this (files: the size plus room to grow). */
  readonly limit: number;
  readonly growable: boolean;
  readonly #expected: Uint8Array;
  readonly #state: Uint8Array;
  /** The other value an EITHER byte may have. */
  readonly #alt: Uint8Array;
  /** The request that defined each byte last (INITIAL, LEARNED, or a request id). */
  readonly #origin: Int32Array;
  /** The size is somewhere in [sizeLo, sizeHi] (equal for a block device). */
  sizeLo: number;
  sizeHi: number;
  /** Bytes reads were compared with an expected value, and bytes they taught the model. */
  compared = 0;
  learned = 0;

  constructor(initial: Uint8Array, limit: number, growable: boolean) {
    this.limit = limit;
    this.growable = growable;
    this.#expected = new Uint8Array(limit);
    this.#expected.set(initial);
    // Past the end of a file (up to limit) reads return zeroes: known bytes too.
    this.#state = new Uint8Array(limit).fill(KNOWN);
    this.#alt = new Uint8Array(limit);
    this.#origin = new Int32Array(limit).fill(INITIAL);
    this.sizeLo = this.sizeHi = initial.length;
  }

  /** The expected byte at `at` and its state (for messages and the final cross-check). */
  byteAt(at: number): { value: number; state: number; alt: number; origin: number } {
    const state = this.#state[at];
    return { value: this.#expected[at], state, alt: this.#alt[at], origin: this.#origin[at] };
  }

  /** Whether `got` is a value the model allows at `at` (unknown bytes allow any). */
  allows(at: number, got: number): boolean {
    const st = this.#state[at];
    return st === UNKNOWN || got === this.#expected[at] || (st === EITHER && got === this.#alt[at]);
  }

  /**
   * Applies what a completed request did to `[start, start + len)` (clipped to the model):
   * `data` (its bytes, for "data" and "either"; null: zeroes), zeroes, a discard, an aborted
   * write ("either"), or nothing known ("forget"). The parts in `conflicts` (other writes
   * overlapped it in flight) become unknown instead.
   */
  apply(
    effect: Effect,
    start: number,
    len: number,
    data: Uint8Array | null,
    origin: number,
    conflicts: readonly Interval[],
  ): void {
    const s = Math.max(0, start), e = Math.min(this.limit, start + len);
    const exp = this.#expected, state = this.#state, alt = this.#alt, org = this.#origin;
    for (let i = s; i < e; i++) {
      switch (effect) {
        case "data":
          exp[i] = data![i - start];
          state[i] = KNOWN;
          break;
        case "zero":
          exp[i] = 0;
          state[i] = KNOWN;
          break;
        case "discard":
          // Zero stays known; other known bytes may now read as zero.
          if (state[i] === KNOWN && exp[i] !== 0) {
            state[i] = EITHER;
            alt[i] = 0;
          } else if (state[i] === EITHER && alt[i] !== 0 && exp[i] !== 0) state[i] = UNKNOWN;
          break;
        case "either": {
          // Two candidates at most: a byte that already had two (or none) knows nothing now.
          const v = data === null ? 0 : data[i - start];
          if (state[i] === KNOWN && exp[i] !== v) {
            state[i] = EITHER;
            alt[i] = v;
          } else if (state[i] === EITHER && v !== exp[i] && v !== alt[i]) state[i] = UNKNOWN;
          break;
        }
        case "forget":
          state[i] = UNKNOWN;
          break;
      }
      org[i] = origin;
    }
    for (const [c0, c1] of conflicts) {
      for (let i = Math.max(s, c0), end = Math.min(e, c1); i < end; i++) state[i] = UNKNOWN;
    }
  }

  /**
   * A file grew to at least `end` (`certain`), or may have (a write zeroes or a failed write
   * past the end).
   */
  grow(end: number, certain: boolean): void {
    if (!this.growable) return;
    if (certain) this.sizeLo = Math.max(this.sizeLo, end);
    this.sizeHi = Math.max(this.sizeHi, end, this.sizeLo);
  }

  /** Whether `capacity` is a size the model allows. */
  sizeAllows(capacity: number): boolean {
    return capacity >= this.sizeLo && capacity <= this.sizeHi;
  }

  /** The size is now known to be `capacity` (read with no write in flight). */
  settleSize(capacity: number): void {
    if (this.growable) this.sizeLo = this.sizeHi = capacity;
  }

  /**
   * Checks the bytes a read returned for `[start, ...)`, spread over `parts` in order, against
   * the model, skipping `skip` (ranges a write in flight overlapped). `lens` are the parts'
   * lengths when the read was queued: a part that is shorter now was detached (its memory region
   * freed before the completion was delivered) and is not checked. Learns the bytes it could not
   * check before. Returns why they differ, or null.
   */
  check(
    start: number,
    parts: readonly Uint8Array[],
    skip: readonly Interval[],
    lens: readonly number[] = parts.map((p) => p.length),
  ): string | null {
    const exp = this.#expected, state = this.#state, alt = this.#alt, org = this.#origin;
    const { bad, first, firstGot } = this.#differences(start, parts, skip, lens, true);
    if (bad > 0) {
      const hex = (v: number) => `0x${v.toString(16).padStart(2, "0")}`;
      const st = state[first] === EITHER ? ` or ${hex(alt[first])} (a discard or an aborted write)` : "";
      const o = org[first];
      const from = o === INITIAL
        ? "the initial contents"
        : o === LEARNED
        ? "an earlier read"
        : `request #${o}`;
      return `${bad} byte(s) differ, the first at offset ${first}: read ${hex(firstGot)}, expected ` +
        `${hex(exp[first])}${st} (defined by ${from})`;
    }
    // Everything checked agreed: learn what was unknown (or old-or-zero) outside the skips.
    for (let i = 0, at0 = start; i < parts.length; at0 += lens[i], i++) {
      const p = parts[i];
      if (p.length !== lens[i]) continue;
      for (let k = 0, at = at0; k < p.length && at < this.limit; k++, at++) {
        if (state[at] === KNOWN || skipped(skip, at)) continue;
        this.learned++;
        exp[at] = p[k];
        state[at] = KNOWN;
        org[at] = LEARNED;
      }
    }
    return null;
  }

  /**
   * Whether a read of `[start, ...)` into `parts` that came back now would agree with the model,
   * as {@link check} sees it, without learning anything: which of several requests a completion
   * can be.
   */
  agrees(
    start: number,
    parts: readonly Uint8Array[],
    skip: readonly Interval[],
    lens: readonly number[] = parts.map((p) => p.length),
  ): boolean {
    return this.#differences(start, parts, skip, lens, false).bad === 0;
  }

  /** The bytes of a read that differ from the model: how many, and the first (`count`: into compared). */
  #differences(
    start: number,
    parts: readonly Uint8Array[],
    skip: readonly Interval[],
    lens: readonly number[],
    count: boolean,
  ): { bad: number; first: number; firstGot: number } {
    const exp = this.#expected, state = this.#state, alt = this.#alt;
    let bad = 0, first = -1, firstGot = 0;
    for (let i = 0, at0 = start; i < parts.length; at0 += lens[i], i++) {
      const p = parts[i];
      if (p.length !== lens[i]) continue;
      for (let k = 0, at = at0; k < p.length && at < this.limit; k++, at++) {
        const st = state[at];
        if (st === UNKNOWN) continue;
        const got = p[k];
        if (count) this.compared++;
        if (got === exp[at] || (st === EITHER && got === alt[at])) continue;
        if (skipped(skip, at)) continue;
        if (bad++ === 0) {
          first = at;
          firstGot = got;
        }
      }
    }
    return { bad, first, firstGot };
  }
}

function skipped(skip: readonly Interval[], at: number): boolean {
  for (const [s, e] of skip) if (at >= s && at < e) return true;
  return false;
}
