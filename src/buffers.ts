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

// The built-in getters, called directly: a Uint8Array subclass or an own property can redefine
// `buffer`, `byteOffset` and `byteLength`, and a lie there would send the kernel outside the
// buffer's memory. These read the internal slots, and cost no more than the property access.
type Getter<T> = (this: unknown) => T;
function intrinsic<T>(proto: object, name: string, missing?: T): Getter<T> {
  return (Object.getOwnPropertyDescriptor(proto, name)?.get as Getter<T>) ?? (() => missing as T);
}
const TYPED_ARRAY = Object.getPrototypeOf(Uint8Array.prototype) as object;
const VIEW_BUFFER = intrinsic<ArrayBufferLike>(TYPED_ARRAY, "buffer");
const VIEW_OFFSET = intrinsic<number>(TYPED_ARRAY, "byteOffset");
const VIEW_LENGTH = intrinsic<number>(TYPED_ARRAY, "byteLength");
// The built-in fill, for the same reason: a subclass's own `fill` is the caller's code, and the
// library zeroes buffers in the middle of a reap (a read past the end of a file).
const VIEW_FILL = (TYPED_ARRAY as { fill: (this: unknown, value: number, start: number) => unknown }).fill;
const AB_DETACHED = intrinsic<boolean>(ArrayBuffer.prototype, "detached", false); // ES2024
const AB_RESIZABLE = intrinsic<boolean>(ArrayBuffer.prototype, "resizable", false);
// Where those getters exist they throw a TypeError for a SharedArrayBuffer, and checkBuffer
// refuses it there. Only without them does it ask `instanceof SharedArrayBuffer`, which cost
// 2-3% of a request at iodepth 1 on Deno, right after its system call (in-process A/B, 3 runs).
const GETTERS_REFUSE_SHARED = ["detached", "resizable"].some((name) =>
  typeof Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, name)?.get === "function"
);

/** The real byte length of a buffer that passed {@link checkBuffer}, whatever its getters say. */
export function byteLengthOf(buf: Uint8Array): number {
  return VIEW_LENGTH.call(buf);
}

/** Zeroes a buffer that passed {@link checkBuffer} from byte `start` on, whatever its methods say. */
export function zeroFrom(buf: Uint8Array, start: number): void {
  VIEW_FILL.call(buf, 0, start);
}

/** The ArrayBuffer behind a buffer that passed {@link checkBuffer}, whatever its getters say. */
export function bufferOf(buf: Uint8Array): ArrayBufferLike {
  return VIEW_BUFFER.call(buf);
}

/** The ArrayBuffer and byte range of a view, or null for what is no real Uint8Array (a Proxy). */
export function viewRange(buf: unknown): { buffer: ArrayBufferLike; start: number; end: number } | null {
  if (!(buf instanceof Uint8Array)) return null;
  try {
    const start = VIEW_OFFSET.call(buf);
    return { buffer: VIEW_BUFFER.call(buf), start, end: start + VIEW_LENGTH.call(buf) };
  } catch {
    return null;
  }
}

/**
 * Calls `each(buffer, start, end)` for every buffer of a request's `arg` (its Uint8Array, or its
 * iovecs; anything else holds no memory).
 */
export function eachRange(
  arg: unknown,
  each: (buffer: ArrayBufferLike, start: number, end: number) => void,
): void {
  if (arg instanceof Uint8Array) {
    const r = viewRange(arg);
    if (r !== null) each(r.buffer, r.start, r.end);
  } else if (Array.isArray(arg)) {
    for (const b of arg) {
      const r = viewRange(b);
      if (r !== null) each(r.buffer, r.start, r.end);
    }
  }
}

/** Whether a request's `arg` (as for {@link eachRange}) uses a byte of `buffer` in [start, end). */
export function usesRange(arg: unknown, buffer: ArrayBufferLike, start: number, end: number): boolean {
  if (arg instanceof Uint8Array) return viewOverlaps(arg, buffer, start, end);
  if (Array.isArray(arg)) {
    for (const b of arg) if (b instanceof Uint8Array && viewOverlaps(b, buffer, start, end)) return true;
  }
  return false;
}

function viewOverlaps(v: Uint8Array, buffer: ArrayBufferLike, start: number, end: number): boolean {
  try {
    if (VIEW_BUFFER.call(v) !== buffer) return false;
    const at = VIEW_OFFSET.call(v);
    return at < end && start < at + VIEW_LENGTH.call(v);
  } catch {
    return false;
  }
}

/**
 * `bufs` with every Uint8Array longer than `max` cut into pieces of at most `max` bytes (views
 * of the same memory, in order), or null when none is longer or the pieces would number more
 * than `maxCount`: the caller then submits `bufs` as they are, and the driver says what is
 * wrong. Anything that is no plain Uint8Array stays as it is, for the driver's checks.
 */
export function splitSegments(bufs: readonly unknown[], max: number, maxCount: number): unknown[] | null {
  let count = 0, long = false;
  for (const b of bufs) {
    const len = plainLength(b);
    if (len > max) long = true;
    // Empty buffers take no segment: the queues leave them out.
    count += len > max ? Math.ceil(len / max) : len === 0 ? 0 : 1;
  }
  if (!long || count > maxCount) return null;
  const out: unknown[] = [];
  for (const b of bufs) {
    const len = plainLength(b);
    if (len <= max) {
      out.push(b);
      continue;
    }
    const ab = VIEW_BUFFER.call(b), at = VIEW_OFFSET.call(b);
    for (let off = 0; off < len; off += max) out.push(new Uint8Array(ab, at + off, Math.min(max, len - off)));
  }
  return out;
}

