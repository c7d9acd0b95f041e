/**
 * The public queue: request submission, validation, both backlogs and the `doIo` loop shared
 * by every driver.
 *
 * @module
 */
import type { Native } from "../ffi/types.ts";
import { type Completion, flagsError, Op, type OpValue } from "./completion.ts";
import { CompletionBacklog } from "./completion_backlog.ts";
import type { DriverQueue } from "./driver.ts";
import { ERRNO } from "./errno.ts";
import { BlkioError, noConstructor } from "./errors.ts";
import { BEYOND_2_53_MSG, byteLengthOf, checkBuffer, checkIovecs, toOffset } from "./buffers.ts";
import { checkBool, describe } from "./properties.ts";
import { NOT_WAITING, RequestBacklog } from "./request_backlog.ts";
import { errnoError, signalEventfd } from "./sys.ts";

const EINVAL = ERRNO.EINVAL;
const EINTR = ERRNO.EINTR;
const ETIME = ERRNO.ETIME;
const ECANCELED = ERRNO.ECANCELED;
/** The proof that the instance makes the queue, not `new Queue()` from JavaScript. */
const MADE_BY_BLKIO = Symbol("Queue");

function checkFlags(flags: unknown): number {
  if (flags === undefined) return 0;
  if (typeof flags !== "number" || !Number.isInteger(flags) || flags < -(2 ** 31) || flags >= 2 ** 32) {
    throw BlkioError.of("EINVAL", `flags must be a 32-bit integer: received ${describe(flags)}`);
  }
  return flags >>> 0;
}

function checkCount(what: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw BlkioError.of("EINVAL", `${what} must be a non-negative integer: received ${describe(value)}`);
  }
  return value;
}

function checkTimeout(value: unknown): number {
  if (value === undefined || value === null) return -1;
  if (typeof value === "bigint" && value >= 0n) {
    return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
  }
  if (typeof value === "number" && value >= 0 && !Number.isNaN(value)) {
    return Math.min(Math.floor(value), Number.MAX_SAFE_INTEGER);
  }
  throw BlkioError.of(
    "EINVAL",
    `timeoutNs must be a non-negative number of nanoseconds: received ${describe(value)}`,
  );
}

function busyError(): BlkioError {
  // The reap below it is halfway through the ring: a second reap would hand the same
  // completions out again, and a close would unmap the ring under it.
  return BlkioError.of(
    "EBUSY",
    "doIo of this queue is already running (called from code that runs inside it)",
  );
}

/**
 * Undoes the growth of `out` by a doIo that threw (its completions went back to the backlog), so
 * retrying with the same arguments gets the same default `max`.
 */
function keepLength(out: unknown, len: number): void {
  if (Array.isArray(out) && out.length > len) out.length = len;
}

/** Makes the public queue over a driver queue (Blkio.start, addQueue). */
export let newQueue: (native: Native, dq: DriverQueue) => Queue;
/** Whether a request of `q` in flight or waiting uses memory of `buffer`. */
export let queueUsesBuffer: (q: Queue, buffer: ArrayBufferLike) => boolean;
/** Shuts `q` down (queue removed, instance destroyed); later calls throw EBADF with `reason`. */
export let closeQueue: (q: Queue, reason: string) => void;
/** Tells `q`'s driver that an event loop drives it (BlockDevice): see DriverQueue. */
export let submitFromEventLoop: (q: Queue) => void;
/**
 * Whether a `doIo` of `q` is running: caller code (a setter or getter of an `out` entry) runs
 * inside it, and must not close the queue under the driver's reap.
 */
export let queueBusy: (q: Queue) => boolean;

