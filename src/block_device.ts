/**
 * The Promise API: a block device whose requests return promises, driven by the event loop.
 *
 * Requests made in one event-loop turn are queued on the device's queues and handed to the
 * kernel in one batch from a microtask, or as soon as 16 have queued on a queue (a large burst
 * goes in parts, which keeps the device busier). The next macrotask after a submission takes
 * the completions already there (page-cached reads complete inside the submitting call); then,
 * while requests are in flight, one wait per queue runs on the queue's completion eventfd,
 * watched by the event loop (see `CompletionWaiter`); each wakeup reaps every completion that
 * is ready. Completions are never taken in a microtask, so timers and I/O keep their turns.
 * Nothing here waits on the event loop; the one system call that could take long is the
 * submission, where a file system blocks inside the kernel's non-blocking attempt (FUSE does,
 * while the connection is busy: a BlockDevice's requests skip that attempt, TargetInfo.submitAsync).
 *
 * @module
 */
import type { Native } from "../ffi/types.ts";
import { Blkio, capacityMayWait } from "./blkio.ts";
import { type Completion, ReqFlags } from "./completion.ts";
import { BEYOND_2_53_MSG, BUFFER_REMEDIES, splitSegments, toOffset, viewRange } from "./buffers.ts";
import { BufferReleases } from "./buffer_releases.ts";
import { CompletionWaiter } from "./completion_waiter.ts";
import { ERRNO, errnoName } from "./errno.ts";
import { abortReason, BlkioError, listenAbort, noConstructor, propertyOf, unlistenAbort } from "./errors.ts";
import type { MemoryRegion } from "./memory_region.ts";
import { requireNative } from "./native.ts";
import { checkBool, describe } from "./properties.ts";
import { type Queue, submitFromEventLoop } from "./queue.ts";
import { enterMayPass, errnoError, pageSize, signalEventfd } from "./sys.ts";

/**
 * Options of {@link BlockDevice.open}.
 *
 * @example Open read-only, with two queues of 64 entries
 * ```ts
 * import { BlockDevice, type BlockDeviceOpenOptions } from "@blkio/blkio";
 * const opts: BlockDeviceOpenOptions = { readOnly: true, queues: 2, numEntries: 64 };
 * await using dev = await BlockDevice.open("/proc/self/exe", opts); // the runtime's own binary
 * const buf = dev.allocBuffer(4096);
 * await dev.read(0, buf);
 * if (!dev.readOnly || buf[1] !== 0x45) throw new Error("unexpected"); // an ELF file: 0x7f "ELF"
 * ```
 */
export interface BlockDeviceOpenOptions {
  /** The libblkio driver (default `"io_uring"`). */
  driver?: string;
  /**
   * Open with O_DIRECT, bypassing the page cache (default false). Only io_uring opens the
   * target itself: on virtio-blk-vhost-user the back-end decides its caching, so `true` there is
   * `EINVAL` and `false` changes nothing.
   */
  direct?: boolean;
  /** Open read-only; writes then reject with `EBADF` (default false). */
  readOnly?: boolean;
  /** How many queues (rings) to spread requests over (default 1). */
  queues?: number;
  /**
   * Entries per queue: io_uring's `num-entries` (default 128, at most 32768),
   * virtio-blk-vhost-user's `queue-size` (a power of two; default 256).
   */
  numEntries?: number;
}

/**
 * Options every request method takes.
 *
 * @example One deadline for several requests, and a signal aborted before the request
 * ```ts
 * import { BlockDevice, type RequestOptions } from "@blkio/blkio";
 * await using dev = await BlockDevice.open("/proc/self/exe", { readOnly: true });
 * const a = dev.allocBuffer(512), b = dev.allocBuffer(512);
 * const opts: RequestOptions = { signal: AbortSignal.timeout(10_000) };
 * await Promise.all([dev.read(0, a, opts), dev.read(512, b, opts)]);
 * const ac = new AbortController();
 * ac.abort();
 * const e = await dev.read(0, a, { signal: ac.signal }).then(() => null, (e) => e);
 * if (e?.name !== "AbortError") throw new Error("expected an AbortError");
 * ```
 */
export interface RequestOptions {
  /**
   * Aborting it rejects the request with the signal's reason when that is an Error, else with an
   * `AbortError` (the default reason is one), and cancels it where possible.
   */
  signal?: AbortSignal;
}

/**
 * Options of {@link BlockDevice.write} and {@link BlockDevice.writev}.
 *
 * @example Writes that are on stable storage when they resolve
 * ```ts
 * import { BlockDevice, type WriteOptions } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(65536));
 * await using dev = await BlockDevice.open(path);
 * const durable: WriteOptions = { fua: true };
 * const buf = dev.allocBuffer(4096).fill(1);
 * await dev.write(0, buf, durable);
 * await dev.writev(4096, [buf.subarray(0, 1024), buf.subarray(1024)], durable);
 * rmSync(dir, { recursive: true });
 * ```
 */
export interface WriteOptions extends RequestOptions {
  /** Force Unit Access: the data is on stable storage when the promise resolves. */
  fua?: boolean;
}

/**
 * Options of {@link BlockDevice.writeZeroes}.
 *
 * @example Zero a block without the kernel writing zero buffers
 * ```ts
 * import { BlockDevice, type WriteZeroesOptions } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(65536));
 * await using dev = await BlockDevice.open(path);
 * await dev.write(0, dev.allocBuffer(8192).fill(7));
 * const opts: WriteZeroesOptions = { noFallback: true }; // a regular file: a hole is punched
 * await dev.writeZeroes(0, 4096, opts);
 * const back = dev.allocBuffer(8192);
 * await dev.read(0, back);
 * if (back[0] !== 0 || back[4096] !== 7) throw new Error("unexpected");
 * rmSync(dir, { recursive: true });
 * ```
 */
export interface WriteZeroesOptions extends RequestOptions {
  /**
   * Keep the range allocated (no unmapping/hole punching). On a regular file that takes
   * `fallocate` ZERO_RANGE, which some file systems lack (tmpfs): `ENOTSUP` there, as in libblkio.
   */
  noUnmap?: boolean;
  /**
   * On a block device without zeroing of its own, fail with `ENOTSUP` rather than let the
   * kernel write zero buffers.
   */
  noFallback?: boolean;
  /** Force Unit Access. */
  fua?: boolean;
}

/** The proof that BlockDevice.open makes the device, not `new BlockDevice()` from JavaScript. */
const MADE_BY_OPEN = Symbol("BlockDevice");
const OP_READ = 0;
const OP_WRITE = 1;
const OP_READV = 2;
const OP_WRITEV = 3;
const OP_WRITE_ZEROES = 4;
const OP_DISCARD = 5;
const OP_FLUSH = 6;
const OP_NAMES = ["Read", "Write", "Readv", "Writev", "Write zeroes", "Discard", "Flush"];

/** The options {@link BlockDevice.open} knows: any other key is a mistake (`readonly`). */
const OPEN_OPTIONS: ReadonlySet<string> = new Set(["driver", "direct", "readOnly", "queues", "numEntries"]);
/** The options of each kind of request: `{ Fua: true }` must not be a plain write. */
const REQUEST_OPTIONS: ReadonlySet<string> = new Set(["signal"]);
const WRITE_OPTIONS: ReadonlySet<string> = new Set(["signal", "fua"]);
const WRITE_ZEROES_OPTIONS: ReadonlySet<string> = new Set(["signal", "fua", "noUnmap", "noFallback"]);

