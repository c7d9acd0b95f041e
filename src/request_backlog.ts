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
  /** Entries from #head, removed ones included until process() passes them. */
  #count = 0;
  /** Removed entries not yet passed (their userData is {@link REMOVED}). */
  #removed = 0;
  #cap = 0;
  /**
   * Where each waiting request's userData is (an index into the arrays), built by the first
   * remove() on a long backlog so that many removals in any order cost O(1) each (BlockDevice
   * aborting thousands of waiting requests). Only while every userData waiting is distinct
   * (BlockDevice's ids are); otherwise remove() searches.
   */
  #where: Map<unknown, number> | null = null;
  /** A build found duplicates: do not try again until the backlog has emptied. */
  #noIndex = false;

  /** How many requests wait. */
  get length(): number {
    return this.#count - this.#removed;
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
    const where = this.#where;
    if (where !== null) {
      if (where.has(userData)) this.#giveUpIndex();
      else where.set(userData, i);
    }
  }

  /** Hands waiting requests to `sink` in order until it is full; returns how many it took. */
  process(sink: RequestSink): number {
    let taken = 0;
    while (this.#count > 0) {
      const i = this.#head;
      if (this.#ud[i] === REMOVED) {
        this.#ud[i] = undefined;
        this.#head = (i + 1) % this.#cap;
        this.#count--;
        this.#removed--;
        continue;
      }
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
      if (this.#where !== null) this.#where.delete(this.#ud[i]);
      this.#buf[i] = null;
      this.#iov[i] = null;
      this.#ud[i] = undefined;
      this.#head = (i + 1) % this.#cap;
      this.#count--;
      taken++;
    }
    this.#dropIndexIfShort();
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
    return this.take(userData) !== NOT_WAITING;
  }

  /**
   * {@link remove}, returning the removed request's own userData (`===` does not tell -0 from 0,
   * and its completion must carry the one it was given), or {@link NOT_WAITING}.
   */
  take(userData: unknown): unknown {
    // NaN: `===` matches nothing, which the index (a Map) would not agree with.
    if (userData === REMOVED || userData !== userData) return NOT_WAITING;
    if (this.#where === null && !this.#noIndex && this.#count - this.#removed > INDEX_FROM) {
      this.#buildIndex();
    }
    const where = this.#where;
    if (where !== null) {
      const i = where.get(userData);
      if (i === undefined) return NOT_WAITING;
      const own = this.#ud[i];
      where.delete(userData);
      this.#removeAt(i);
      return own;
    }
    const head = this.#head, cap = this.#cap;
    for (let k = 0; k < this.#count; k++) {
      const i = (head + k) % cap;
      const own = this.#ud[i];
      if (own === userData) {
        this.#removeAt(i);
        return own;
      }
    }
    return NOT_WAITING;
  }

  /**
   * Marks entry `i` removed: process() passes it, so no other entry moves. Marks at either end
   * are let go at once, so pushing and removing one request over and over (a retry against a
   * full ring) neither grows the arrays nor leaves marks for later searches.
   */
  #removeAt(i: number): void {
    this.#buf[i] = null;
    this.#iov[i] = null;
    this.#ud[i] = REMOVED;
    this.#removed++;
    const cap = this.#cap;
    while (this.#count > 0 && this.#ud[this.#head] === REMOVED) {
      this.#ud[this.#head] = undefined;
      this.#head = (this.#head + 1) % cap;
      this.#count--;
      this.#removed--;
    }
    while (this.#count > 0 && this.#ud[(this.#head + this.#count - 1) % cap] === REMOVED) {
      this.#ud[(this.#head + this.#count - 1) % cap] = undefined;
      this.#count--;
      this.#removed--;
    }
    this.#dropIndexIfShort();
  }

  /** Lets the index go once the backlog is short again: then a search is as cheap. */
  #dropIndexIfShort(): void {
    if (this.#where !== null && this.#count - this.#removed <= INDEX_FROM) this.#where = null;
    if (this.#count === 0) this.#noIndex = false;
  }

  #buildIndex(): void {
    const where = new Map<unknown, number>();
    for (let k = 0; k < this.#count; k++) {
      const i = (this.#head + k) % this.#cap;
      const ud = this.#ud[i];
      if (ud === REMOVED) continue;
      if (where.has(ud)) {
        this.#giveUpIndex();
        return;
      }
      where.set(ud, i);
    }
    this.#where = where;
  }

  /** Duplicated userData: searches until the backlog has emptied. */
  #giveUpIndex(): void {
    this.#where = null;
    this.#noIndex = true;
  }

  /** Removes every waiting request, passing each `userData` to `each` in order. */
  drain(each: (userData: unknown) => void): void {
    this.#where = null;
    while (this.#count > 0) {
      const i = this.#head;
      const ud = this.#ud[i];
      this.#buf[i] = null;
      this.#iov[i] = null;
      this.#ud[i] = undefined;
      this.#head = (i + 1) % this.#cap;
      this.#count--;
      if (ud === REMOVED) this.#removed--;
      else each(ud);
    }
    this.#noIndex = false;
  }

  #grow(): void {
    const cap = this.#cap === 0 ? 64 : this.#cap * 2;
    // Marked entries are left behind: only live ones are copied, in order.
    const live: number[] = [];
    for (let k = 0; k < this.#count; k++) {
      const i = (this.#head + k) % this.#cap;
      if (this.#ud[i] !== REMOVED) live.push(i);
    }
    const reorder = <T>(a: T[]): T[] => {
      const b = new Array<T>(cap);
      for (let k = 0; k < live.length; k++) b[k] = a[live[k]];
      return b;
    };
    this.#count = live.length;
    this.#removed = 0;
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
    // Every entry moved: the index is rebuilt by the next remove() that needs it.
    this.#where = null;
  }
}

/** The userData of a removed entry: no caller's value is this. */
const REMOVED = Symbol("removed request");
/** What {@link RequestBacklog.take} returns when no waiting request carries the userData. */
export const NOT_WAITING: unique symbol = Symbol("no such request waiting");
/** Backlogs longer than this get an index at their first remove(). */
const INDEX_FROM = 64;