/**
 * A submission/completion queue of a started instance. Use each queue from one thread.
 *
 * Requests take `flags` (ReqFlags bits), a C `uint32_t`: a value no 32-bit integer can hold
 * (`1.5`, `2 ** 32`, `null`) throws EINVAL like any other unusable argument; a 32-bit value
 * with bits the request does not support comes back as a completion with `-EINVAL`, as in
 * libblkio.
 *
 * @example Read 4 KiB and wait for it
 * ```ts
 * import { Blkio, type Completion } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(8192).fill(7));
 * using b = Blkio.create("io_uring");
 * b.setStr("path", path);
 * b.connect();
 * b.start();
 * const q = b.getQueue(0)!;
 * const buf = new Uint8Array(4096);
 * q.read(4096, buf, "my read");
 * const out: Completion[] = [];
 * q.doIo(out, 1, 1);
 * if (out[0].ret !== 0 || out[0].userData !== "my read" || buf[0] !== 7) throw new Error("read failed");
 * rmSync(dir, { recursive: true });
 * ```
 */
export class Queue {
  #dq: DriverQueue | null;
  readonly #native: Native;
  readonly #backlog = new RequestBacklog();
  readonly #completions = new CompletionBacklog();
  readonly #isPoll: boolean;
  #gone = "The queue has been removed";
  /** A doIo is running (caller code inside it must neither close the queue nor enter doIo again). */
  #busy = false;

  static {
    // The instance's hold on its queues, kept off the public class: a `close()` or a constructor
    // that users can reach looks like API (and q.close("x") did shut the queue down).
    newQueue = (native, dq) => new Queue(MADE_BY_BLKIO, native, dq);
    queueUsesBuffer = (q, buffer) => q.#usesBuffer(buffer);
    closeQueue = (q, reason) => q.#close(reason);
    submitFromEventLoop = (q) => q.#live().submitFromEventLoop?.();
    queueBusy = (q) => q.#busy;
  }

  private constructor(key: symbol, native: Native, dq: DriverQueue) {
    if (key !== MADE_BY_BLKIO) throw noConstructor("Queue", "Blkio.getQueue(index)");
    this.#native = native;
    this.#dq = dq;
    this.#isPoll = dq.isPollQueue;
    dq.completions = this.#completions;
    if (dq.completionFd >= 0) {
      // Completions the library makes must wake an event loop waiting on the completion fd,
      // as kernel completions do.
      const fd = dq.completionFd;
      this.#completions.onPush = () => signalEventfd(native, fd);
    }
  }

  #live(): DriverQueue {
    const dq = this.#dq;
    if (dq === null) throw BlkioError.of("EBADF", this.#gone);
    return dq;
  }

  /** Whether this is a poll queue. */
  get isPollQueue(): boolean {
    return this.#isPoll;
  }

  /**
   * The completion eventfd (O_NONBLOCK, close-on-exec), or -1 on a poll queue. Its number is
   * fixed for the life of the queue. The io_uring driver starts signalling it the first time it
   * is read (a thread that only waits in {@link doIo} spares the kernel a signal per completion
   * batch), and then signals once for requests that completed before.
   */
  get completionFd(): number {
    const dq = this.#live();
    dq.useCompletionFd();
    return dq.completionFd;
  }

  /**
   * 0, or how often (ms) a caller waiting on {@link completionFd} should call `doIo(out, 0, n)`
   * while requests are in flight: some failures (a vhost-user back-end that died) are found
   * only then, as no eventfd signals them. `doIo` waits look for them by themselves.
   */
  get failureCheckMs(): number {
    return this.#live().failureCheckMs ?? 0;
  }

  /**
   * Enables or disables completion fd notifications (spurious wakeups remain possible).
   *
   * @param enabled Whether {@link completionFd} should become readable when requests complete.
   * @throws {BlkioError} `EINVAL` for a value that is not a boolean; `EBADF` once the queue is
   * removed or the instance destroyed.
   */
  setCompletionFdEnabled(enabled: boolean): void {
    this.#live().setCompletionFdEnabled(checkBool("enabled", enabled));
  }