type FlagOption = "fua" | "noUnmap" | "noFallback";
const NO_FLAGS: readonly (readonly [FlagOption, number])[] = [];
const WRITE_FLAGS: readonly (readonly [FlagOption, number])[] = [["fua", ReqFlags.FUA]];
const WRITE_ZEROES_FLAGS: readonly (readonly [FlagOption, number])[] = [
  ["fua", ReqFlags.FUA],
  ["noUnmap", ReqFlags.NO_UNMAP],
  ["noFallback", ReqFlags.NO_FALLBACK],
];

/**
 * The flag options of every kind of request. One that a request does not take is still accepted
 * there when false or undefined: it asks for no flag, as libblkio's flags with that bit clear,
 * so one `WriteOptions` object can serve a read (TypeScript allows the call). Set, it is EINVAL,
 * as libblkio's "BLKIO_REQ_FUA is invalid for this request type".
 */
const FLAG_OPTIONS: ReadonlySet<string> = new Set(["fua", "noUnmap", "noFallback"]);
const NO_KEYS: ReadonlySet<string> = new Set();

/**
 * The EINVAL for options that are not an object (undefined and null stand for none), or that
 * have a key not in `known`, bar one of `unsetOk` that is false or undefined: a misspelt option
 * must not be dropped silently. `what` names the call in the message. A for-in loop, so that a
 * request with options allocates nothing for the check.
 */
function badOptions(
  opts: unknown,
  known: ReadonlySet<string>,
  unsetOk: ReadonlySet<string>,
  what: string,
): BlkioError | null {
  if (opts === undefined || opts === null) return null;
  if (typeof opts !== "object" || Array.isArray(opts)) {
    return BlkioError.of("EINVAL", `Options must be an object: received ${describe(opts)}`);
  }
  try {
    for (const key in opts) {
      if (known.has(key)) continue;
      if (unsetOk.has(key)) {
        const v = (opts as Record<string, unknown>)[key];
        if (v === undefined || v === false) continue;
        return BlkioError.of(
          "EINVAL",
          `Option ${key} is invalid for ${what} (received ${describe(v)}; its options are ${
            [...known].join(", ")
          })`,
        );
      }
      return BlkioError.of(
        "EINVAL",
        `Unknown option ${JSON.stringify(key)} (the options are ${[...known].join(", ")})`,
      );
    }
  } catch (e) {
    return e instanceof BlkioError
      ? e
      : BlkioError.of("EINVAL", `Options could not be read: ${e}`, { cause: e });
  }
  return null;
}

/**
 * The request flags of boolean options `names` in `opts` (whose keys must be in `known`), or the
 * EINVAL for a bad one (`{ fua: "no" }` must not be a FUA write, nor `{ Fua: true }` a plain one).
 */
function flagsOf(
  options: unknown,
  known: ReadonlySet<string>,
  names: readonly (readonly [FlagOption, number])[],
  what: string,
): number | BlkioError {
  if (options === undefined || options === null) return 0;
  const bad = badOptions(options, known, FLAG_OPTIONS, what);
  if (bad !== null) return bad;
  const opts = options as Partial<Record<FlagOption, unknown>>;
  let flags = 0;
  for (const [name, bit] of names) {
    let v: unknown;
    try {
      v = opts[name]; // a getter may throw: the request rejects, as for every other bad option
    } catch (e) {
      return e instanceof BlkioError
        ? e
        : BlkioError.of("EINVAL", `Option ${name} could not be read: ${e}`, { cause: e });
    }
    if (v === true) flags |= bit;
    else if (v !== undefined && v !== false) {
      return BlkioError.of("EINVAL", `Option ${name} must be a boolean: received ${describe(v)}`);
    }
  }
  return flags;
}

/** Completions taken per doIo call while draining. */
const BATCH = 1024;
/** Full batches one drain takes before it leaves the rest to the next event-loop turn. */
const DRAIN_BATCHES = 4;
/**
 * Requests queued in one turn after which they go to the kernel at once instead of at the end
 * of the turn. Requests submitted together complete together, and a device with a worker of its
 * own (a loop device, say) then idles between such convoys; handing over the first part of a
 * burst early breaks them (BENCHMARKS.md: submission convoys).
 */
const EARLY_SUBMIT = 16;
/**
 * How long close() waits for requests that were aborted (their promises already rejected) but
 * that the device still has, once no other request is left: a vhost-user back-end that stopped
 * may keep them for ever. Past it the device is destroyed, which waits up to a second more and
 * then keeps their buffers referenced for good, as `Blkio.destroy()` does.
 */
const ABORTED_DRAIN_MS = 1000;
/**
 * Buffers are carved from memory regions of this size. On a device that needs its buffers in
 * memory regions each new region is twice the last, up to POOL_MAX: such a device may take few
 * (a vhost-user back-end: 31 with qemu-storage-daemon), and a region per large buffer ran out at
 * the 32nd buffer of 1 MiB; untouched pages of a region cost no memory there. Elsewhere regions
 * stay small: io_uring registers them as fixed buffers, which pins every page.
 */
const POOL_MIN = 1 << 20;
const POOL_MAX = 64 << 20;

// The promise executor is a module-level function, so creating a request's promise allocates
// no closure: it parks the resolving functions here and #submit picks them up at once.
let parkedResolve: (value: void) => void = noop;
let parkedReject: (reason: unknown) => void = noop;
function park(resolve: (value: void) => void, reject: (reason: unknown) => void): void {
  parkedResolve = resolve;
  parkedReject = reject;
}
function noop(): void {}

/** Per-queue state of a device. */
class QueueState {
  readonly queue: Queue;
  readonly index: number;
  readonly fd: number;
  /** Requests given to this queue whose completion has not been seen yet. */
  pending = 0;
  /** Requests were queued since the last submission. */
  dirty = false;
  /** How many, up to {@link EARLY_SUBMIT}. */
  unsubmitted = 0;
  /** Waits on the completion eventfd; made at the first wait. */
  waiter: CompletionWaiter | null = null;
  /** A wait on the completion eventfd is pending. */
  waiting = false;
  /** Settles after the pending wait's handler ran. */
  wait: Promise<void> = Promise.resolve();
  onWake: () => void = noop;
  /** A look for completions is scheduled (setImmediate) after a submission. */
  peekScheduled = false;
  onPeek: () => void = noop;
  onWakeError: (e: unknown) => void = noop;
  retryTimer: ReturnType<typeof setTimeout> | null = null;
  /** Why the queue can no longer submit or reap (BlockDevice.#doIoFailed), or null. */
  failure: BlkioError | null = null;

  constructor(queue: Queue, index: number) {
    this.queue = queue;
    this.index = index;
    this.fd = queue.completionFd;
  }
}

function closedError(): BlkioError {
  return BlkioError.of("EBADF", "The block device is closed");
}

/** The `signal` option of `opts` (null if none), or the BlkioError to reject with. */
function signalOption(opts: RequestOptions): AbortSignal | null | BlkioError {
  let sig: unknown;
  try {
    sig = opts.signal;
  } catch (e) {
    return e instanceof BlkioError
      ? e
      : BlkioError.of("EINVAL", `Option signal could not be read: ${e}`, { cause: e });
  }
  if (sig === undefined || sig === null) return null;
  if (!(sig instanceof AbortSignal)) {
    return BlkioError.of("EINVAL", `signal must be an AbortSignal: received ${describe(sig)}`);
  }
  try {
    // A Proxy passes instanceof, and on Bun its `aborted` throws: the request rejects instead.
    void sig.aborted;
  } catch (e) {
    return BlkioError.of("EINVAL", `signal must be an AbortSignal: ${e}`, { cause: e });
  }
  return sig;
}

/**
 * The `direct` option: the `direct` property where the driver has one (io_uring). A driver that
 * opens nothing itself (virtio-blk-vhost-user: the back-end has the image) takes `false` as the
 * default it is, and refuses `true` rather than drop it: the caller asked to bypass a cache.
 */
