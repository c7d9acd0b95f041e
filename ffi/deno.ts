/**
 * Deno adapter: translates the neutral symbol table for `Deno.dlopen`.
 *
 * `ptr` values travel as `usize` (a bigint on the FFI boundary, a number in the core) so no
 * pointer objects are created per call; `buf` is Deno's `buffer` type.
 *
 * @module
 */
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
import type { Socket } from "node:net";

const DENO_TYPE = {
  i32: "i32",
  u32: "u32",
  i64: "i64",
  u64: "u64",
  ptr: "usize",
  buf: "buffer",
  void: "void",
} as const satisfies Record<NativeType, Deno.NativeResultType>;

/** Key of the awaitable variant of a `nonblocking` symbol. */
const NONBLOCKING = "_nonblocking";

function translate(table: Record<string, SymbolDef>): Record<string, Deno.ForeignFunction> {
  const out: Record<string, Deno.ForeignFunction> = {};
  for (const [name, def] of Object.entries(table)) {
    out[name] = {
      parameters: def.params.map((t) => DENO_TYPE[t]) as Deno.NativeType[],
      result: DENO_TYPE[def.result],
    };
    if (def.nonblocking) out[name + NONBLOCKING] = { ...out[name], name, nonblocking: true };
  }
  return out;
}

// deno-lint-ignore no-explicit-any
type AnyFn = (...args: any[]) => any;

/** Awaitable variants of `nonblocking` symbols (same arguments, a Promise of the result). */
const ASYNC: Record<string, AnyFn> = {};

/**
 * Deno.dlopen, once more when this call's own prompt granted FFI permission: answered "A" at
 * Deno's prompt, the first dlopen still looked for the name as a file in the current directory
 * and failed (Deno 2.9); the same call after the grant opens the system library.
 */
function open<S extends Deno.ForeignLibraryInterface>(soname: string, symbols: S): Deno.DynamicLibrary<S> {
  const before = Deno.permissions.querySync({ name: "ffi" }).state;
  try {
    return Deno.dlopen(soname, symbols);
  } catch (e) {
    if (before !== "prompt" || Deno.permissions.querySync({ name: "ffi" }).state !== "granted") throw e;
    return Deno.dlopen(soname, symbols);
  }
}

function bind<T extends Record<string, SymbolDef>>(
  soname: string,
  table: T,
): Bound<T> {
  const lib = open(soname, translate(table));
  const raw = lib.symbols as unknown as Record<string, AnyFn>;
  const out: Record<string, AnyFn> = {};
  for (const [name, def] of Object.entries(table)) {
    if (def.nonblocking) ASYNC[name] = raw[name + NONBLOCKING];
  }
  for (const [name, def] of Object.entries(table)) {
    const fn = raw[name];
    const ptrParams = def.params.some((t) => t === "ptr");
    const ptrResult = def.result === "ptr";
    if (!ptrParams && !ptrResult) {
      out[name] = fn;
      continue;
    }
    // Only cold-path calls (mmap, munmap, probes) take or return addresses; converting here
    // keeps bigints out of the core.
    const kinds = def.params;
    out[name] = (...args: unknown[]) => {
      for (let i = 0; i < kinds.length; i++) {
        if (kinds[i] === "ptr") args[i] = BigInt(args[i] as number);
      }
      const r = fn(...args);
      return ptrResult ? Number(r) : r;
    };
  }
  return out as unknown as Bound<T>;
}

let libcRead: Native["libc"]["read"];
let libcClose: Native["libc"]["close"];

function load(): Native {
  const libc = bind(LIBC_SONAME, LIBC_SYMBOLS);
  libcRead = libc.read;
  libcClose = libc.close;
  const uring = bind(LIBURING_SONAME, LIBURING_SYMBOLS);
  const errnoView = new Int32Array(
    Deno.UnsafePointerView.getArrayBuffer(
      Deno.UnsafePointer.create(BigInt(libc.__errno_location()))!,
      4,
    ),
  );
  return {
    runtime: "deno",
    arch: Deno.build.arch, // "x86_64" or "aarch64", as Linux names them
    uring,
    libc,
    alloc: (len) => new Uint8Array(new ArrayBuffer(len)),
    addressOf: (buffer) => {
      if (buffer.byteLength === 0) return 0;
      return Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
    },
    view: (addr, len) => Deno.UnsafePointerView.getArrayBuffer(Deno.UnsafePointer.create(BigInt(addr))!, len),
    errno: () => errnoView[0],
    waitEventfd: (fd) => waiterOf(WAITERS, fd, EventfdWaiter).wait(),
    forgetEventfd: (fd) => {
      WAITERS.delete(fd);
      return RESOLVED;
    },
    eventfdWaitUsesThread: true,
    waitPipe: (fd) => waiterOf(PIPES, fd, PipeWaiter).wait(),
    forgetPipe: (fd) => {
      // The fd is closed either way (Native.forgetPipe): a pipe never waited on has no waiter
      // to close it, and a relay closed before its first wait left its read end open.
      const w = PIPES.get(fd);
      PIPES.delete(fd);
      if (w !== undefined) w.close();
      else libcClose(fd);
      return RESOLVED;
    },
  };
}

const RESOLVED = Promise.resolve();
const POLLIN = 1;
const WAITERS = new Map<number, EventfdWaiter>();
const PIPES = new Map<number, PipeWaiter>();

/** The waiter kept for `fd` in `map`, made on first use. */
function waiterOf<W>(map: Map<number, W>, fd: number, make: new (fd: number) => W): W {
  let w = map.get(fd);
  if (w === undefined) {
    w = new make(fd);
    map.set(fd, w);
  }
  return w;
}