  /**
   * Queues a read of `buf.byteLength` bytes at `start`. Where the `can-grow` property is true (a
   * regular file), what lies past the end reads as zeroes and the request succeeds; elsewhere a
   * read past the capacity fails (a block device: -EIO, with an errorMsg naming the capacity).
   *
   * @param start The byte offset: a non-negative integer number or bigint (from 2^53 on, the
   * request completes with -EINVAL), a multiple of `request-alignment` (1 for a buffered
   * io_uring instance) or the request completes with -EINVAL.
   * @param buf Where the data goes; its length is the request's. It must stay untouched until
   * the completion, its address and length must be multiples of `buf-alignment`, and with
   * `needs-mem-regions` it must lie in a mapped memory region.
   * @param userData Any value; the request's completion carries it back unchanged (the same
   * object).
   * @param flags {@link ReqFlags} bits; none applies to a read (-EINVAL in the completion).
   * @throws {BlkioError} `EINVAL` for an argument that cannot make a request: a negative or
   * fractional `start`, a `buf` that is not a Uint8Array over a fixed-length, attached,
   * unshared ArrayBuffer, `flags` that are not a 32-bit integer; `EBADF` once the queue is
   * removed or the instance destroyed. Anything else, the request's own failure included,
   * comes back as its completion's `ret`.
   */
  read(start: bigint | number, buf: Uint8Array, userData?: unknown, flags?: number): void {
    const dq = this.#live();
    const s = toOffset("start", start);
    checkBuffer("buf", buf);
    this.#submit(dq, Op.Read, s, buf, null, byteLengthOf(buf), userData, checkFlags(flags));
  }

  /**
   * Queues a write of `buf` at `start` (flags: FUA). Where `can-grow` is true (a regular file),
   * a write past the end extends the file, and `capacity` with it; elsewhere it fails (a block
   * device: -ENOSPC, with an errorMsg naming the capacity). A write that fails may have landed in
   * part, each byte old or new (a full file system: what fitted is written, then -ENOSPC).
   * On a `read-only` instance it completes with -EBADF.
   *
   * @param start The byte offset, as for {@link read}.
   * @param buf The data; its length is the request's. It must stay untouched until the
   * completion, with the alignment and memory {@link read} needs.
   * @param userData Any value, carried back by the completion, as for {@link read}.
   * @param flags {@link ReqFlags} bits: `FUA` (the data is on stable storage when it completes).
   * @throws {BlkioError} As {@link read}.
   */
  write(start: bigint | number, buf: Uint8Array, userData?: unknown, flags?: number): void {
    const dq = this.#live();
    const s = toOffset("start", start);
    checkBuffer("buf", buf);
    this.#submit(dq, Op.Write, s, buf, null, byteLengthOf(buf), userData, checkFlags(flags));
  }

  /**
   * Queues a vectored read into `iovecs` at `start`; past the end as {@link read}. The array is
   * read at the call: changing it afterwards does not change the request (the buffers it held
   * must stay untouched until the completion).
   *
   * @param start The byte offset, as for {@link read}.
   * @param iovecs The buffers, filled in order; the request's length is the sum of theirs (at
   * most `max-segments` of them). Each as `buf` of {@link read}.
   * @param userData Any value, carried back by the completion, as for {@link read}.
   * @param flags {@link ReqFlags} bits; none applies to a read.
   * @throws {BlkioError} As {@link read}, and `EINVAL` for `iovecs` that is not an array of
   * such Uint8Arrays.
   */
  readv(start: bigint | number, iovecs: Uint8Array[], userData?: unknown, flags?: number): void {
    const dq = this.#live();
    const s = toOffset("start", start);
    // A copy, so the caller changing its array cannot change what stays referenced in flight.
    const list: Uint8Array[] = [];
    const len = checkIovecs("iovecs", iovecs, list);
    this.#submit(dq, Op.Readv, s, null, list, len, userData, checkFlags(flags));
  }

