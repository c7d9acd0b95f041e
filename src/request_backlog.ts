/**
 * Requests that did not fit the device queue, kept in order until there is room.
 *
 * @module
 */
import { bufferOf } from "./buffers.ts";
import type { OpValue } from "./completion.ts";

/** The fields of one request, in the order drivers take them. */
export interface RequestSink {
  /** Takes the request, or returns false when the queue is full (nothing was taken). */
  tryEnqueue(
    op: OpValue,
    start: number,
    buf: Uint8Array | null,
    iovecs: readonly Uint8Array[] | null,
    len: number,
    userData: unknown,
    flags: number,
  ): boolean;
}

/**
 * A growable ring of requests, stored as parallel arrays so steady state allocates nothing.
 */
export class RequestBacklog {
  #op: number[] = [];
  #start: number[] = [];
  #buf: (Uint8Array | null)[] = [];
  #iov: (readonly Uint8Array[] | null)[] = [];
  #len: number[] = [];
  #ud: unknown[] = [];
  #flags: number[] = [];
  #head = 0;
  #count = 0;
  #cap = 0;

  /** How many requests wait. */
  get length(): number {
    return this.#count;
  }

  /** Appends a request. */
  push(
    op: OpValue,
    start: number,
    buf: Uint8Array | null,
    iovecs: readonly Uint8Array[] | null,
    len: number,
    userData: unknown,
    flags: number,
  ): void {
    if (this.#count === this.#cap) this.#grow();
    const i = (this.#head + this.#count) % this.#cap;
    this.#op[i] = op;
    this.#start[i] = start;
    this.#buf[i] = buf;
    this.#iov[i] = iovecs;
    this.#len[i] = len;
    this.#ud[i] = userData;
    this.#flags[i] = flags;
    this.#count++;
  }

  /** Hands waiting requests to `sink` in order until it is full; returns how many it took. */
  process(sink: RequestSink): number {
    let taken = 0;
    while (this.#count > 0) {
      const i = this.#head;
      const ok = sink.tryEnqueue(
        this.#op[i] as OpValue,
        this.#start[i],
        this.#buf[i],
        this.#iov[i],
        this.#len[i],
        this.#ud[i],
        this.#flags[i],
      );
      if (!ok) break;
      this.#buf[i] = null;
      this.#iov[i] = null;
      this.#ud[i] = undefined;
      this.#head = (i + 1) % this.#cap;
      this.#count--;
      taken++;
    }
    return taken;
  }

  /** Whether a waiting request uses memory of `buffer` (as its buffer or one of its iovecs). */
  usesBuffer(buffer: ArrayBufferLike): boolean {
    for (let k = 0; k < this.#count; k++) {
      const i = (this.#head + k) % this.#cap;
      const buf = this.#buf[i];
      if (buf !== null && bufferOf(buf) === buffer) return true;
      const iov = this.#iov[i];
      if (iov !== null) { for (const b of iov) if (bufferOf(b) === buffer) return true; }
    }
    return false;
  }

  /**
   * Removes the waiting request whose `userData` is `userData` (`===`; the oldest when several
   * are), keeping the others in order. Returns whether there was one.
   */
  remove(userData: unknown): boolean {
    const head = this.#head, cap = this.#cap;
    // From both ends at once: aborting a batch in submission order finds each at the head.
    for (let a = 0, b = this.#count - 1; a <= b; a++, b--) {
      if (this.#ud[(head + a) % cap] === userData) return this.#removeAt(a);
      if (this.#ud[(head + b) % cap] === userData && !this.#hasBefore(userData, a + 1, b)) {
        return this.#removeAt(b);
      }
    }
    return false;
  }

  #hasBefore(userData: unknown, from: number, to: number): boolean {
    for (let k = from; k < to; k++) if (this.#ud[(this.#head + k) % this.#cap] === userData) return true;
    return false;
  }

  /** Removes the `k`-th waiting request, closing the gap from the shorter side. */
  #removeAt(k: number): true {
    const head = this.#head, cap = this.#cap, last = this.#count - 1;
    let hole: number;
    if (k <= last - k) {
      for (let j = k; j > 0; j--) this.#move((head + j - 1) % cap, (head + j) % cap);
      hole = head;
      this.#head = (head + 1) % cap;
    } else {
      for (let j = k; j < last; j++) this.#move((head + j + 1) % cap, (head + j) % cap);
      hole = (head + last) % cap;
    }
    this.#buf[hole] = null;
    this.#iov[hole] = null;
    this.#ud[hole] = undefined;
    this.#count--;
    return true;
  }

  #move(from: number, to: number): void {
    this.#op[to] = this.#op[from];
    this.#start[to] = this.#start[from];
    this.#buf[to] = this.#buf[from];
    this.#iov[to] = this.#iov[from];
    this.#len[to] = this.#len[from];
    this.#ud[to] = this.#ud[from];
    this.#flags[to] = this.#flags[from];
  }

  /** Removes every waiting request, passing each `userData` to `each` in order. */
  drain(each: (userData: unknown) => void): void {
    while (this.#count > 0) {
      const i = this.#head;
      const ud = this.#ud[i];
      this.#buf[i] = null;
      this.#iov[i] = null;
      this.#ud[i] = undefined;
      this.#head = (i + 1) % this.#cap;
      this.#count--;
      each(ud);
    }
  }

  #grow(): void {
    const cap = this.#cap === 0 ? 64 : this.#cap * 2;
    const reorder = <T>(a: T[]): T[] => {
      const b = new Array<T>(cap);
      for (let k = 0; k < this.#count; k++) b[k] = a[(this.#head + k) % this.#cap];
      return b;
    };
    if (this.#cap > 0) {
      this.#op = reorder(this.#op);
      this.#start = reorder(this.#start);
      this.#buf = reorder(this.#buf);
      this.#iov = reorder(this.#iov);
      this.#len = reorder(this.#len);
      this.#ud = reorder(this.#ud);
      this.#flags = reorder(this.#flags);
    }
    this.#head = 0;
    this.#cap = cap;
  }
}
