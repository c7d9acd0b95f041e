/**
 * Bun adapter: translates the neutral symbol table for `bun:ffi`.
 *
 * Every typed array handed to native code comes from an explicit ArrayBuffer: Bun moves small
 * typed arrays that own their storage, which would leave the kernel writing to freed memory.
 *
 * @module
 */
import { dlopen, type FFIFunction, FFIType, ptr, toArrayBuffer } from "bun:ffi";
import {
  LIBC_SONAME,
  LIBC_SYMBOLS,
  LIBURING_SONAME,
  LIBURING_SYMBOLS,
  type NativeType,
  type SymbolDef,
} from "./symbols.ts";
import type { Bound, Native } from "./types.ts";

const BUN_TYPE: Record<NativeType, FFIType> = {
  i32: FFIType.i32,
  u32: FFIType.u32,
  i64: FFIType.i64,
  u64: FFIType.u64,
  ptr: FFIType.u64,
  buf: FFIType.ptr,
  void: FFIType.void,
};

function bind<T extends Record<string, SymbolDef>>(soname: string, table: T): Bound<T> {
  const defs: Record<string, FFIFunction> = {};
  for (const [name, def] of Object.entries(table)) {
    defs[name] = {
      args: def.params.map((t) => BUN_TYPE[t]),
      returns: BUN_TYPE[def.result],
    };
  }
  const symbols = dlopen(soname, defs).symbols as Record<string, (...a: unknown[]) => unknown>;
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
  const errnoView = new Int32Array(toArrayBuffer(libc.__errno_location(), 0, 4));
  return {
    runtime: "bun",
    uring,
    libc,
    alloc: (len) => new Uint8Array(new ArrayBuffer(len)),
    addressOf: (buffer) => (buffer.byteLength === 0 ? 0 : ptr(buffer)),
    view: (addr, len) => toArrayBuffer(addr, 0, len),
    errno: () => errnoView[0],
  };
}

/** The Bun implementation of {@link Native}. */
export const native: Native = load();