function setDirect(b: Blkio, value: unknown): void {
  const direct = checkBool("direct", value);
  if (b.properties().some((p) => p.name === "direct")) return b.setBool("direct", direct);
  if (direct) {
    throw BlkioError.of(
      "EINVAL",
      `The ${b.driver} driver has no "direct" option: the back-end decides how it caches the image`,
    );
  }
}

function checkCount(name: string, value: unknown, min: number): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > 0x7fffffff) {
    throw BlkioError.of(
      "EINVAL",
      `${name} must be an integer from ${min} to 2147483647: received ${describe(value)}`,
    );
  }
  return value;
}

/**
 * A driver's refusal of the property behind an open option (`num-entries` for `numEntries`),
 * named after the option: a power of two, at most 32768, whatever that driver's limit is.
 */
function asOptionError(e: unknown, option: string): unknown {
  return e instanceof BlkioError ? new BlkioError(e.errno, `${option}: ${e.message}`, { cause: e }) : e;
}

function requestError(op: number, offset: unknown, errno: number, msg: string | null): BlkioError {
  const what = op === OP_FLUSH ? "Flush" : `${OP_NAMES[op]} at offset ${offset}`;
  if (msg === null) return errnoError(errno, `${what} failed`);
  // A refusal of the request's memory ends with the Queue API's remedy (memory regions); here
  // the remedy has a name of its own.
  let hint = "";
  for (const remedy of REMEDIES) {
    if (!msg.endsWith(remedy)) continue;
    msg = msg.slice(0, -remedy.length);
    hint = "; allocBuffer() returns buffers this device accepts";
    break;
  }
  return new BlkioError(errno, `${what} failed: ${errnoName(errno)} (${msg})${hint}`);
}

const REMEDIES: readonly string[] = Object.values(BUFFER_REMEDIES);

/** Why a request that writes failed with EBADF on a device opened with `readOnly: true`. */
const READ_ONLY_REASON = "the device was opened with readOnly: true, so it takes only reads and flushes";
const EBADF = ERRNO.EBADF;

/**
 * A block device (or file) opened for event-driven I/O: every request returns a promise, and
 * no wait for a completion blocks the event loop. Requests made in the same event-loop turn
 * reach the kernel in one batch; thousands may be in flight (beyond the ring size they wait in
 * the queue's backlog, never rejected). A failed request rejects with {@link BlkioError} carrying the errno.
 *
 * Options are checked like arguments: an unknown key (`{ Fua: true }`), a flag set where the
 * request cannot honour it (`fua: true` on a read) or a value of the wrong type rejects with
 * `EINVAL` instead of being dropped. A flag left `false` or `undefined` asks for nothing, so one
 * options object can serve every request.
 *
 * Every request method takes an optional `signal`: aborting rejects the request at once with an
 * `AbortError` (the signal's reason when it is an Error). A request still waiting for room in
 * the ring is dropped; one in the kernel gets IORING_OP_ASYNC_CANCEL, and its buffer stays
 * referenced until the kernel has really finished with it (block device I/O usually runs to
 * its end; the result is then discarded). So after the `AbortError` the device may still use
 * the buffer: an aborted read may still fill it, and an aborted write may still land, with
 * whatever the buffer holds by then (a vhost-user back-end cannot take a request back at all).
 * {@link released} says when that has ended: reuse the buffer only once it resolved.
 *
 * Thread-safety: a BlockDevice, like the {@link Blkio} instance and queues behind it, belongs
 * to the thread (main thread or Worker) that opened it; it cannot be sent to another. To use
 * several threads, open the same path in each Worker: each gets its own instance, file
 * descriptor and io_uring queues, like libblkio's `blkio-bench --num-threads` with one queue
 * per thread, and the Workers' requests run in parallel. Buffers from {@link allocBuffer} belong
 * to their device's thread too; never transfer or resize an ArrayBuffer with I/O in flight
 * (SharedArrayBuffer memory is refused as an I/O buffer). Ordering between Workers is up to the
 * caller: data written by one instance is visible to reads from another once the write's promise
 * has resolved (use `fua` or {@link flush} when it must also survive a power loss).
 *
 * @example Write a block and read it back
 * ```ts
 * import { BlockDevice } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(1 << 20));
 * await using dev = await BlockDevice.open(path, { direct: true });
 * const buf = dev.allocBuffer(4096);
 * buf.fill(0xab);
 * await dev.write(8192, buf);
 * const back = dev.allocBuffer(4096);
 * await dev.read(8192, back);
 * if (back[4095] !== 0xab) throw new Error("mismatch");
 * rmSync(dir, { recursive: true });
 * ```
 *
 * @example Many requests at once, one of them aborted
 * ```ts
 * import { BlockDevice } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(1 << 20));
 * await using dev = await BlockDevice.open(path);
 * const bufs = Array.from({ length: 256 }, () => dev.allocBuffer(4096));
 * await Promise.all(bufs.map((b, i) => dev.read(i * 4096, b)));
 * const ac = new AbortController();
 * const p = dev.read(0, bufs[0], { signal: ac.signal });
 * ac.abort();
 * await p.then(() => {}, (e) => { if (e.name !== "AbortError") throw e; });
 * rmSync(dir, { recursive: true });
 * ```
 */
export class BlockDevice {
  readonly #native: Native;
  readonly #b: Blkio;
  readonly #qs: QueueState[];
  readonly #requestAlignment: number;
  readonly #bufAlignment: number;
  /** The driver's max-segment-len (0: none) and max-segments: longer buffers are cut up. */
  readonly #maxSegmentLen: number;
  readonly #maxSegments: number;
  readonly #pageSize: number;
  readonly #regionAlignment: number;
  readonly #readOnly: boolean;
  #capacity: bigint;
  /**
   * Whether capacity is read anew at each get: where that is a local system call (io_uring:
   * lseek, so it follows a growing file). Not where the driver says it may wait
   * (Driver.capacityMayWait): virtio-blk-vhost-user asks the back-end (GET_CONFIG), which a
   * stopped back-end made a 10 s wait on the event loop, after which the instance's control
   * channel is closed for good; lseek on FUSE asks the daemon. There the size read at open
   * stands.
   */
  readonly #liveCapacity: boolean;

  // Requests by id (the userData given to the queue), struct-of-arrays; ids are reused.
  #resolve: (((value: void) => void) | null)[] = [];
  #reject: (((reason: unknown) => void) | null)[] = [];
  #queueOf: number[] = [];
  #opOf: number[] = [];
  #offsetOf: unknown[] = [];
  #signalOf: (AbortSignal | null)[] = [];
  /**
   * One abort listener per signal, with the ids of the requests it watches: a signal shared by
   * many requests (one "cancel everything" controller) would otherwise get a listener each, and
   * adding and removing each scans the signal's list (100,000 took 12 s on Deno).
   */
  readonly #watches = new Map<AbortSignal, { listener: () => void; ids: Set<number> }>();
  readonly #freeIds: number[] = [];
  #outstanding = 0;
  #rr = 0;
  /** Queues that failed for good (QueueState.failure): requests go to the others. */
  #failedQueues = 0;

  readonly #out: Completion[] = [];
  #flushQueued = false;
  readonly #flushNow = () => this.#flush();

  #closing = false;
  /** The instance is destroyed: late timers and immediates must not touch its queues. */
  #dead = false;
  #closed: Promise<void> | null = null;
  /**
   * close() stopped waiting for requests: no wait is armed again (aborted requests a back-end
   * still has would re-arm the one it wakes up), as a waiter is closed only with none pending.
   */
  #waitsDone = false;
  /** Requests in flight whose promise an abort already rejected. */
  #aborted = 0;
  /** close()'s wake-up, called whenever a request completes or is aborted. */
  #idle: (() => void) | null = null;
  /** Each read's and write's buffers while it is in flight, and the callers of {@link released}. */
  readonly #releases = new BufferReleases();

