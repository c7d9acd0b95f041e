/**
 * The interface the runtime-agnostic core receives from an adapter.
 *
 * @module
 */
import type { LIBC_SYMBOLS, LIBURING_SYMBOLS, NativeType, SymbolDef } from "./symbols.ts";

/** The JS value a neutral parameter type takes. */
export type ParamValue<T extends NativeType> = T extends "i32" | "u32" | "ptr" ? number
  : T extends "i64" | "u64" ? bigint
  : T extends "buf" ? Uint8Array | null
  : never;

/** The JS value a neutral result type gives. */
export type ResultValue<T extends NativeType> = T extends "i32" | "u32" | "ptr" ? number
  : T extends "i64" | "u64" ? bigint
  : T extends "void" ? void
  : never;

type Params<P extends readonly NativeType[]> = { [K in keyof P]: ParamValue<P[K]> };

/** A symbol table with every entry bound to a callable function. */
export type Bound<T extends Record<string, SymbolDef>> = {
  readonly [K in keyof T]: (...args: Params<T[K]["params"]>) => ResultValue<T[K]["result"]>;
};

/** What the core needs from the runtime: bound symbols and memory helpers. */
export interface Native {
  /** Which runtime adapter this is ("deno" or "bun"), for messages and benchmarks. */
  readonly runtime: string;
  /**
   * The CPU architecture as Linux names it (`uname -m`: "x86_64", "aarch64", ...): a few open(2)
   * flags differ between architectures.
   */
  readonly arch: string;
  /** liburing.so.2 functions. */
  readonly uring: Bound<typeof LIBURING_SYMBOLS>;
  /** libc.so.6 functions. */
  readonly libc: Bound<typeof LIBC_SYMBOLS>;
  /**
   * Allocates zeroed memory whose address never changes while it is referenced (in Bun a
   * typed array must come from an explicit ArrayBuffer for that).
   */
  alloc(len: number): Uint8Array;
  /** The address of the first byte of a non-empty ArrayBuffer. Costly: cache the result. */
  addressOf(buffer: ArrayBuffer): number;
  /** An ArrayBuffer aliasing `len` bytes of native memory at `addr` (no copy). */
  view(addr: number, len: number): ArrayBuffer;
  /** The calling thread's errno, read right after a failed libc call. */
  errno(): number;
  /**
   * Resolves, without blocking the event loop, once the eventfd `fd` has been signalled, and
   * resets its counter. Resolves without waiting when it was signalled since the last wait, but
   * never in the microtasks of the turn the wait was asked in: BlockDevice, which reaps when a
   * wait ends, takes completions only in a turn of its own (its module comment). One wait
   * per fd at a time; while it is pending the event loop is kept alive, and `fd` must stay
   * open (write to it to end the wait). `fd` must be O_NONBLOCK and used by nobody else that
   * reads it.
   */
  waitEventfd(fd: number): Promise<void>;
  /**
   * Drops what {@link waitEventfd} keeps for `fd`; call with no wait pending, and close `fd`
   * only once the promise has resolved.
   */
  forgetEventfd(fd: number): Promise<void>;
  /**
   * Whether {@link waitEventfd} holds a thread for each wait (Deno: poll(2) on its blocking
   * pool, whose thread then has to wake the event loop: two wakeups per wait). The core then
   * relays eventfds to a pipe (`src/uring/eventfd_relay.ts`), which the event loop watches
   * itself.
   */
  readonly eventfdWaitUsesThread: boolean;
  /**
   * {@link waitEventfd} for the read end of a non-blocking pipe, on the event loop itself (no
   * thread): resolves once the pipe holds data, which it reads and drops. The same rules apply;
   * from the first call the adapter owns `fd`.
   */
  waitPipe(fd: number): Promise<void>;
  /** Stops watching `fd` and closes it; call with no {@link waitPipe} pending. */
  forgetPipe(fd: number): Promise<void>;
}
