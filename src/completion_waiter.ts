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
  #relay: EventfdRelay | null = null;
  /**
   * The relay could not be made for want of a resource (fds near the limit, memory): waits
   * reject, and each tries again. Falling back to the adapter's wait instead held one of Deno's
   * 32 threads for nonblocking calls per queue: with 40 such queues on stalled I/O, another
   * device's reads waited 2.5 s for a thread.
   */
  #retry = false;

  /** `fd`: a non-blocking eventfd that nobody else reads; it must outlive {@link close}. */
  constructor(native: Native, fd: number) {
    this.#native = native;
    this.#fd = fd;
    if (native.eventfdWaitUsesThread) this.#openRelay();
  }

  /** Makes the relay (null where the kernel cannot); returns the error when it failed. */
  #openRelay(): unknown {
    try {
      this.#relay = EventfdRelay.open(this.#native, this.#fd);
      this.#retry = false;
      return null;
    } catch (e) {
      this.#retry = true;
      return e;
    }
  }

  /** How the waits are made: "relay" (through a pipe) or "adapter" (`Native.waitEventfd`). */
  get kind(): "relay" | "adapter" {
    return this.#relay === null && !this.#retry ? "adapter" : "relay";
  }

  /**
   * Resolves once the eventfd was signalled (at once if it was since the last wait) and resets
   * it; keeps the event loop alive while pending. Rejects if the wait itself failed, or could
   * not be set up now (the caller looks for completions by itself meanwhile).
   */
  wait(): Promise<void> {
    const relay = this.#relay;
    if (relay !== null && relay.broken) {
      // Its pipe's wait failed (the socket's error, EOF): later ones reject at once, and the
      // caller would look every 1 ms for good. Make a new one (its ring cancels the old chain).
      this.#relay = null;
      this.#retry = true;
      return relay.close().then(() => this.wait());
    }
    if (this.#retry) {
      const failed = this.#openRelay();
      if (failed !== null) return Promise.reject(failed);
    }
    try {
      return this.#relay === null ? this.#native.waitEventfd(this.#fd) : this.#relay.wait();
    } catch (e) {
      // Never a throw: callers handle a failed wait in its rejection, and only there.
      return Promise.reject(e);
    }
  }

  /** Releases what the waits use; call with no wait pending. */
  close(): Promise<void> {
    return this.#relay === null ? this.#native.forgetEventfd(this.#fd) : this.#relay.close();
  }
}
