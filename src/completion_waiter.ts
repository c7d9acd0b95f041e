/**
 * CompletionWaiter: waits on a queue's completion eventfd from the event loop, the cheapest
 * way the runtime offers. Where the adapter's eventfd wait holds a thread (Deno), the eventfd
 * is relayed to a pipe the event loop watches ({@link EventfdRelay}); where that cannot be set
 * up (Linux < 5.6), or the adapter watches eventfds itself (Bun), the adapter's wait is used.
 *
 * @module
 */
import type { Native } from "../ffi/types.ts";
import { EventfdRelay } from "./uring/eventfd_relay.ts";

/** Waits on one eventfd, one wait at a time. */
export class CompletionWaiter {
  readonly #native: Native;
  readonly #fd: number;
  readonly #relay: EventfdRelay | null;

  /** `fd`: a non-blocking eventfd that nobody else reads; it must outlive {@link close}. */
  constructor(native: Native, fd: number) {
    this.#native = native;
    this.#fd = fd;
    this.#relay = native.eventfdWaitUsesThread ? EventfdRelay.open(native, fd) : null;
  }

  /** How the waits are made: "relay" (through a pipe) or "adapter" (`Native.waitEventfd`). */
  get kind(): "relay" | "adapter" {
    return this.#relay === null ? "adapter" : "relay";
  }

  /**
   * Resolves once the eventfd was signalled (at once if it was since the last wait) and resets
   * it; keeps the event loop alive while pending. Rejects if the wait itself failed.
   */
  wait(): Promise<void> {
    return this.#relay === null ? this.#native.waitEventfd(this.#fd) : this.#relay.wait();
  }

  /** Releases what the waits use; call with no wait pending. */
  close(): Promise<void> {
    return this.#relay === null ? this.#native.forgetEventfd(this.#fd) : this.#relay.close();
  }
}