  #pool: MemoryRegion | null = null;
  #poolUsed = 0;
  /** Size of the next pool region. */
  #poolNext = POOL_MIN;
  /** Whether pool regions grow (needs-mem-regions). */
  readonly #poolGrows: boolean;

  /**
   * For drivers that find some failures only when entered (a vhost-user back-end that died
   * signals no eventfd): how often to look while requests are outstanding, or 0.
   */
  readonly #failureCheckMs: number;
  /** The timer that looks; runs while requests are outstanding, stops at its first idle tick. */
  #failureCheck: ReturnType<typeof setInterval> | null = null;
  readonly #onFailureCheck = (): void => {
    if (this.#outstanding === 0 || this.#dead) {
      clearInterval(this.#failureCheck!);
      this.#failureCheck = null;
      return;
    }
    for (const s of this.#qs) if (s.pending > 0) this.#drain(s);
  };

  private constructor(key: symbol, native: Native, b: Blkio) {
    if (key !== MADE_BY_OPEN) throw noConstructor("BlockDevice", "BlockDevice.open(path, options)");
    this.#native = native;
    this.#b = b;
    this.#requestAlignment = b.getInt("request-alignment");
    this.#bufAlignment = b.getInt("buf-alignment");
    this.#maxSegmentLen = b.getInt("max-segment-len");
    this.#maxSegments = b.getInt("max-segments");
    // The memory page, or the driver's optimal alignment if coarser: virtio-blk-vhost-user's is
    // 1, and a buffer of a page or more was then only bufAlignment-aligned (BlockDevice fuzzer).
    this.#pageSize = Math.max(pageSize(native), b.getInt("optimal-buf-alignment"));
    this.#poolGrows = b.getBool("needs-mem-regions");
    this.#regionAlignment = Number(b.getUint64("mem-region-alignment"));
    this.#readOnly = b.getBool("read-only");
    this.#capacity = b.getUint64("capacity");
    this.#liveCapacity = !capacityMayWait(b);
    const qs: QueueState[] = [];
    for (let i = 0; b.getQueue(i) !== null; i++) {
      const q = b.getQueue(i)!;
      submitFromEventLoop(q); // a submission must not hold the event loop up (FUSE)
      const s = new QueueState(q, i);
      s.onWake = () => this.#wake(s);
      s.onPeek = () => {
        s.peekScheduled = false;
        this.#drain(s);
        this.#arm(s);
      };
      s.onWakeError = () => {
        // The wait itself failed: look anyway after a pause, from a timer, and wait again then
        // (never in a spin). Not at once: a wait that cannot be made (the fd table full: Deno's
        // relay, Bun's eventfd reader) rejects in the turn it was asked in, and looking here
        // took completions between the caller's microtasks (a request made in a continuation
        // and aborted from a microtask queued right after the call settled with its result).
        s.waiting = false;
        if (s.pending > 0) this.#retryLater(s);
      };
      qs.push(s);
    }
    this.#qs = qs;
    let checkMs = 0;
    for (const s of qs) {
      const ms = s.queue.failureCheckMs;
      if (ms > 0 && (checkMs === 0 || ms < checkMs)) checkMs = ms;
    }
    this.#failureCheckMs = checkMs;
  }

  /**
   * Opens `path` (a block device or a regular file) with a started instance of `driver`.
   * Rejects with BlkioError when it cannot (`ENOENT` for a missing path or an unknown driver,
   * `EINVAL` for bad options).
   *
   * Opening (and closing) makes its system calls synchronously: quick for a few queues, but
   * each queue is a ring to set up, so `queues` in the thousands blocks the event loop for
   * seconds.
   *
   * @param path A block device or regular file (io_uring), or the Unix socket of a vhost-user
   * export (`driver: "virtio-blk-vhost-user"`).
   * @param opts `driver` (default `"io_uring"`); `direct` to bypass the page cache (O_DIRECT:
   * offsets, lengths and buffers must then be aligned); `readOnly` to open for reading only;
   * `queues` (default 1, each a ring of its own); `numEntries`, each queue's ring size (io_uring:
   * from 1 to 32768, default 128; virtio-blk: a power of two, default 256).
   * @returns A promise of the open device; it rejects with BlkioError (it never throws): `ENOENT`
   * for a missing path or an unknown driver, `EINVAL` for bad options (an unknown key such as
   * `readonly` too) or a path that is neither a block device nor a regular file, `EACCES` or
   * `EROFS` for a target that cannot be opened for writing (the message says to set `readOnly`
   * where reading would work).
   *
   * @example Open read-only
   * ```ts
   * import { BlockDevice } from "@blkio/blkio";
   * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
   * const path = join(dir, "disk.img");
   * writeFileSync(path, new Uint8Array(65536));
   * const dev = await BlockDevice.open(path, { readOnly: true });
   * if (dev.capacity !== 65536n || !dev.readOnly) throw new Error("unexpected");
   * await dev.close();
   * rmSync(dir, { recursive: true });
   * ```
   */
  static open(path: string, opts: BlockDeviceOpenOptions = {}): Promise<BlockDevice> {
    try {
      return Promise.resolve(BlockDevice.#open(path, opts));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  static #open(path: string, opts: BlockDeviceOpenOptions): BlockDevice {
    // A misspelt option must not be dropped silently: `readonly` would open read-write.
    if (opts === null) throw BlkioError.of("EINVAL", "Options must be an object: received null");
    const bad = badOptions(opts, OPEN_OPTIONS, NO_KEYS, "open");
    if (bad !== null) throw bad;
    // The drivers' own message for an empty path names their `fd` property, which open has not.
    if (path === "") throw BlkioError.of("EINVAL", "path must not be empty");
    try {
      // Read once, here: a getter that throws is bad input, and one that changes its answer
      // must not be checked once and used twice.
      opts = {
        driver: opts.driver,
        direct: opts.direct,
        readOnly: opts.readOnly,
        queues: opts.queues,
        numEntries: opts.numEntries,
      };
    } catch (e) {
      throw e instanceof BlkioError
        ? e
        : BlkioError.of("EINVAL", `Options could not be read: ${e}`, { cause: e });
    }
    const queues = opts.queues === undefined ? 1 : checkCount("queues", opts.queues, 1);
    const native = requireNative();
    const b = Blkio.create(opts.driver === undefined ? "io_uring" : opts.driver);
    try {
      b.setStr("path", path);
      if (opts.direct !== undefined) setDirect(b, opts.direct);
      if (opts.readOnly !== undefined) b.setBool("read-only", checkBool("readOnly", opts.readOnly));
      b.connect();
      b.setInt("num-queues", queues);
      if (opts.numEntries !== undefined) {
        // The same thing under each driver's own name (libblkio's): "num-entries" was ENOENT
        // on virtio-blk-vhost-user.
        const name = b.driver === "virtio-blk-vhost-user" ? "queue-size" : "num-entries";
        const entries = checkCount("numEntries", opts.numEntries, 1);
        try {
          b.setInt(name, entries);
        } catch (e) {
          // Setting it can fail only for its value.
          throw asOptionError(e, "numEntries");
        }
      }
      try {
        b.start();
      } catch (e) {
        // io_uring checks num-entries (at most 32768) when it makes the rings.
        throw propertyOf(e) === "num-entries" ? asOptionError(e, "numEntries") : e;
      }
      return new BlockDevice(MADE_BY_OPEN, native, b);
    } catch (e) {
      b.destroy();
      throw e;
    }
  }

  /**
   * Size in bytes, read anew each time (a file grows as it is written), the last known size once
   * closed. Where asking could hold the event loop up, the size read at open: on
   * virtio-blk-vhost-user (a control message to the back-end), and for a file on FUSE or a
   * network file system (the daemon or server answers). A `Blkio` instance's `capacity`
   * property asks each time.
   */
  get capacity(): bigint {
    if (!this.#closing && this.#liveCapacity) this.#capacity = this.#b.getUint64("capacity");
    return this.#capacity;
  }

  /** Offsets and lengths of requests must be multiples of this (1 without `direct`). */
  get requestAlignment(): number {
    return this.#requestAlignment;
  }

  /** Buffer addresses and lengths must be multiples of this (1 without `direct`). */
  get bufAlignment(): number {
    return this.#bufAlignment;
  }

  /** Whether the device was opened read-only. */
  get readOnly(): boolean {
    return this.#readOnly;
  }

  /**
   * A zeroed buffer of `len` bytes for I/O on this device, carved from mapped memory regions
   * (a new region is added whenever the current ones are used up). It is aligned to
   * {@link bufAlignment}, and to the page size when `len` is a page or more. Allocate buffers
   * once and reuse them: their memory is only released by {@link close}, after which they are
   * empty (length 0). Buffers of up to half a MiB share memory regions of 1 MiB, and larger ones
   * get their own (with virtio-blk-vhost-user, whose back-end takes few regions, all share
   * regions, each new one twice the last, up to 64 MiB, or the size of a larger buffer):
   * transferring one (`buffer.transfer()`, a `postMessage` transfer list) detaches the others of
   * its region with it. Memory
   * transferred away is never unmapped (the library cannot see the buffer that now holds it).
   * On virtio-blk-vhost-user a new region is a message to the back-end, which this call waits
   * for (10 s at most, then `EIO` until the device is reopened), and a back-end without memory
   * slots (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS) takes none while requests are in flight
   * (`EBUSY`): allocate buffers up front.
   *
   * @param len The buffer's length in bytes, a positive integer.
   * @returns The zeroed buffer, a view of part of a memory region.
   * @throws {BlkioError} `EINVAL` for a length that is not a positive integer; `ENOMEM` for one
   * too large for memory or a JS ArrayBuffer; `EBADF` once closed; on virtio-blk-vhost-user,
   * `EBUSY` and `EIO` as above.
   *
   * @example
   * ```ts
   * import { BlockDevice } from "@blkio/blkio";
   * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
   * const path = join(dir, "disk.img");
   * writeFileSync(path, new Uint8Array(65536));
   * await using dev = await BlockDevice.open(path, { direct: true });
   * const buf = dev.allocBuffer(8192);
   * if (buf.length !== 8192) throw new Error("wrong length");
   * rmSync(dir, { recursive: true });
   * ```
   */
  allocBuffer(len: number): Uint8Array<ArrayBuffer> {
    if (this.#closing) throw closedError();
    if (typeof len !== "number" || !Number.isSafeInteger(len) || len <= 0) {
      throw BlkioError.of("EINVAL", `Buffer length must be a positive integer: received ${describe(len)}`);
    }
    const align = len >= this.#pageSize
      ? Math.max(this.#pageSize, this.#bufAlignment)
      : Math.max(64, this.#bufAlignment);
    // Where pools do not grow, a large buffer gets a region of its own: taking a new pool for it
    // would leave the rest of the current one unused, and io_uring pins every page of a region.
    if (!this.#poolGrows && len > POOL_MIN / 2) return this.#region(len).bytes.subarray(0, len);
    let off = Math.ceil(this.#poolUsed / align) * align;
    // A pool whose memory was transferred away (one of its buffers' `buffer.transfer()` or a
    // postMessage transfer list detaches them all) has nothing left to carve from.
    if (this.#pool === null || off + len > this.#pool.len || this.#pool.bytes.byteLength === 0) {
      this.#pool = this.#region(Math.max(this.#poolNext, len));
      if (this.#poolGrows) this.#poolNext = Math.min(this.#poolNext * 2, POOL_MAX);
      off = 0;
    }
    this.#poolUsed = off + len;
    return this.#pool.bytes.subarray(off, off + len);
  }

  #region(len: number): MemoryRegion {
    const align = Math.max(this.#regionAlignment, this.#pageSize);
    const size = Math.ceil(len / align) * align;
    // Rounded up past 2^53, the region's length would be a number the caller never gave.
    if (size > Number.MAX_SAFE_INTEGER) throw BlkioError.of("ENOMEM", `Buffer length ${len} is too large`);
    const r = this.#b.allocMemRegion(size);
    try {
      this.#b.mapMemRegion(r);
    } catch (e) {
      // Unmapped, it would stay allocated (an fd and its memory) until close().
      this.#b.freeMemRegion(r);
      throw e;
    }
    return r;
  }

  /**
   * Reads `buf.byteLength` bytes at `offset` into `buf`. On a regular file, what lies past its
   * end reads as zeroes (the promise resolves); on a block device, a read past its capacity
   * rejects (EIO).
   *
   * @param offset The byte offset: a non-negative integer number or bigint below 2^53, a
   * multiple of {@link requestAlignment}.
   * @param buf Where the data goes; its length is the request's, a multiple of
   * {@link requestAlignment}, and its address a multiple of {@link bufAlignment}
   * ({@link allocBuffer} returns such buffers; on virtio-blk-vhost-user only those are usable).
   * It must stay untouched until the promise settles.
   * @param opts `signal`, to abort the request.
   * @returns A promise that resolves once the request completed, and rejects with BlkioError:
   * `EINVAL` for bad arguments or options (an unknown option key too), `EBADF` once closed, the
   * request's errno otherwise (`EIO`); with the signal's reason when `signal` aborts it. It
   * never throws.
   *
   * @example Read with a deadline
   * ```ts
   * import { BlockDevice } from "@blkio/blkio";
   * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
   * const path = join(dir, "disk.img");
   * writeFileSync(path, new Uint8Array(65536).fill(1));
   * await using dev = await BlockDevice.open(path);
   * const buf = dev.allocBuffer(4096);
   * await dev.read(4096, buf, { signal: AbortSignal.timeout(5000) });
   * if (buf[0] !== 1) throw new Error("wrong data");
   * rmSync(dir, { recursive: true });
   * ```
   */
  read(offset: bigint | number, buf: Uint8Array, opts?: RequestOptions): Promise<void> {
    const flags = flagsOf(opts, REQUEST_OPTIONS, NO_FLAGS, "read");
    if (typeof flags !== "number") return Promise.reject(flags);
    return this.#submit(OP_READ, offset, buf, 0, opts);
  }

  /**
   * Writes `buf` at `offset`. On a regular file, a write past its end extends it (and
   * {@link capacity}); on a block device, a write past its capacity rejects (ENOSPC; EIO on
   * virtio-blk-vhost-user, as its back-end says). A write that rejects may have landed in part:
   * each byte then holds its old value or the new one (on a full file system the part that fitted
   * is written before the rest fails ENOSPC), as with `pwrite`.
   *
   * @param offset The byte offset: a non-negative integer number or bigint below 2^53, a
   * multiple of {@link requestAlignment}.
   * @param buf The data; its length is the request's. Aligned as for {@link read}, and untouched
   * until the promise settles.
   * @param opts `fua` (the data is on stable storage when the promise resolves), `signal`.
   * @returns A promise, as for {@link read}; a write also rejects with `EBADF` on a device
   * opened with `readOnly`, and with `ENOSPC` past the end of a block device or on a full file
   * system.
   */
  write(offset: bigint | number, buf: Uint8Array, opts?: WriteOptions): Promise<void> {
    const flags = flagsOf(opts, WRITE_OPTIONS, WRITE_FLAGS, "write");
    if (typeof flags !== "number") return Promise.reject(flags);
    return this.#submit(OP_WRITE, offset, buf, flags, opts);
  }

  /**
   * Reads into the buffers of `iovecs`, in order, starting at `offset`.
   *
   * @param offset The byte offset: a non-negative integer number or bigint below 2^53, a
   * multiple of {@link requestAlignment}.
   * @param iovecs The buffers, each aligned as `buf` of {@link read}; the request's length is
   * the sum of theirs. The array is read at the call.
   * @param opts `signal`, to abort the request.
   * @returns A promise, as for {@link read}.
   */
  readv(offset: bigint | number, iovecs: Uint8Array[], opts?: RequestOptions): Promise<void> {
    const flags = flagsOf(opts, REQUEST_OPTIONS, NO_FLAGS, "readv");
    if (typeof flags !== "number") return Promise.reject(flags);
    return this.#submit(OP_READV, offset, iovecs, 0, opts);
  }

  /**
   * Writes the buffers of `iovecs`, in order, starting at `offset`.
   *
   * @param offset The byte offset: a non-negative integer number or bigint below 2^53, a
   * multiple of {@link requestAlignment}.
   * @param iovecs The buffers, as for {@link readv}.
   * @param opts `fua`, `signal`, as for {@link write}.
   * @returns A promise, as for {@link write}.
   */
  writev(offset: bigint | number, iovecs: Uint8Array[], opts?: WriteOptions): Promise<void> {
    const flags = flagsOf(opts, WRITE_OPTIONS, WRITE_FLAGS, "writev");
    if (typeof flags !== "number") return Promise.reject(flags);
    return this.#submit(OP_WRITEV, offset, iovecs, flags, opts);
  }

  /**
   * Makes `len` bytes at `offset` read as zeroes. One that rejects may have zeroed part of the
   * range (virtio-blk sends a long one in chunks, the last first).
   *
   * @param offset The byte offset: a non-negative integer number or bigint below 2^53, a
   * multiple of {@link requestAlignment}.
   * @param len The number of bytes, a multiple of {@link requestAlignment}.
   * @param opts `noUnmap` (keep the range allocated), `noFallback` (reject with `ENOTSUP`
   * rather than let the kernel write zero buffers), `fua`, `signal`.
   * @returns A promise, as for {@link write}; it also rejects with `ENOTSUP` where the target
   * cannot do what the options ask (`noUnmap` on tmpfs, `noFallback` where the device cannot
   * zero by itself).
   */
  writeZeroes(offset: bigint | number, len: bigint | number, opts?: WriteZeroesOptions): Promise<void> {
    const flags = flagsOf(opts, WRITE_ZEROES_OPTIONS, WRITE_ZEROES_FLAGS, "write zeroes");
    if (typeof flags !== "number") return Promise.reject(flags);
    return this.#submit(OP_WRITE_ZEROES, offset, len, flags, opts);
  }

  /**
   * Discards (unmaps) `len` bytes at `offset`; they may then read as anything. On a regular file
   * (io_uring) it rejects with `ENOTSUP`, as in libblkio: {@link writeZeroes} without `noUnmap`
   * deallocates a file's range instead.
   *
   * @param offset The byte offset: a non-negative integer number or bigint below 2^53, a
   * multiple of {@link requestAlignment}.
   * @param len The number of bytes, a multiple of {@link requestAlignment}.
   * @param opts `signal`, to abort the request.
   * @returns A promise, as for {@link write}; it also rejects with `ENOTSUP` where the target
   * cannot discard (a regular file).
   */
  discard(offset: bigint | number, len: bigint | number, opts?: RequestOptions): Promise<void> {
    const flags = flagsOf(opts, REQUEST_OPTIONS, NO_FLAGS, "discard");
    if (typeof flags !== "number") return Promise.reject(flags);
    return this.#submit(OP_DISCARD, offset, len, 0, opts);
  }

  /**
   * Makes the writes that completed before it durable (on stable storage).
   *
   * @param opts `signal`, to abort the request.
   * @returns A promise, as for {@link read}.
   */
  flush(opts?: RequestOptions): Promise<void> {
    const flags = flagsOf(opts, REQUEST_OPTIONS, NO_FLAGS, "flush");
    if (typeof flags !== "number") return Promise.reject(flags);
    return this.#submit(OP_FLUSH, 0, null, 0, opts);
  }

  #submit(
    op: number,
    offset: bigint | number,
    arg: unknown,
    flags: number,
    opts: RequestOptions | undefined,
  ): Promise<void> {
    // Everything that can run the caller's code (option getters, an iovecs Proxy) runs before
    // the closed check: a getter that calls close() must not get a request past it, into a
    // queue close() is about to destroy (it would never settle).
    let signal: AbortSignal | null = null;
    if (opts !== undefined && opts !== null) {
      const sig = signalOption(opts);
      if (sig instanceof BlkioError) return Promise.reject(sig);
      if (sig?.aborted) return Promise.reject(abortReason(sig));
      signal = sig;
    }
    let start: number;
    try {
      // Checked here so the error names this API's parameter (the queue calls it `start`).
      start = toOffset("offset", offset);
      if (start < 0) return Promise.reject(BlkioError.of("EINVAL", `offset: ${BEYOND_2_53_MSG}`));
      // A plain copy: the queue then reads no element through the caller's code (element by
      // element: slice would let a subclass's Symbol.species make something else).
      if ((op === OP_READV || op === OP_WRITEV) && Array.isArray(arg)) {
        const from = arg as unknown[], n = from.length, copy = new Array(n);
        for (let i = 0; i < n; i++) copy[i] = from[i];
        arg = copy;
      }
    } catch (e) {
      return Promise.reject(e);
    }
    // A device that takes buffers of at most max-segment-len (a virtio-blk back-end's size_max)
    // gets a longer one as several, as Linux's block layer splits segments: the API has no
    // limit of the kind to learn. What then names the request in errors stays the caller's.
    const named = op;
    if (
      this.#maxSegmentLen > 0 &&
      (op <= OP_WRITE || ((op === OP_READV || op === OP_WRITEV) && Array.isArray(arg)))
    ) {
      const bufs = op <= OP_WRITE ? [arg] : arg as unknown[];
      const split = splitSegments(bufs, this.#maxSegmentLen, this.#maxSegments);
      if (split !== null) {
        arg = split;
        op = op === OP_READ ? OP_READV : op === OP_WRITE ? OP_WRITEV : op;
      }
    }
    if (this.#closing) return Promise.reject(closedError());
    const qi = this.#qs.length === 1 && this.#failedQueues === 0 ? 0 : this.#pick();
    if (qi < 0) {
      const failure = this.#qs[0].failure!;
      return Promise.reject(
        requestError(named, start, failure.errno, `every queue failed: ${failure.message}`),
      );
    }
    const s = this.#qs[qi];
    const id = this.#freeIds.length > 0 ? this.#freeIds.pop()! : this.#newId();
    if (signal !== null) {
      // Before the request is queued: one whose abort cannot be watched must not start at all.
      const failed = this.#listen(id, signal);
      // The caller's code (argument getters, its addEventListener) may also have aborted the
      // signal since it was checked: the listener came too late to hear it.
      const err = failed ?? (signal.aborted ? abortReason(signal) : null);
      if (err !== null) {
        if (failed === null) this.#unlisten(id);
        this.#freeIds.push(id);
        return Promise.reject(err);
      }
    }
    try {
      const q = s.queue;
      switch (op) {
        case OP_READ:
          q.read(start, arg as Uint8Array, id);
          break;
        case OP_WRITE:
          q.write(start, arg as Uint8Array, id, flags);
          break;
        case OP_READV:
          q.readv(start, arg as Uint8Array[], id);
          break;
        case OP_WRITEV:
          q.writev(start, arg as Uint8Array[], id, flags);
          break;
        case OP_WRITE_ZEROES:
          q.writeZeroes(start, arg as number, id, flags);
          break;
        case OP_DISCARD:
          q.discard(start, arg as number, id);
          break;
        default:
          q.flush(id);
      }
    } catch (e) {
      if (signal !== null) this.#unlisten(id);
      this.#freeIds.push(id);
      return Promise.reject(e);
    }
    const p = new Promise<void>(park);
    this.#resolve[id] = parkedResolve;
    this.#reject[id] = parkedReject;
    this.#queueOf[id] = qi;
    this.#opOf[id] = named;
    this.#offsetOf[id] = start;
    this.#releases.submitted(id, op <= OP_WRITEV ? arg : null);
    s.pending++;
    this.#outstanding++;
    if (this.#failureCheckMs > 0 && this.#failureCheck === null) {
      this.#failureCheck = setInterval(this.#onFailureCheck, this.#failureCheckMs);
    }
    this.#schedule(s);
    return p;
  }

  #newId(): number {
    const id = this.#resolve.length;
    this.#resolve.push(null);
    this.#reject.push(null);
    this.#queueOf.push(0);
    this.#opOf.push(0);
    this.#offsetOf.push(0);
    this.#releases.args.push(null);
    this.#signalOf.push(null);
    return id;
  }

  /** The least loaded queue that has not failed, round-robin among equals; -1 if all failed. */
  #pick(): number {
    const qs = this.#qs, n = qs.length;
    let best = -1, load = Infinity;
    for (let k = 0; k < n && load > 0; k++) {
      const i = (this.#rr + k) % n;
      if (qs[i].pending < load && qs[i].failure === null) {
        best = i;
        load = qs[i].pending;
      }
    }
    if (best >= 0) this.#rr = (best + 1) % n;
    return best;
  }

  #schedule(s: QueueState): void {
    s.dirty = true;
    if (++s.unsubmitted >= EARLY_SUBMIT) {
      this.#submitQueued(s);
      return;
    }
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(this.#flushNow);
    }
  }

  /**
   * Submits what this turn queued and makes sure someone waits. It reaps nothing: settling
   * promises here would run their continuations, whose new requests would flush again, and a
   * fast device could keep that microtask chain going forever, starving timers and I/O.
   */
  #flush(): void {
    this.#flushQueued = false;
    if (this.#dead) return;
    const qs = this.#qs;
    for (let i = 0; i < qs.length; i++) {
      if (qs[i].dirty) this.#submitQueued(qs[i]);
    }
  }

  /** Hands what `s` queued to the kernel and makes sure someone waits for it. */
  #submitQueued(s: QueueState): void {
    if (this.#dead) return;
    s.dirty = false;
    s.unsubmitted = 0;
    try {
      s.queue.doIo(this.#out, 0, 0);
    } catch (e) {
      this.#doIoFailed(s, e);
    }
    if (s.waiting || s.peekScheduled) return;
    // Look for completions in the next macrotask before sleeping: page-cached reads complete
    // inside the submitting call, and taking them then saves a wait's round trip.
    s.peekScheduled = true;
    setImmediate(s.onPeek);
  }

  #wake(s: QueueState): void {
    s.waiting = false;
    this.#drain(s);
    // Wait again at once, while the continuations of what was just settled run: the wait's
    // latency overlaps with them (the flush after them finds the wait already started).
    this.#arm(s);
  }

  #arm(s: QueueState): void {
    if (s.waiting || s.pending === 0 || this.#waitsDone || s.failure !== null) return;
    s.waiting = true;
    s.waiter ??= new CompletionWaiter(this.#native, s.fd);
    s.wait = s.waiter.wait().then(s.onWake, s.onWakeError);
  }

  /** Submits queued requests and settles every completion that is ready, without waiting. */
  #drain(s: QueueState): void {
    if (this.#dead) return;
    const out = this.#out;
    let batches = 0;
    for (;;) {
      let n: number;
      try {
        n = s.queue.doIo(out, 0, BATCH);
      } catch (e) {
        this.#doIoFailed(s, e);
        return;
      }
      // That call submitted what was queued: the next burst counts from zero.
      s.dirty = false;
      s.unsubmitted = 0;
      for (let i = 0; i < n; i++) {
        const c = out[i];
        this.#complete(c.userData as number, c.ret, c.errorMsg);
      }
      if (n < BATCH) return;
      // Full batches keep coming while the backlog refills the ring with requests that
      // complete inside the call (page-cached reads), and each settled promise's continuation
      // runs before the turn ends: past a few batches, carry on next turn so timers and other
      // I/O get theirs (100,000 queued reads were settled in one turn of 50-126 ms).
      if (++batches === DRAIN_BATCHES) {
        if (!s.peekScheduled) {
          s.peekScheduled = true;
          setImmediate(s.onPeek);
        }
        return;
      }
    }
  }

  /**
   * `s`'s doIo threw. io_uring_enter can fail for a while (EAGAIN, EBUSY under memory pressure):
   * nothing was lost, so that is tried again shortly. Any other failure stays however often it
   * is retried (the ring fd closed under the library: EBADF; a dead SQPOLL thread: EOWNERDEAD),
   * and the queue's requests would stay pending for ever, retried every millisecond: they reject
   * with it instead, and later requests go to the device's other queues, or reject if none is
   * left. The device may still have them, as aborted ones: {@link released} says when their
   * buffers are free again (if ever: `EBUSY` after close).
   */
  #doIoFailed(s: QueueState, e: unknown): void {
    if (s.failure !== null) return;
    if (e instanceof BlkioError && enterMayPass(e.errno)) return this.#retryLater(s);
    const failure = e instanceof BlkioError ? e : BlkioError.of("EIO", `${e}`, { cause: e });
    s.failure = failure;
    this.#failedQueues++;
    const msg = `the device's queue ${s.index} failed: ${failure.message}`;
    for (let id = 0; id < this.#reject.length; id++) {
      const reject = this.#reject[id];
      if (reject === null || this.#queueOf[id] !== s.index) continue;
      this.#resolve[id] = null;
      this.#reject[id] = null;
      if (this.#signalOf[id] !== null) this.#unlisten(id);
      this.#aborted++;
      reject(requestError(this.#opOf[id], this.#offsetOf[id], failure.errno, msg));
    }
    if (this.#idle !== null) this.#idle();
  }

  #retryLater(s: QueueState): void {
    if (s.retryTimer !== null || this.#dead || s.failure !== null) return;
    s.retryTimer = setTimeout(() => {
      s.retryTimer = null;
      // Not only a submission: a doIo that failed after reaping put the completions back in the
      // queue, and nothing signals the completion fd for them (its signal was consumed by the
      // wait that led here). Left to the next wakeup, they waited for another request to
      // complete: for ever behind requests to a daemon that stopped answering.
      this.#drain(s);
      this.#arm(s);
    }, 1);
  }

  #complete(id: number, ret: number, msg: string | null): void {
    const resolve = this.#resolve[id];
    const reject = this.#reject[id];
    this.#resolve[id] = null;
    this.#reject[id] = null;
    if (this.#signalOf[id] !== null) this.#unlisten(id);
    this.#qs[this.#queueOf[id]].pending--;
    this.#freeIds.push(id);
    this.#outstanding--;
    if (resolve === null) { // aborted: already rejected
      this.#aborted--;
      if (this.#idle !== null) this.#idle();
    } else {
      if (this.#idle !== null) this.#idle();
      if (ret >= 0) resolve();
      else {
        const op = this.#opOf[id];
        // The drivers' reason names the instance's `read-only` property (or only "device is
        // read-only"): the caller of open set the readOnly option, and knows it by that name.
        if (-ret === EBADF && this.#readOnly && op !== OP_READ && op !== OP_READV && op !== OP_FLUSH) {
          msg = READ_ONLY_REASON;
        }
        reject!(requestError(op, this.#offsetOf[id], -ret, msg));
      }
    }
    this.#releases.ended(id, ret);
  }

  /**
   * Resolves once the requests of this device that use any byte of `buffer` (the same
   * ArrayBuffer, overlapping bytes) when it is called have ended in the kernel or back-end,
   * aborted ones included; at once if there are none. Requests made afterwards are not waited
   * for. An aborted request's promise rejects at once, but the device may still fill or send
   * its buffer: this says when that buffer may be reused.
   *
   * Rejects with the signal's reason (an `AbortError` when that is not an Error) if `signal`
   * aborts first; with BlkioError `EINVAL` if `buffer` is not a Uint8Array; and with `EBUSY` if
   * {@link close} gave up on an aborted request that uses it (a back-end that never returned
   * it), or the driver did (a vhost-user back-end that hung up or corrupted its virtqueue; that
   * request failed with `EIO`): its memory stays the device's for as long as the process runs.
   * Memory transferred to another ArrayBuffer is not recognised.
   *
   * @param buffer The memory to wait for (a view of it: any overlapping request counts).
   * @param opts `signal`, to stop waiting.
   * @returns A promise that resolves as said above, or rejects as said above; it never throws.
   *
   * @example Reuse the buffer of an aborted read
   * ```ts
   * import { BlockDevice } from "@blkio/blkio";
   * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
   * const path = join(dir, "disk.img");
   * writeFileSync(path, new Uint8Array(65536).fill(7));
   * await using dev = await BlockDevice.open(path);
   * const buf = dev.allocBuffer(4096);
   * const ac = new AbortController();
   * const read = dev.read(0, buf, { signal: ac.signal });
   * ac.abort();
   * await read.catch((e) => { if (e.name !== "AbortError") throw e; });
   * await dev.released(buf); // the aborted read may have filled it until now
   * buf.fill(9);
   * await dev.write(4096, buf);
   * rmSync(dir, { recursive: true });
   * ```
   */
  released(buffer: Uint8Array, opts?: RequestOptions): Promise<void> {
    const checked = flagsOf(opts, REQUEST_OPTIONS, NO_FLAGS, "released");
    if (typeof checked !== "number") return Promise.reject(checked);
    const r = viewRange(buffer);
    if (r === null) {
      return Promise.reject(
        BlkioError.of("EINVAL", `buffer must be a Uint8Array: received ${describe(buffer)}`),
      );
    }
    const signal = opts === undefined || opts === null ? null : signalOption(opts);
    if (signal instanceof BlkioError) return Promise.reject(signal);
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    return this.#releases.wait(r, signal, this.#dead);
  }

  /** Watches `signal` for request `id`; the EINVAL to reject with if it cannot be listened to. */
  #listen(id: number, signal: AbortSignal): BlkioError | null {
    const w = this.#watches.get(signal);
    if (w !== undefined) {
      w.ids.add(id);
      this.#signalOf[id] = signal;
      return null;
    }
    const listener = () => this.#onAbort(signal);
    const watch = { listener, ids: new Set([id]) };
    this.#watches.set(signal, watch);
    const failed = listenAbort(signal, listener);
    if (failed !== null) {
      this.#watches.delete(signal);
      return failed;
    }
    // Not if the listener already ran (the caller's addEventListener aborted): that took the
    // watch, and #submit sees the signal aborted.
    if (this.#watches.get(signal) === watch) this.#signalOf[id] = signal;
    return null;
  }

  /** Stops watching `id`'s signal for it; the listener goes with the signal's last request. */
  #unlisten(id: number): void {
    const signal = this.#signalOf[id]!;
    this.#signalOf[id] = null;
    const w = this.#watches.get(signal);
    if (w === undefined || !w.ids.delete(id) || w.ids.size > 0) return;
    this.#watches.delete(signal);
    unlistenAbort(signal, w.listener);
  }

  /** Aborts every request watching `signal`, oldest first. */
  #onAbort(signal: AbortSignal): void {
    const w = this.#watches.get(signal);
    if (w === undefined) return;
    this.#watches.delete(signal);
    for (const id of w.ids) this.#abort(id, signal);
  }

  #abort(id: number, signal: AbortSignal): void {
    const reject = this.#reject[id];
    if (reject === null) return;
    this.#resolve[id] = null;
    this.#reject[id] = null;
    this.#signalOf[id] = null;
    // The id stays taken until its completion arrives: the queue keeps the buffers until then.
    const s = this.#qs[this.#queueOf[id]];
    s.queue.cancel(id);
    this.#aborted++;
    if (this.#idle !== null) this.#idle();
    this.#schedule(s);
    reject(abortReason(signal));
  }

  /**
   * Waits for every request in flight, then releases the queues, the device and the memory of
   * {@link allocBuffer}. Requests made after `close()` reject with BlkioError `EBADF`. Requests
   * aborted through their `signal` but still held by the device are waited for about a second
   * once nothing else is left (a vhost-user back-end that stopped would keep them for ever);
   * their buffers then stay referenced for the life of the process, as the device may still
   * write into them. To give up on a request stuck in such a back-end, abort it.
   * Idempotent: every call returns the same promise.
   *
   * @returns A promise that resolves once every request has settled and the device is closed.
   *
   * @example Close with requests still in flight
   * ```ts
   * import { BlockDevice } from "@blkio/blkio";
   * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
   * import { tmpdir } from "node:os";
   * import { join } from "node:path";
   * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
   * const path = join(dir, "disk.img");
   * writeFileSync(path, new Uint8Array(1 << 20));
   * const dev = await BlockDevice.open(path);
   * let done = 0;
   * for (let i = 0; i < 100; i++) dev.read(i * 4096, new Uint8Array(4096)).then(() => done++);
   * await dev.close();
   * if (done !== 100) throw new Error("close() returned early");
   * rmSync(dir, { recursive: true });
   * ```
   */
  close(): Promise<void> {
    if (this.#closed === null) this.#closed = this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    this.#closing = true;
    // Every request still wanted completes first, however long the device takes; aborted ones
    // get ABORTED_DRAIN_MS once they are all that is left (an aborted request cannot be taken
    // back from a vhost-user back-end, and one that stopped would hold close() for ever).
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((resolve) => {
      const check = () => {
        if (this.#outstanding === 0) resolve();
        else if (this.#outstanding === this.#aborted && timer === undefined) {
          timer = setTimeout(resolve, ABORTED_DRAIN_MS);
        }
      };
      this.#idle = check;
      check();
    });
    clearTimeout(timer);
    this.#idle = null;
    this.#waitsDone = true;
    if (this.#failureCheck !== null) clearInterval(this.#failureCheck);
    this.#failureCheck = null;
    for (const s of this.#qs) {
      if (s.retryTimer !== null) clearTimeout(s.retryTimer);
      if (s.waiting) {
        // A completion reaped by a submission can leave a wait behind; wake it up.
        signalEventfd(this.#native, s.fd);
        await s.wait;
      }
      await s.waiter?.close();
    }
    this.#pool = null;
    this.#dead = true;
    this.#b.destroy();
    this.#releases.closed();
  }

  /** Same as {@link close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