/**
 * poll(2) on a blocking-pool thread (a `nonblocking` call), then a read on the JS thread to
 * reset the counter. The pollfd lives as long as the waiter, so nothing is allocated per wait.
 */
class EventfdWaiter {
  readonly #fd: number;
  readonly #pollfd = new Uint8Array(new ArrayBuffer(8));
  readonly #counter = new Uint8Array(new ArrayBuffer(8));
  readonly #reset = () => void libcRead(this.#fd, this.#counter, 8n);
  /** The turn (turn.ts) the pending wait was asked in. */
  #askedIn = -1;

  constructor(fd: number) {
    this.#fd = fd;
    const v = new DataView(this.#pollfd.buffer);
    v.setInt32(0, fd, true); // struct pollfd { int fd; short events; short revents; }
    v.setInt16(4, POLLIN, true);
  }

  wait(): Promise<void> {
    this.#askedIn = currentTurn();
    return (ASYNC.poll(this.#pollfd, 1n, -1) as Promise<number>).then(this.#polled);
  }

  /** The poll's end: one that ended in the turn it was asked in goes on in a later one (turn.ts). */
  readonly #polled = (): void | Promise<void> =>
    sameTurn(this.#askedIn) ? new Promise<void>(nextTurn).then(this.#reset) : this.#reset();
}

/**
 * The read end of a pipe on Deno's own event loop: node:net adopts a pipe fd (it refuses
 * eventfds, which is why the core relays them to a pipe) and reads it through epoll, no thread
 * involved. A wait's round trip through the core's relay takes 3.2 µs against 25 µs for the
 * blocking-pool poll of {@link EventfdWaiter} (bench/wait_bench.ts). The socket is unref'ed between waits so
 * that an idle device does not keep the process alive; closing it closes the fd.
 */
class PipeWaiter {
  readonly #fd: number;
  #socket: Socket | null = null;
  #resolve: (() => void) | null = null;
  #reject: ((e: Error) => void) | null = null;
  /** Data came with no wait pending: the next wait resolves at once. */
  #ready = false;
  #closed = false;
  /**
   * Why the socket failed: later waits reject with it at once. They used to wait on the dead
   * socket, which never emits data again, so nothing woke them (and close() awaited for ever);
   * rejected, the caller falls back to looking now and then.
   */
  #failed: Error | null = null;
  readonly #settle = (resolve: () => void, reject: (e: Error) => void): void => {
    this.#resolve = resolve;
    this.#reject = reject;
  };

  constructor(fd: number) {
    this.#fd = fd;
  }

  wait(): Promise<void> {
    if (this.#failed !== null) return Promise.reject(this.#failed);
    const socket = this.#socket;
    if (socket === null) return this.#open().then(() => this.wait());
    if (this.#ready) {
      // Not RESOLVED: its continuation would run in the microtasks of the turn the wait was
      // asked in, where BlockDevice must never take completions (a request made in one of them
      // and aborted from a microtask queued after it settled with its result: the Bun waiter's
      // case, BlockDevice fuzzer). A later turn, as a wait ended by new data.
      this.#ready = false;
      return new Promise<void>(nextTurn);
    }
    socket.ref();
    return new Promise(this.#settle);
  }

  /** Adopts the fd on the first wait: node:net costs ~15 ms to load, which most uses never need. */
  async #open(): Promise<void> {
    const { Socket } = await loadNet();
    if (this.#socket !== null) return;
    if (this.#closed) throw new Error("The pipe is no longer watched");
    const socket = new Socket({ fd: this.#fd, readable: true, writable: false });
    socket.on("data", this.#onData);
    socket.on("error", this.#onError);
    // The write end closed (the relay gone) before this side: no data will come again.
    socket.on("close", () => {
      if (!this.#closed) this.#onError(new Error("The relay pipe closed"));
    });
    socket.unref();
    this.#socket = socket;
  }

  readonly #onData = (): void => {
    const resolve = this.#resolve;
    if (resolve === null) {
      this.#ready = true;
      return;
    }
    this.#resolve = this.#reject = null;
    this.#socket!.unref();
    resolve();
  };

  readonly #onError = (e: Error): void => {
    this.#failed ??= e;
    const reject = this.#reject;
    this.#resolve = this.#reject = null;
    this.#socket!.unref();
    reject?.(e);
  };

  /** Closes the fd (through the socket once it adopted it). */
  close(): void {
    this.#closed = true;
    if (this.#socket !== null) this.#socket.destroy();
    else libcClose(this.#fd);
  }
}

let net: Promise<typeof import("node:net")> | null = null;

function loadNet(): Promise<typeof import("node:net")> {
  return (net ??= import("node:net"));
}

/**
 * The Deno implementation of {@link Native} (only on Deno: this module is imported on Bun too).
 *
 * It also listens for SIGXFSZ. A write that starts at or past RLIMIT_FSIZE raises it in the
 * thread that makes the write, and io_uring makes O_DIRECT writes (like the ftruncate of a
 * memory region's memfd) in the JS thread, inside the system call. Node and Bun ignore the
 * signal, so the write fails with EFBIG; Deno keeps the default action, which ends the process.
 * A listener, never removed, turns it into that EFBIG, which the caller sees as the request's
 * error.
 */
export function loadDeno(): Native {
  const native = load();
  try {
    Deno.addSignalListener("SIGXFSZ", () => {});
  } catch {
    // No signal listeners where this runs: the default action stays.
  }
  return native;
}
