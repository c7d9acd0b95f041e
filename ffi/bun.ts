/**
 * Bun adapter: translates the neutral symbol table for `bun:ffi`.
 *
 * Every typed array handed to native code comes from an explicit ArrayBuffer: Bun moves small
 * typed arrays that own their storage, which would leave the kernel writing to freed memory.
 *
 * @module
 */
import type * as BunFfi from "bun:ffi";
import {
  LIBC_SONAME,
  LIBC_SYMBOLS,
  LIBURING_SONAME,
  LIBURING_SYMBOLS,
  type NativeType,
  type SymbolDef,
} from "./symbols.ts";
import type { Bound, Native } from "./types.ts";
import { currentTurn, nextTurn, sameTurn } from "./turn.ts";

/**
 * `bun:ffi`, taken by {@link loadBun} with Bun's synchronous `import.meta.require`: this module
 * is imported statically on both runtimes (Deno must not resolve `bun:ffi`), and the library
 * loads without a top-level await, which made Bun drop the messages posted to a Worker that
 * imports it before it set its `onmessage`.
 */
let ffi: typeof BunFfi;

function bunTypes(): Record<NativeType, BunFfi.FFIType> {
  const t = ffi.FFIType;
  return { i32: t.i32, u32: t.u32, i64: t.i64, u64: t.u64, ptr: t.u64, buf: t.ptr, void: t.void };
}

function bind<T extends Record<string, SymbolDef>>(soname: string, table: T): Bound<T> {
  const BUN_TYPE = bunTypes();
  const defs: Record<string, BunFfi.FFIFunction> = {};
  for (const [name, def] of Object.entries(table)) {
    defs[name] = {
      args: def.params.map((t) => BUN_TYPE[t]),
      returns: BUN_TYPE[def.result],
    };
  }
  const symbols = ffi.dlopen(soname, defs).symbols as Record<string, (...a: unknown[]) => unknown>;
  const out: Record<string, (...a: unknown[]) => unknown> = {};
  for (const [name, def] of Object.entries(table)) {
    const fn = symbols[name];
    // Addresses come back as bigint; the core keeps them as numbers (below 2^53 in user space,
    // and MAP_FAILED compares equal to 2 ** 64 - 1 either way).
    out[name] = def.result === "ptr" ? (...a: unknown[]) => Number(fn(...a)) : fn;
  }
  return out as unknown as Bound<T>;
}

function load(): Native {
  const libc = bind(LIBC_SONAME, LIBC_SYMBOLS);
  const uring = bind(LIBURING_SONAME, LIBURING_SYMBOLS);
  const errnoView = new Int32Array(ffi.toArrayBuffer(libc.__errno_location(), 0, 4));
  return {
    runtime: "bun",
    arch: linuxArch((globalThis as unknown as { process: { arch: string } }).process.arch),
    uring,
    libc,
    alloc: (len) => new Uint8Array(new ArrayBuffer(len)),
    addressOf: (buffer) => (buffer.byteLength === 0 ? 0 : ffi.ptr(buffer)),
    view: (addr, len) => ffi.toArrayBuffer(addr, 0, len),
    errno: () => errnoView[0],
    waitEventfd: (fd) => eventfdWaiter(fd).wait(),
    forgetEventfd: (fd) => {
      WAITERS.get(fd)?.close();
      WAITERS.delete(fd);
      return Promise.resolve();
    },
    // Bun reads an eventfd on its own event loop (see EventfdWaiter), and a pipe the same way.
    eventfdWaitUsesThread: false,
    waitPipe: (fd) => eventfdWaiter(fd).wait(),
    forgetPipe: (fd) => {
      WAITERS.get(fd)?.close();
      WAITERS.delete(fd);
      libc.close(fd); // Bun leaves fds it did not open to their owner
      return Promise.resolve();
    },
  };
}

const WAITERS = new Map<number, EventfdWaiter>();

function eventfdWaiter(fd: number): EventfdWaiter {
  let w = WAITERS.get(fd);
  if (w === undefined) {
    w = new EventfdWaiter(fd);
    WAITERS.set(fd, w);
  }
  return w;
}

interface ByteReader {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
  releaseLock(): void;
}
interface ByteStream {
  getReader(): ByteReader;
  cancel(): Promise<void>;
}
interface Ref {
  ref(): void;
  unref(): void;
}
// Reached through globalThis so `deno check` (which sees this file too) needs no Bun types.
const bunFile = (fd: number) =>
  (globalThis as unknown as { Bun: { file(fd: number): { stream(): ByteStream } } }).Bun.file(fd);

