/**
 * Completions the library made itself (rejected requests) or took back from a failed `doIo`,
 * waiting to be returned in order.
 *
 * @module
 */
import { type Completion, newCompletion } from "./completion.ts";

/** A FIFO of completions with `unfill` to put reaped ones back at the front. */
export class CompletionBacklog {
  #userData: unknown[] = [];
  #ret: number[] = [];
  #msg: (string | null)[] = [];
  #head = 0;
  /** Called after a push, so a waiter on the completion fd wakes up. */
  onPush: (() => void) | null = null;

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

  /** Moves completions into `out[n..max)`; returns the new `n`. */
  fill(out: Completion[], n: number, max: number): number {
    while (n < max && this.#head < this.#ret.length) {
      const c = out[n] ?? (out[n] = newCompletion());
      const i = this.#head++;
      c.userData = this.#userData[i];
      c.ret = this.#ret[i];
      c.errorMsg = this.#msg[i];
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
