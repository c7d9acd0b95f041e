/**
 * One request the fuzzer queued, what it may complete with, and the registry of requests in
 * flight that works out which of them overlapped (and so made a range unknown or unchecked).
 *
 * @module
 */
import type { PoolEntry } from "./_fuzz_buffers.ts";
import type { Effect, Interval } from "./_fuzz_disk.ts";
import { overlap } from "./_fuzz_disk.ts";

/** The request kinds, as the Queue methods are named. */
export type Op = "read" | "write" | "readv" | "writev" | "writeZeroes" | "discard" | "flush";

/** One completion a request may have, and what it means for the target's contents. */
export interface Outcome {
  /** `ret`: 0 or a negative errno. */
  ret: number;
  /**
   * Its errorMsg: a pattern it must match, `null` when it must be null, undefined when any
   * message (or none) will do.
   */
  msg?: RegExp | null;
  /**
   * The library produces it before the request is queued anywhere (bad flags, offsets beyond
   * 2^53: true), or may ("maybe": the driver's checks, which a request waiting in the backlog
   * has not met yet, or which depend on what the driver has learnt about the device).
   */
  early?: true | "maybe";
  /**
   * What the target holds afterwards: "check" (a read: compare its bytes), the request's effect
   * ("data", "zero", "discard"), "none" (untouched: the request failed before it reached the
   * target), "either" (a write that may have landed in part: each byte old or the write's) or
   * "forget" (it may have landed in part, and what it left is not known).
   */
  effect: Effect | "check" | "none";
  /**
   * `[start, length]`: the part of the request's range `effect` applies to, the rest untouched
   * (a chunked zeroing that failed at one chunk after the chunks above it were done). Default:
   * the whole range.
   */
  part?: readonly [number, number];
}

/** A buffer of a request: where it is, for the pool to take back. */
export interface Chunk {
  release(): void;
}

/** A request queued on one of the fuzzer's queues. */
export class FuzzRequest {
  readonly id: number;
  readonly op: Op;
  readonly start: number;
  readonly len: number;
  readonly flags: number;
  readonly step: number;
  /** The queue it was queued on (its key in the fuzzer's queue table). */
  readonly queueKey: string;
  /** What comes back in its completion (unique among outstanding requests). */
  userData: unknown;
  /** A write's bytes as they were when it was queued (the buffer is not touched until it completes). */
  data: Uint8Array | null = null;
  /** A read's buffers, in order, and their lengths when it was queued. */
  dest: Uint8Array[] | null = null;
  destLens: number[] = [];
  /** The outcomes the model allows. */
  outcomes: Outcome[] = [];
  /**
   * The bytes it may change (write-like) or read, clipped to the model; null when it cannot
   * reach the target (it fails before submission, or has no range: a flush).
   */
  span: Interval | null = null;
  /** Overlaps with writes in flight at the same time (unknown after a write, unchecked for a read). */
  readonly conflicts: Interval[] = [];
  /** Whether a doIo (or another call that submits) ran since it was queued: it may be in the kernel. */
  maybeSubmitted = false;
  /**
   * Whether a doIo that failed (ETIME, EINTR) ran since it was queued: the library may then hold
   * its completion, reaped, in its own backlog, with the buffer released.
   */
  mayBeReaped = false;
  /** Whether cancel() returned true for it. */
  cancelled = false;
  /** Its buffers in the pool, and the memory they are in. */
  chunks: Chunk[] = [];
  entries: PoolEntry[] = [];
  /** One line describing it, for the log. */
  describe = "";

  constructor(id: number, op: Op, start: number, len: number, flags: number, step: number, queueKey: string) {
    this.id = id;
    this.op = op;
    this.start = start;
    this.len = len;
    this.flags = flags;
    this.step = step;
    this.queueKey = queueKey;
  }

  /** Whether it changes the target when it succeeds (write, writev, write zeroes, discard). */
  get writes(): boolean {
    return this.op === "write" || this.op === "writev" || this.op === "writeZeroes" || this.op === "discard";
  }

  /** Gives its buffers back to the pool. */
  release(): void {
    for (const c of this.chunks) c.release();
    this.chunks = [];
  }
}

/**
 * Requests that may touch the target and have not completed, over every queue and instance: the
 * target is one, whichever queue a request went through.
 */
export class InFlight {
  readonly #requests = new Set<FuzzRequest>();

  /** Adds `r` and records its overlaps with the writes in flight (and theirs with it). */
  add(r: FuzzRequest): void {
    if (r.span === null) return;
    const [s, e] = r.span;
    for (const q of this.#requests) {
      if (!q.writes && !r.writes) continue;
      const o = overlap(s, e, q.span![0], q.span![1]);
      if (o === null) continue;
      // A read only loses its check where a write overlaps it; a write becomes unknown where
      // another write overlaps it (either may land last).
      if (q.writes) r.conflicts.push(o);
      if (r.writes) q.conflicts.push(o);
    }
    this.#requests.add(r);
  }

  /** Forgets `r` (it completed, or was dropped). */
  remove(r: FuzzRequest): void {
    this.#requests.delete(r);
  }

  /** Whether `[s, e)` overlaps a request in flight that writes (or any, when `writes` is false). */
  overlaps(s: number, e: number, writes: boolean): boolean {
    for (const q of this.#requests) {
      if ((q.writes || !writes) && overlap(s, e, q.span![0], q.span![1]) !== null) return true;
    }
    return false;
  }

  /** Whether a write-like request is in flight. */
  anyWrites(): boolean {
    for (const q of this.#requests) if (q.writes) return true;
    return false;
  }

  /** How many requests are in flight. */
  get size(): number {
    return this.#requests.size;
  }
}
