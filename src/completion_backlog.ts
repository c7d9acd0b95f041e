/**
 * Completions the library made itself (rejected requests) or took back from a failed `doIo`,
 * waiting to be returned in order.
 *
 * @module
 */
import { type Completion, newCompletion } from "./completion.ts";

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
   * false when that threw: a frozen or otherwise unwritable entry, a primitive, a Proxy that
   * refuses, a frozen `out`. The completion is then pushed here and {@link badOut} set, and the
   * driver must stop reaping: it has already released the request, so nothing is lost and
   * nothing is reported twice.
   *
   * Checking every entry before a reap instead (one Object.isExtensible call each) cost 2-6% of
   * a request at iodepth 1 on Deno in in-process A/B runs, and missed Proxies and throwing
   * setters.
   */
  deliver(out: Completion[], n: number, userData: unknown, ret: number, errorMsg: string | null): boolean {
    try {
      const c = out[n] ?? (out[n] = newCompletion());
      c.userData = userData;
      c.ret = ret;
      c.errorMsg = errorMsg;
      return true;
    } catch {
      this.#refuse(out, n);
      this.push(userData, ret, errorMsg);
      return false;
    }
  }

  #refuse(out: Completion[], n: number): void {
    this.badOut = n;
    try {
      this.#badValue = out[n];
    } catch {
      this.#badValue = undefined;
    }
  }

  /** The entry {@link deliver} could not write, and what it held; clears the flag. */
  takeBadOut(): { index: number; value: unknown } {
    const bad = { index: this.badOut, value: this.#badValue };
    this.badOut = -1;
    this.#badValue = undefined;
    return bad;
  }

  /** Moves completions into `out[n..max)`; returns the new `n` (stops at an unwritable entry). */
  fill(out: Completion[], n: number, max: number): number {
    while (n < max && this.#head < this.#ret.length) {
      const i = this.#head;
      try {
        const c = out[n] ?? (out[n] = newCompletion());
        c.userData = this.#userData[i];
        c.ret = this.#ret[i];
        c.errorMsg = this.#msg[i];
      } catch {
        // The completion stays first in line.
        this.#refuse(out, n);
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

  /** Puts `out[0..n)` back at the front, in order, for the next `fill`. */
  unfill(out: Completion[], n: number): void {
    if (n === 0) return;
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
