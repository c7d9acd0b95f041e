/**
 * Checks on caller buffers and the cache of their native addresses.
 *
 * @module
 */
import type { Native } from "../ffi/types.ts";
import { BlkioError } from "./errors.ts";
import { describe } from "./properties.ts";

// One lookup per ArrayBuffer for the life of the buffer: Deno's UnsafePointer.of costs ~0.5 µs,
// far too much per request. Backing stores of fixed-length ArrayBuffers never move (in Bun only
// once `.buffer` has been touched, which `bufferAddress` does before asking).
const ADDRESSES = new WeakMap<ArrayBufferLike, number>();

/** The native address of `buf`'s first byte (0 for an empty buffer). */
export function bufferAddress(native: Native, buf: Uint8Array): number {
  if (buf.byteLength === 0) return 0;
  const ab = buf.buffer;
  let base = ADDRESSES.get(ab);
  if (base === undefined) {
    base = native.addressOf(ab as ArrayBuffer);
    ADDRESSES.set(ab, base);
  }
  return base + buf.byteOffset;
}

/**
 * Throws EINVAL unless `buf` is a Uint8Array over a fixed-length, attached, unshared
 * ArrayBuffer: the only memory whose address stays valid while the kernel uses it.
 */
export function checkBuffer(what: string, buf: unknown): Uint8Array {
  if (!(buf instanceof Uint8Array)) {
    throw BlkioError.of("EINVAL", `${what} must be a Uint8Array: received ${describe(buf)}`);
  }
  const ab = buf.buffer as ArrayBuffer & { detached?: boolean; resizable?: boolean };
  if (typeof SharedArrayBuffer !== "undefined" && ab instanceof SharedArrayBuffer) {
    throw BlkioError.of("EINVAL", `${what} must not be backed by a SharedArrayBuffer`);
  }
  if (ab.detached) throw BlkioError.of("EINVAL", `${what} is detached`);
  if (ab.resizable) {
    throw BlkioError.of("EINVAL", `${what} must not be backed by a resizable ArrayBuffer`);
  }
  return buf;
}

/** Throws EINVAL unless `iovecs` is an array of valid buffers; returns the total length. */
export function checkIovecs(what: string, iovecs: unknown): number {
  if (!Array.isArray(iovecs)) {
    throw BlkioError.of("EINVAL", `${what} must be an array of Uint8Array: received ${describe(iovecs)}`);
  }
  let total = 0;
  for (let i = 0; i < iovecs.length; i++) total += checkBuffer(`${what}[${i}]`, iovecs[i]).byteLength;
  return total;
}

/** Converts an offset or length (number or bigint) to a safe non-negative integer number. */
export function toOffset(what: string, value: unknown): number {
  if (typeof value === "number") {
    if (Number.isSafeInteger(value) && value >= 0) return value;
  } else if (typeof value === "bigint") {
    if (value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value);
  }
  throw BlkioError.of(
    "EINVAL",
    `${what} must be a non-negative integer below 2^53: received ${describe(value)}`,
  );
}