/**
 * Bun has no nonblocking FFI. `Bun.file(fd).stream()` reads a non-blocking fd on Bun's own
 * event loop (epoll; no thread involved), and each chunk it delivers is the eventfd's counter,
 * which the read resets (or, for a pipe, what was written to it). Faster and cheaper than a
 * node:fs read on the thread pool (see BENCHMARKS.md).
 *
 * Three quirks handled here:
 * - A locked stream keeps the process alive forever, so the reader is released once a wait is
 *   over and no new one started within the same turn (an idle device must not keep the process
 *   running).
 * - A pending read on a re-acquired reader does not keep the process alive, so a timer is
 *   ref'ed while a wait is pending.
 * - A read of a chunk the stream already holds resolves in the turn it was made in, in its
 *   microtasks. So BlockDevice's wakeup reaped completions between the caller's microtasks,
 *   where it promises never to (a request made in a continuation and aborted from a microtask
 *   queued right after the call settled with its result: BlockDevice fuzzer); and while the
 *   eventfd was signalled again faster than the waits followed each other (a fast device's
 *   completions), each wait ended within the same turn, which never ended: timers and other
 *   I/O starved for 40-220 ms (a 5 ms interval, 2026-12-05). Such a wait ends from a
 *   setImmediate ({@link currentTurn}), so at most one wait ends per turn. (Until then, a wait
 *   asked more than 2 ms after the turn's first one ended yielded first; that bound let up to
 *   90 waits end in one turn, and is gone.)
 */
class EventfdWaiter {
  readonly #fd: number;
  #stream: ByteStream | null = null;
  #reader: ByteReader | null = null;
  #pending = false;
  /** The setImmediate that releases an idle reader; set from a wait's end to the next turn. */
  #idle: unknown = null;
  readonly #keepAlive: Ref;
  /** The turn ({@link currentTurn}) the pending read was asked in. */
  #askedIn = -1;
  /** The pending read's result or error, while its end waits for the next turn (#read). */
  #outcome: unknown = null;

  constructor(fd: number) {
    this.#fd = fd;
    this.#keepAlive = setInterval(noop, 1 << 30) as unknown as Ref;
    this.#keepAlive.unref();
  }

  wait(): Promise<void> {
    if (this.#reader === null) {
      try {
        if (this.#stream === null) this.#stream = bunFile(this.#fd).stream();
        this.#reader = this.#stream.getReader();
      } catch (e) {
        // Bun sets the fd up here and throws at once when that fails (EMFILE from fcntl with
        // the fd table full). A throw escaped the caller's promise chain and no wait was ever
        // made again: requests hung for good. Rejected, the caller looks by itself and retries.
        this.#drop();
        return Promise.reject(e);
      }
    }
    this.#pending = true;
    this.#keepAlive.ref();
    this.#askedIn = currentTurn();
    return this.#reader.read().then(this.#read, this.#readFailed);
  }

  /**
   * A read's end, taken in a later turn than the wait was asked in: one that resolved in that
   * turn (a chunk the stream already held) goes on from a setImmediate, not in the turn's
   * microtasks (see the class comment). The read's outcome waits in #outcome meanwhile: at most
   * one read is pending, and nothing is allocated per wait on the usual path.
   */
  readonly #read = (r: { done: boolean }): void | Promise<void> => {
    if (!sameTurn(this.#askedIn)) return this.#done(r);
    this.#outcome = r;
    return new Promise<void>(nextTurn).then(this.#doneLater);
  };

  readonly #readFailed = (e: unknown): Promise<never> => {
    if (!sameTurn(this.#askedIn)) return this.#failed(e);
    this.#outcome = e;
    return new Promise<void>(nextTurn).then(this.#failedLater);
  };

  readonly #doneLater = (): void => this.#done(this.#outcome as { done: boolean });
  readonly #failedLater = (): never => this.#failed(this.#outcome);

  readonly #done = (r: { done: boolean }): void => {
    this.#settled();
    if (!r.done) return;
    // Never for an eventfd. For a pipe, its write end closed: no data will come again, so the
    // wait must not count as one (Deno's PipeWaiter rejects likewise); the next one retries.
    this.#drop();
    throw new Error("The pipe's write end closed");
  };

  readonly #failed = (e: unknown): never => {
    this.#settled();
    this.#drop();
    throw e;
  };

  #settled(): void {
    this.#pending = false;
    this.#keepAlive.unref();
    if (this.#idle === null) this.#idle = setImmediate(this.#releaseIfIdle);
  }

  readonly #releaseIfIdle = (): void => {
    this.#idle = null;
    if (!this.#pending && this.#reader !== null) {
      this.#reader.releaseLock();
      this.#reader = null;
    }
  };

  #drop(): void {
    if (this.#reader !== null) this.#reader.releaseLock();
    this.#reader = null;
    // Cancelling leaves the fd open (Bun only closes fds it opened).
    if (this.#stream !== null) void this.#stream.cancel().catch(noop);
    this.#stream = null;
  }

  close(): void {
    if (this.#idle !== null) clearImmediate(this.#idle as ReturnType<typeof setImmediate>);
    this.#idle = null;
    clearInterval(this.#keepAlive as unknown as ReturnType<typeof setInterval>);
    this.#drop();
  }
}

function noop(): void {}

/** Node's names of architectures ("x64", "arm64") as Linux's `uname -m` gives them. */
function linuxArch(nodeArch: string): string {
  return ({ x64: "x86_64", arm64: "aarch64", ia32: "i686", arm: "armv7l" } as Record<string, string>)[
    nodeArch
  ] ??
    nodeArch;
}

/** The Bun implementation of {@link Native} (only on Bun). */
export function loadBun(): Native {
  ffi = (import.meta as unknown as { require(id: string): typeof BunFfi }).require("bun:ffi");
  return load();
}
