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
  /**
   * Why the bytes just outside the piece (one on each side, which no other piece may hold while
   * this one is busy) changed since it was taken, or null: the request's I/O reached past its
   * buffer.
   */
  guards(): string | null;
  /** The piece as handed out. */
  readonly view: Uint8Array;
  /** The requests that had byte `k` of the piece (from its start; may be -1 or its length) before. */
  who(k: number): string;
}

/**
 * Requests of one queue queued with the same userData (a value several share), and the
 * completions that came back with it: which request each one is only shows once all have come
 * back, by which assignment of completions to requests the model allows.
 */
export interface SharedGroup {
  readonly userData: unknown;
  /** In the order they were queued: cancel() takes the oldest one not completed. */
  readonly members: FuzzRequest[];
  /**
   * The completions delivered so far (copies: `out` entries are reused), with the userData each
   * handed back: 0 and -0 share a group (cancel() compares with `===`), but each request must
   * get its own back (`Object.is`).
   */
  readonly got: { ret: number; errorMsg: string | null; userData: unknown }[];
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
  /** What comes back in its completion (unique among outstanding requests unless `group`). */
  userData: unknown;
  /** The requests of its queue it shares its userData with (itself included), or null. */
  group: SharedGroup | null = null;
  /** A write's bytes as they were when it was queued (the buffer is not touched until it completes). */
  data: Uint8Array | null = null;
  /**
   * A write's buffers, which must still hold `data` when it completes, and their lengths then (a
   * region freed once the library no longer held the request detaches its piece: length 0).
   */
  src: Uint8Array[] | null = null;
  srcLens: number[] = [];
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
  /**
   * The target's count of syncs when it was queued (FuzzTarget.syncs), or -1: it must have raised
   * it by the time it succeeds (a flush, or a FUA write).
   */
  syncMark = -1;
  /** Whether cancel() returned true for it. */
  cancelled = false;
  /** Its buffers in the pool, and the memory they are in. */
  chunks: Chunk[] = [];
  entries: PoolEntry[] = [];
  /** One line describing it, for the log. */
  describe = "";
  /** How it ended (for the record of who had a piece of memory): its completion, or a drop. */
  ended = "";

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

  /**
   * Why the request's memory is not as it must be once it completed, or null: a byte next to one
   * of its buffers changed (a read or zero fill that went one byte too far, a write's bounce
   * copied back too long), or a write's own buffer changed (the library must only read it).
   * Buffers detached meanwhile (a freed region, a closed device's buffer) are not checked, nor
   * (`own` false) the buffers themselves, which the fuzzer marked (an aborted request's).
   */
  buffersIntact(own = true): string | null {
    for (const c of this.chunks) {
      const why = c.guards();
      if (why !== null) return `${this.describe}: ${why}`;
    }
    if (!own || this.src === null || this.data === null) return null;
    for (let i = 0, at = 0; i < this.src.length; at += this.srcLens[i], i++) {
      const p = this.src[i];
      if (p.length !== this.srcLens[i]) continue;
      for (let k = 0; k < p.length; k++) {
        if (p[k] !== this.data[at + k]) {
          const c = this.chunks.find((c) =>
            c.view.buffer === p.buffer && p.byteOffset >= c.view.byteOffset &&
            p.byteOffset < c.view.byteOffset + c.view.length
          );
          let n = 0, run = k;
          for (let j = k; j < p.length; j++) if (p[j] !== this.data[at + j]) n++;
          while (run < p.length && p[run] !== this.data[at + run]) run++;
          const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
          return `${this.describe}: its buffer changed: byte ${at + k} of the write is ` +
            `0x${p[k].toString(16)}, it was 0x${this.data[at + k].toString(16)} when queued ` +
            `(${n} of the piece's ${p.length - k} bytes from there differ; the first run of ${run - k}: ` +
            `${hex(p.subarray(k, Math.min(run, k + 24)))})` +
            (c ? c.who(p.byteOffset - c.view.byteOffset + k) : "");
        }
      }
    }
    return null;
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