  /**
   * Queues a vectored write of `iovecs` at `start` (flags: FUA); past the end as {@link write}.
   * The array is read at the call, as with {@link readv}.
   *
   * @param start The byte offset, as for {@link read}.
   * @param iovecs The buffers, written in order; as for {@link readv}.
   * @param userData Any value, carried back by the completion, as for {@link read}.
   * @param flags {@link ReqFlags} bits: `FUA`.
   * @throws {BlkioError} As {@link readv}.
   */
  writev(start: bigint | number, iovecs: Uint8Array[], userData?: unknown, flags?: number): void {
    const dq = this.#live();
    const s = toOffset("start", start);
    const list: Uint8Array[] = [];
    const len = checkIovecs("iovecs", iovecs, list);
    this.#submit(dq, Op.Writev, s, null, list, len, userData, checkFlags(flags));
  }

  /**
   * Queues zeroing `len` bytes at `start` (flags: FUA, NO_UNMAP, NO_FALLBACK). One that fails may
   * have zeroed part of the range (virtio-blk sends a long one in chunks, the last first).
   *
   * @param start The byte offset, as for {@link read}.
   * @param len The number of bytes to zero, a multiple of `request-alignment` as `start` is.
   * @param userData Any value, carried back by the completion, as for {@link read}.
   * @param flags {@link ReqFlags} bits: `FUA`, `NO_UNMAP` (keep the range allocated),
   * `NO_FALLBACK` (fail with -ENOTSUP rather than write zeroes where the device cannot zero).
   * @throws {BlkioError} As {@link read}, and `EINVAL` for a `len` that is not a non-negative
   * integer.
   */
  writeZeroes(start: bigint | number, len: bigint | number, userData?: unknown, flags?: number): void {
    const dq = this.#live();
    const s = toOffset("start", start);
    const l = toOffset("len", len);
    this.#submit(dq, Op.WriteZeroes, s, null, null, l, userData, checkFlags(flags));
  }

  /**
   * Queues discarding `len` bytes at `start`: they may then read as anything. io_uring on a
   * regular file completes it with -ENOTSUP, as libblkio does (its fallocate mode, with
   * FALLOC_FL_NO_HIDE_STALE, is one Linux does not accept for files); {@link writeZeroes} without
   * NO_UNMAP deallocates a file's range instead. On a block device it is the device's discard
   * (Linux 6.12+); before 6.12 io_uring cannot send one, and the range gets a hole (a write zeroes
   * that may unmap) instead.
   *
   * @param start The byte offset, as for {@link read}.
   * @param len The number of bytes to discard, a multiple of `request-alignment` as `start` is.
   * @param userData Any value, carried back by the completion, as for {@link read}.
   * @param flags {@link ReqFlags} bits; none applies to a discard.
   * @throws {BlkioError} As {@link writeZeroes}.
   */
  discard(start: bigint | number, len: bigint | number, userData?: unknown, flags?: number): void {
    const dq = this.#live();
    const s = toOffset("start", start);
    const l = toOffset("len", len);
    this.#submit(dq, Op.Discard, s, null, null, l, userData, checkFlags(flags));
  }

  /**
   * Queues a flush: writes that completed before it are on stable storage when it completes.
   *
   * @param userData Any value, carried back by the completion, as for {@link read}.
   * @param flags {@link ReqFlags} bits; none applies to a flush.
   * @throws {BlkioError} `EINVAL` for flags that are not a 32-bit integer; `EBADF` once the
   * queue is removed or the instance destroyed.
   */
  flush(userData?: unknown, flags?: number): void {
    const dq = this.#live();
    this.#submit(dq, Op.Flush, 0, null, null, 0, userData, checkFlags(flags));
  }

