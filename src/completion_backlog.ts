/**
 * Completions the library made itself (rejected requests) or took back from a failed `doIo`,
 * waiting to be returned in order.
 *
 * @module
 */
import { type Completion, newCompletion } from "./completion.ts";

/**
 * Up to this many entries filled, an `out` entry is checked against the earlier ones by a
 * scan; beyond, through a set (a scan of every earlier entry would grow with the square).
 */
const ALIAS_SCAN = 32;

/**
 * A FIFO of completions with `unfill` to put reaped ones back at the front. It is also where
 * every completion enters the caller's `out` array ({@link deliver}).
 */
export class CompletionBacklog {
  #userData: unknown[] = [];
  #ret: number[] = [];
  #msg: (string | null)[] = [];
  #head = 0;
  /** Called after a push, so a waiter on the completion fd wakes up. */
  onPush: (() => void) | null = null;
  /**
   * The index of the `out` entry a completion could not be written to, or -1; the completion
   * went to this backlog instead. The queue turns it into an EINVAL ({@link takeBadOut}).
   */
  badOut = -1;
  /** What that entry held. */
  #badValue: unknown = undefined;
  /** The earlier entry the refused one is the same object as, or -1 (see {@link #aliasOf}). */
  #badAlias = -1;
  /**
   * The objects of `out[0..#seenUpTo)` of the doIo running now, kept only once it has filled
   * more than {@link ALIAS_SCAN} entries (below that, a scan is cheaper than a set), and only
   * until it returns ({@link forgetOut}): they are the caller's, with its userData.
   */
  #seen: Set<unknown> | null = null;
  #seenUpTo = 0;

  /** How many completions wait. */
  get length(): number {
    return this.#ret.length - this.#head;
  }

  /** Appends one completion. */
  push(userData: unknown, ret: number, errorMsg: string | null): void {
    this.#userData.push(userData);
    this.#ret.push(ret);
    this.#msg.push(errorMsg);
    this.onPush?.();
  }

  /**
   * Writes one completion into `out[n]` (a new Completion where the entry is empty). Returns
   * false when that threw (a frozen or otherwise unwritable entry, a primitive, a Proxy that
   * refuses, a frozen `out`) or when the entry is the same object as an earlier one of this
   * call, whose completion writing it would destroy. The completion is then pushed here and
   * {@link badOut} set, and the driver must stop reaping: it has already released the request,
   * so nothing is lost and nothing is reported twice.
   *
   * Checking every entry before a reap instead (one Object.isExtensible call each) cost 2-6% of
   * a request at iodepth 1 on Deno in in-process A/B runs, and missed Proxies and throwing
   * setters.
   */
  deliver(out: Completion[], n: number, userData: unknown, ret: number, errorMsg: string | null): boolean {
    try {
      let c = out[n];
      if (c == null) c = out[n] = newCompletion();
      else if (n !== 0 && this.#aliased(out, c, n)) {
        this.push(userData, ret, errorMsg);
        return false;
      }
      c.userData = userData;
      c.ret = ret;
      c.errorMsg = errorMsg;
      return true;
    } catch {
      this.#refuse(out, n, -1);
      this.push(userData, ret, errorMsg);
      return false;
    }
  }

  /**
   * Whether `c`, the entry at `out[n]`, is the same object as an earlier entry of this call;
   * refuses it if so. Writing it would overwrite, and so lose, a completion already delivered
   * (what `new Array(n).fill(newCompletion())` makes).
   */
  #aliased(out: Completion[], c: Completion, n: number): boolean {
    const j = this.#aliasOf(out, c, n);
    if (j < 0) return false;
    this.#refuse(out, n, j);
    return true;
  }

  /**
   * The index of an entry of `out[0..n)` that is `c` itself, or -1. Those entries were all
   * filled by the doIo running now (it starts at 0), so they stay put while it runs.
   */
  #aliasOf(out: Completion[], c: Completion, n: number): number {
    if (n <= ALIAS_SCAN) {
      // From the end: an array filled with one object shows it at once.
      for (let j = n - 1; j >= 0; j--) if (out[j] === c) return j;
      return -1;
    }
    const seen = this.#seen ??= new Set();
    if (this.#seenUpTo > n) this.forgetOut(); // not this call's: a caller that did not forget
    for (; this.#seenUpTo < n; this.#seenUpTo++) seen.add(out[this.#seenUpTo]);
    return seen.has(c) ? out.indexOf(c) : -1;
  }

  /**
   * Drops the entries {@link #aliasOf} collected: doIo calls this as it returns, and
   * {@link fill} at the start of the next call (after one that threw), so the set neither keeps
   * the caller's objects alive nor matches one the caller has moved since.
   */
  forgetOut(): void {
    if (this.#seenUpTo === 0) return;
    this.#seen!.clear();
    this.#seenUpTo = 0;
  }

  #refuse(out: Completion[], n: number, aliasOf: number): void {
    this.badOut = n;
    this.#badAlias = aliasOf;
    try {
      this.#badValue = out[n];
    } catch {
      this.#badValue = undefined;
    }
  }

  /**
   * The entry {@link deliver} could not write, what it held, and the earlier entry it is the
   * same object as (-1 when it was unwritable instead); clears the flag.
   */
  takeBadOut(): { index: number; value: unknown; aliasOf: number } {
    const bad = { index: this.badOut, value: this.#badValue, aliasOf: this.#badAlias };
    this.badOut = -1;
    this.#badValue = undefined;
    this.#badAlias = -1;
    return bad;
  }

  /** Moves completions into `out[n..max)`; returns the new `n` (stops at an unwritable entry). */
  fill(out: Completion[], n: number, max: number): number {
    // doIo starts every call with a fill at 0: a new call, whose entries are not the last's.
    if (n === 0) this.forgetOut();
    while (n < max && this.#head < this.#ret.length) {
      const i = this.#head;
      // A refused entry leaves the completion first in line.
      try {
        let c = out[n];
        if (c == null) c = out[n] = newCompletion();
        else if (n !== 0 && this.#aliased(out, c, n)) break;
        c.userData = this.#userData[i];
        c.ret = this.#ret[i];
        c.errorMsg = this.#msg[i];
      } catch {
        this.#refuse(out, n, -1);
        break;
      }
      this.#head++;
      this.#userData[i] = undefined;
      n++;
    }
    // Only when something was taken: every doIo calls this, and on Bun (JSC) `length = 0` on
    // an empty array still reallocates its storage (65 ns for the three here, and the memory
    // churn shows as page faults in the latency tail).
    if (this.#head !== 0 && this.#head === this.#ret.length) this.#clear();
    return n;
  }

  /**
   * Puts `out[0..n)` back at the front, in order, for the next `fill`, and signals (onPush) as
   * libblkio's `unfill_completions` does: a caller that reset the completion fd before a doIo
   * that then failed (ETIME, EINTR) must find the fd readable while completions wait here.
   */
  unfill(out: Completion[], n: number): void {
    if (n === 0) return;
    this.onPush?.();
    const ud = [], ret = [], msg = [];
    for (let i = 0; i < n; i++) {
      ud.push(out[i].userData);
      ret.push(out[i].ret);
      msg.push(out[i].errorMsg);
    }
    this.#userData = ud.concat(this.#userData.slice(this.#head));
    this.#ret = ret.concat(this.#ret.slice(this.#head));
    this.#msg = msg.concat(this.#msg.slice(this.#head));
    this.#head = 0;
  }

  #clear(): void {
    this.#userData.length = 0;
    this.#ret.length = 0;
    this.#msg.length = 0;
    this.#head = 0;
  }
}