/** The byte length of a Uint8Array, or -1 for anything else (a Proxy, another view). */
function plainLength(b: unknown): number {
  if (!(b instanceof Uint8Array)) return -1;
  try {
    VIEW_BUFFER.call(b);
    return VIEW_LENGTH.call(b);
  } catch {
    return -1;
  }
}

/** The native address of `buf`'s first byte (0 for an empty buffer). */
export function bufferAddress(native: Native, buf: Uint8Array): number {
  if (VIEW_LENGTH.call(buf) === 0) return 0;
  const ab = VIEW_BUFFER.call(buf);
  let base = ADDRESSES.get(ab);
  if (base === undefined) {
    base = native.addressOf(ab as ArrayBuffer);
    ADDRESSES.set(ab, base);
  }
  return base + VIEW_OFFSET.call(buf);
}

/**
 * Throws EINVAL unless `buf` is a Uint8Array over a fixed-length, attached, unshared
 * ArrayBuffer: the only memory whose address stays valid while the kernel uses it. Use
 * {@link byteLengthOf} for its length.
 */
export function checkBuffer(what: string, buf: unknown): Uint8Array {
  if (!(buf instanceof Uint8Array)) {
    throw BlkioError.of("EINVAL", `${what} must be a Uint8Array: received ${describe(buf)}`);
  }
  let ab: ArrayBufferLike;
  try {
    ab = VIEW_BUFFER.call(buf); // throws for a Proxy or anything else that only looks like one
  } catch {
    throw BlkioError.of("EINVAL", `${what} must be a Uint8Array: received ${describe(buf)}`);
  }
  if (!GETTERS_REFUSE_SHARED && typeof SharedArrayBuffer !== "undefined" && ab instanceof SharedArrayBuffer) {
    throw BlkioError.of("EINVAL", `${what} must not be backed by a SharedArrayBuffer`);
  }
  let detached: boolean, resizable: boolean;
  try {
    detached = AB_DETACHED.call(ab);
    resizable = AB_RESIZABLE.call(ab);
  } catch {
    // The ES2024 getters accept only a (non-shared) ArrayBuffer.
    throw BlkioError.of("EINVAL", `${what} must not be backed by a SharedArrayBuffer`);
  }
  if (detached) {
    // A buffer from a memory region is detached when the region is freed, which users did not
    // connect with this message (new-user review: a buffer used after BlockDevice.close()).
    throw BlkioError.of(
      "EINVAL",
      `${what} is detached: its ArrayBuffer was transferred, or its memory freed (freeMemRegion, ` +
        "destroy() and BlockDevice.close() free the memory of allocMemRegion and allocBuffer)",
    );
  }
  if (resizable) {
    throw BlkioError.of("EINVAL", `${what} must not be backed by a resizable ArrayBuffer`);
  }
  return buf;
}

/**
 * Throws EINVAL unless `iovecs` is an array of valid buffers; returns the total length. When
 * `out` is given, the checked buffers are appended to it: use that copy, as the caller's array
 * (or a getter on it) may give different elements on a second look.
 */
export function checkIovecs(what: string, iovecs: unknown, out?: Uint8Array[]): number {
  if (!Array.isArray(iovecs)) {
    throw BlkioError.of("EINVAL", `${what} must be an array of Uint8Array: received ${describe(iovecs)}`);
  }
  let total = 0;
  const n = iovecs.length;
  for (let i = 0; i < n; i++) {
    const b = checkBuffer(`${what}[${i}]`, iovecs[i]);
    total += VIEW_LENGTH.call(b);
    out?.push(b);
  }
  return total;
}

/**
 * How a driver ends a request's message when the device refuses the request's memory, one ending
 * per remedy: where such memory comes from on the `Queue` API. The ending is the refusal's mark:
 * BlockDevice, whose users get memory from its allocBuffer instead, recognises the refusal by
 * it and names its own remedy in its place. A driver's new refusal needs an ending here.
 */
export const BUFFER_REMEDIES = {
  /** O_DIRECT refused an address (io_uring): regions are aligned. */
  aligned: "; a memory region (allocMemRegion) starts at a multiple of buf-alignment",
  /** The device reaches only mapped regions (virtio-blk-vhost-user, needs-mem-regions). */
  mapped:
    "; every buffer must be a view of the bytes of a region passed to mapMemRegion (needs-mem-regions is true)",
} as const;

/**
 * {@link toOffset}'s result for a uint64 of 2^53 or more: a value libblkio would take (its
 * offsets are `uint64_t`) but a JS number cannot hold exactly. The request is not refused by a
 * throw (the call is usable): it completes with -EINVAL.
 */
export const BEYOND_2_53 = -1;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * Converts an offset or length (number or bigint) to a safe non-negative integer number, or
 * BEYOND_2_53 for an integer from 2^53 to 2^64 - 1. Anything else is no uint64 and throws.
 */
export function toOffset(what: string, value: unknown): number {
  if (typeof value === "number") {
    if (Number.isSafeInteger(value) && value >= 0) return value;
    if (Number.isInteger(value) && value > 0 && value < 2 ** 64) return BEYOND_2_53;
  } else if (typeof value === "bigint") {
    if (value >= 0n && value <= MAX_SAFE) return Number(value);
    if (value > 0n && value < 1n << 64n) return BEYOND_2_53;
  }
  throw BlkioError.of(
    "EINVAL",
    `${what} must be a non-negative integer below 2^64: received ${describe(value)}`,
  );
}

/** The errorMsg of a request whose start or length is 2^53 or more. */
export const BEYOND_2_53_MSG = "start and length must be below 2^53 (8 PiB), what a JS number holds exactly";
