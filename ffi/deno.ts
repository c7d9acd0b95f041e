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

function bind<T extends Record<string, SymbolDef>>(
  soname: string,
  table: T,
): Bound<T> {
  const lib = Deno.dlopen(soname, translate(table));
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

function load(): Native {
  const libc = bind(LIBC_SONAME, LIBC_SYMBOLS);
  libcRead = libc.read;
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
    waitEventfd: (fd) => eventfdWaiter(fd).wait(),
    forgetEventfd: (fd) => {
      WAITERS.delete(fd);
      return RESOLVED;
    },
  };
}

const RESOLVED = Promise.resolve();
const POLLIN = 1;
const WAITERS = new Map<number, EventfdWaiter>();

function eventfdWaiter(fd: number): EventfdWaiter {
  let w = WAITERS.get(fd);
  if (w === undefined) {
    w = new EventfdWaiter(fd);
    WAITERS.set(fd, w);
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

  constructor(fd: number) {
    this.#fd = fd;
    const v = new DataView(this.#pollfd.buffer);
    v.setInt32(0, fd, true); // struct pollfd { int fd; short events; short revents; }
    v.setInt16(4, POLLIN, true);
  }

  wait(): Promise<void> {
    return (ASYNC.poll(this.#pollfd, 1n, -1) as Promise<number>).then(this.#reset);
  }
}

/** The Deno implementation of {@link Native}. */
export const native: Native = load();