  #submit(
    dq: DriverQueue,
    op: OpValue,
    start: number,
    buf: Uint8Array | null,
    iov: readonly Uint8Array[] | null,
    len: number,
    userData: unknown,
    flags: number,
  ): void {
    const bad = flags === 0 ? null : flagsError(op, flags);
    if (bad !== null || start < 0 || len < 0) {
      this.#completions.push(userData, -EINVAL, bad ?? BEYOND_2_53_MSG); // negative: BEYOND_2_53
      return;
    }
    // FIFO: a request may only go straight to the ring while nothing waits before it.
    if (this.#backlog.length === 0 && dq.tryEnqueue(op, start, buf, iov, len, userData, flags)) return;
    this.#backlog.push(op, start, buf, iov, len, userData, flags);
  }

  /**
   * Submits queued requests and reaps completions into `out`, waiting until at least `min` are
   * there. Returns how many were filled (`min <= n <= max`). `max` defaults to `out.length`, or
   * no limit when `out` is an empty growable array. Completion objects already in `out` are
   * reused. On `ETIME` (timeout) nothing is lost: completions reaped so far come back from the
   * next call. Nor on an entry that cannot take a completion (frozen, a primitive) or that is
   * the same object as an earlier entry (`new Array(n).fill(newCompletion())`: one completion
   * would overwrite the other): `EINVAL`, and the next call with a usable array returns
   * everything. Code of the caller's that runs inside it (a setter of an `out` entry) gets
   * `EBUSY` from this queue's `doIo`, `removeQueue` and the instance's `destroy`.
   *
   * @param out Where completions go: `out[0..n)` on return.
   * @param min How many completions to wait for: 0 submits and takes what is there without
   * waiting.
   * @param max At most this many are returned (default: `out.length`, or no limit for an empty
   * growable array).
   * @param timeoutNs The longest wait, in nanoseconds (default: no limit).
   * @returns How many completions were written to `out`, from `min` to `max`.
   * @throws {BlkioError} `ETIME` when the timeout ends first; `EINVAL` for `min` larger than
   * `max` or than the requests outstanding (in flight, queued, or completed and not yet
   * returned), for arguments that are not non-negative integers, and for an `out` entry that
   * cannot take a completion; `EBUSY` from code that runs inside a `doIo` of this queue; the
   * errno of a ring or back-end that failed (`EIO` for a vhost-user back-end that went away);
   * `EBADF` once the queue is removed or the instance destroyed.
   */
  doIo(out: Completion[], min: number, max?: number, timeoutNs?: bigint | number): number {
    const len = Array.isArray(out) ? out.length : 0;
    if (this.#busy) throw busyError();
    this.#busy = true;
    try {
      return this.#doIo(out, min, max, timeoutNs, false);
    } catch (e) {
      keepLength(out, len);
      throw e;
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Like {@link doIo}, but a signal interrupts the wait with `EINTR` (completions reaped so far
   * come back from the next call). Not on poll queues. The runtime must catch the signal (a
   * listener, e.g. `process.on("SIGINT", …)`), and it must reach the waiting thread: the kernel
   * gives a signal sent to the process (`kill`) to the main thread, so it does not interrupt a
   * wait in a Worker, nor in a test under `deno test`, which runs tests on another thread.
   *
   * @param out Where completions go, as for {@link doIo}.
   * @param min How many completions to wait for.
   * @param max At most this many are returned.
   * @param timeoutNs The longest wait, in nanoseconds.
   * @returns How many completions were written to `out`.
   * @throws {BlkioError} `EINTR` when a signal came first; `ENOTSUP` on a poll queue; otherwise
   * as {@link doIo}.
   */
  doIoInterruptible(out: Completion[], min: number, max?: number, timeoutNs?: bigint | number): number {
    const len = Array.isArray(out) ? out.length : 0;
    if (this.#busy) throw busyError();
    this.#busy = true;
    try {
      return this.#doIo(out, min, max, timeoutNs, true);
    } catch (e) {
      keepLength(out, len);
      throw e;
    } finally {
      this.#busy = false;
    }
  }

  #doIo(
    out: Completion[],
    min: number,
    maxArg: number | undefined,
    timeoutArg: unknown,
    intr: boolean,
  ): number {
    const dq = this.#live();
    if (!Array.isArray(out)) {
      throw BlkioError.of("EINVAL", `out must be an array of Completion: received ${describe(out)}`);
    }
    checkCount("min", min);
    // Whether `out` may grow is only asked when it matters (Object.isExtensible is a call of
    // its own, ~10 ns, on every doIo otherwise).
    let max: number;
    if (maxArg === undefined) {
      max = out.length === 0 && Object.isExtensible(out) ? Infinity : out.length;
    } else {
      max = checkCount("max", maxArg);
      if (max > out.length && !Object.isExtensible(out)) {
        throw BlkioError.of(
          "EINVAL",
          `max (${max}) exceeds the length of a fixed-size out array (${out.length})`,
        );
      }
    }
    if (min > max) {
      throw BlkioError.of(
        "EINVAL",
        maxArg === undefined
          ? `min (${min}) must not exceed max (${max}), which defaults to out.length: pass a longer out ` +
            "array, an empty growable one, or max"
          : `min (${min}) must not exceed max (${max})`,
      );
    }
    const timeout = checkTimeout(timeoutArg);
    if (intr && this.#isPoll) {
      throw BlkioError.of("ENOTSUP", "doIoInterruptible is not supported on poll queues");
    }
    const deadline = timeout >= 0 ? performance.now() + timeout / 1e6 : -1;

    const completions = this.#completions, backlog = this.#backlog;
    // Completions go into `out` through completions.deliver, which parks one it cannot write
    // (a frozen entry, say, or one that is the same object as an earlier entry) and flags it;
    // checked after every fill and reap below.
    let n = completions.fill(out, 0, max);
    if (n < max && completions.badOut < 0) {
      const m = dq.reap(out, n, max);
      // Not only after a completion: a reap that released only a cancellation's slot (its CQE is
      // never reported) makes room too, and with SQPOLL the kernel thread frees SQ space by itself.
      // A caller polling with doIo(min 0) would otherwise leave the backlog waiting for a
      // completion that nothing in flight will bring.
      if (m > n || backlog.length > 0) {
        n = m;
        if (backlog.length > 0) backlog.process(dq);
        // The driver may have rejected backlogged requests at once (e.g. NO_FALLBACK): with
        // nothing else in flight, the wait below would otherwise find nothing to wait for.
        if (n < max && completions.length > 0) n = completions.fill(out, n, max);
      }
    }
    if (completions.badOut >= 0) throw this.#badOutError(out, n);
    if (min > n + dq.inFlight + backlog.length + completions.length) {
      completions.unfill(out, n);
      throw BlkioError.of("EINVAL", "min_completions is larger than total outstanding requests");
    }

    let enterOnce = this.#isPoll && n === 0 && min === 0 && dq.pendingSubmit === 0;
    while (n < min || dq.pendingSubmit > 0 || enterOnce) {
      enterOnce = false;
      const want = n < min ? Math.min(min - n, dq.inFlight) : 0;
      if (n < min && want === 0 && dq.pendingSubmit === 0 && backlog.length === 0) {
        // Nothing left that could complete: waiting would never end.
        completions.unfill(out, n);
        throw BlkioError.of("EINVAL", "min_completions is larger than total outstanding requests");
      }
      let remaining = -1;
      if (deadline >= 0) remaining = Math.max(0, Math.floor((deadline - performance.now()) * 1e6));
      const r = dq.enter(want, remaining, intr);
      // Reap before looking at the result, so a failed wait never strands a completion.
      const m = dq.reap(out, n, max);
      if (m > n || r >= 0) {
        n = m;
        if (backlog.length > 0) backlog.process(dq);
        if (n < max && completions.length > 0) n = completions.fill(out, n, max);
      }
      if (completions.badOut >= 0) throw this.#badOutError(out, n);
      if (n >= min && dq.pendingSubmit === 0) break;
      if (r < 0 && !(r === -EINTR && !intr) && !(r === -ETIME && n >= min)) {
        completions.unfill(out, n);
        // A wait cut short by its timeout may come back as -EINTR (DriverQueue.enter).
        if (r === -EINTR && deadline >= 0 && performance.now() >= deadline) throw this.#enterError(ETIME);
        throw this.#enterError(-r);
      }
      if (deadline >= 0 && n < min && performance.now() >= deadline) {
        completions.unfill(out, n);
        throw this.#enterError(ETIME);
      }
    }
    // The entries it collected checking `out` are the caller's (after an error, the next call's
    // first fill drops them).
    completions.forgetOut();
    return n;
  }

  /** EINVAL for the `out` entry a completion could not be written to; out[0..n) go back too. */
  #badOutError(out: Completion[], n: number): BlkioError {
    const completions = this.#completions;
    const { index, value, aliasOf } = completions.takeBadOut();
    completions.unfill(out, n);
    if (aliasOf >= 0) {
      return BlkioError.of(
        "EINVAL",
        `out[${index}] is the same Completion object as out[${aliasOf}]: each entry must be its own ` +
          "(one completion would overwrite the other)",
      );
    }
    return BlkioError.of(
      "EINVAL",
      `out[${index}] must be a writable Completion object: received ${describe(value)}`,
    );
  }

  #enterError(errno: number): BlkioError {
    if (errno === ETIME) return BlkioError.of("ETIME", "Timed out waiting for completions");
    if (errno === EINTR) {
      return BlkioError.of("EINTR", "Interrupted by a signal while waiting for completions");
    }
    return errnoError(errno, "Submitting or waiting for requests failed");
  }

  /**
   * Cancels the request submitted with `userData` (compared with `===`, so NaN matches none and
   * -0 matches 0; the oldest when several share it). It still completes exactly once, with the
   * userData it was given: a request waiting in the queue's backlog is dropped and completes
   * with `-ECANCELED`; one already in the ring is cancelled in the kernel by the next
   * {@link doIo} (io_uring: IORING_OP_ASYNC_CANCEL) and completes with `-ECANCELED`, or normally
   * when it finished first or cannot be interrupted (most block device I/O). Its buffers stay
   * referenced until that completion.
   *
   * @param userData The `userData` the request was submitted with.
   * @returns Whether a request was found: false when no request of this queue that has not
   * completed yet carries `userData`.
   * @throws {BlkioError} `EBADF` once the queue is removed or the instance destroyed.
   *
   * @example Cancel a request before it reaches the kernel
   * ```ts
   * import { Blkio, type Completion } from "@blkio/blkio";
   * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
   * const path = join(dir, "disk.img");
   * writeFileSync(path, new Uint8Array(8192));
   * using b = Blkio.create("io_uring");
   * b.setStr("path", path);
   * b.connect();
   * b.setInt("num-entries", 1);
   * b.start();
   * const q = b.getQueue(0)!;
   * q.read(0, new Uint8Array(4096), "first");
   * q.read(4096, new Uint8Array(4096), "second"); // the ring is full: it waits in the backlog
   * if (!q.cancel("second")) throw new Error("not found");
   * const out: Completion[] = [];
   * q.doIo(out, 2, 2);
   * const second = out.find((c) => c.userData === "second")!;
   * if (second.ret !== -125) throw new Error("expected -ECANCELED");
   * rmSync(dir, { recursive: true });
   * ```
   */
  cancel(userData: unknown): boolean {
    const dq = this.#live();
    // Requests in the driver are older than any in the backlog (it only fills while that is empty).
    if (dq.cancel(userData)) return true;
    const own = this.#backlog.take(userData);
    if (own !== NOT_WAITING) {
      this.#completions.push(own, -ECANCELED, "request cancelled before submission");
      return true;
    }
    return false;
  }

  /** Whether a request in flight or waiting uses memory of `buffer`. */
  #usesBuffer(buffer: ArrayBufferLike): boolean {
    // Requests waiting in the backlog count too: the ring gets their addresses later.
    return this.#dq !== null && (this.#backlog.usesBuffer(buffer) || this.#dq.usesBuffer(buffer));
  }

  /** When the queue is removed or the instance destroyed: later calls throw EBADF with `reason`. */
  #close(reason: string): void {
    const dq = this.#dq;
    if (dq === null) return;
    this.#dq = null;
    this.#gone = reason;
    dq.destroy();
  }
}
