/**
 * One io_uring queue: a ring, its registered target fd, its completion eventfd and the slot
 * table of requests in flight. `user_data` is the slot index; a slot holds the request's
 * buffers (so the garbage collector cannot free memory the kernel uses) until its CQE is
 * reaped.
 *
 * @module
 */
import type { Native } from "../../../ffi/types.ts";
import { type Completion, Op, type OpValue, ReqFlags } from "../../completion.ts";
import type { CompletionBacklog } from "../../completion_backlog.ts";
import type { DriverQueue } from "../../driver.ts";
import { BUFFER_REMEDIES, bufferAddress, bufferOf, byteLengthOf, zeroFrom } from "../../buffers.ts";
import { abandon, outlivesThread } from "../../abandoned.ts";
import {
  closeFd,
  cString,
  enterMayPass,
  iovMax,
  isShortage,
  newEventfd,
  O_CLOEXEC,
  O_RDWR,
  onMainThread,
  pause,
  seekEnd,
  signalEventfd,
} from "../../sys.ts";
import { Ring } from "../../uring/ring.ts";
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_NO_HIDE_STALE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  IORING_ENTER_GETEVENTS,
  IORING_OP,
  IORING_SETUP_COOP_TASKRUN,
  IORING_SETUP_DEFER_TASKRUN,
  IORING_SETUP_IOPOLL,
  IORING_SETUP_SINGLE_ISSUER,
  IORING_SETUP_SQPOLL,
  IORING_SETUP_TASKRUN_FLAG,
  IOSQE_ASYNC,
  IOSQE_FIXED_FILE,
  IOSQE_IO_HARDLINK,
  POSIX_FADV_DONTNEED,
  RWF_DSYNC,
  RWF_HIPRI,
} from "../../uring/constants.ts";
import {
  prepCancel,
  prepCmdDiscard,
  prepFadvise,
  prepFallocate,
  prepFdatasync,
  prepNop,
  prepRead,
  prepReadFixed,
  prepReadv,
  prepSyncFileRange,
  prepTimeout,
  prepWrite,
  prepWriteFixed,
  prepWritev,
  setRwFlags,
  setSqeFlags,
  setUserData,
} from "../../uring/sqe.ts";
import { deviceReadOnly, readBlockLimits, type TargetInfo } from "./target_info.ts";

const EPERM = 1;
const EINTR = 4;
const EIO = 5;
const EBADF = 9;
const EBUSY = 16;
const EINVAL = 22;
const EFBIG = 27;
const ENOSPC = 28;
const ENOTSUP = 95;
const ECANCELED = 125;
const U32_MAX = 0xffffffff;
/** reap() result of a request that went back to the ring for its remainder. */
const RESUBMITTED = 1;
/**
 * How long a doIo wait on an SQPOLL ring watches the CQ before it sleeps in io_uring_enter. A
 * sleep and its wake-up cost ~10 µs here, and the kernel thread posts page-cached reads ~1.5 µs
 * apart: waits that slept made SQPOLL 4x slower than a plain ring at iodepth 1 (BENCHMARKS.md).
 * 10 µs still timed out often enough to lose half of that; 50 µs covers a fast disk's latency.
 */
const SQPOLL_SPIN_NS = 50_000;
/**
 * The S_OP numbers of slots that hold no request of the caller's (S_OP >= OP_AUX): an
 * IORING_OP_ASYNC_CANCEL ({@link IoUringQueue.cancel}), and the pause and probe ahead of a retry
 * (#pauseFirst), whose S_START is the slot of the request behind it. Each takes a slot of its own,
 * so it counts against the CQ size like any request (its CQE must not overflow the CQ: without a
 * GETEVENTS enter an overflowed CQE would never show up), but it is not in `inFlight` and its
 * completion is never reported.
 */
const OP_PROBE = 253, OP_PAUSE = 254, OP_CANCEL = 255;
const OP_AUX = OP_PROBE;

/**
 * The slot table keeps each slot's numbers together, 8 Float64 (64 bytes) per slot, and its
 * references together, 3 per slot: a request touches a few cache lines instead of one or two
 * per field. At iodepth 1 every request follows a system call, after which the library's
 * JavaScript runs 3-4x slower than in a loop without one (bench/layers_bench.ts --kernel:
 * 0.11-0.14 µs a request with no system call, 0.33-0.40 with one, 0.43-0.65 with real reads,
 * 2026-12-05), so what a request touches matters. Against the struct-of-arrays table this
 * measured 2% fewer ns per request (8 alternated A/B runs).
 */
const S_START = 0, S_LEN = 1, S_DONE = 2, S_ADDR = 3, S_OP = 4, S_PHASE = 5, S_FLAGS = 6, S_USED = 7;
const SLOT_NUMBERS = 8;
/**
 * Bits of a slot's S_FLAGS above the request's ReqFlags (bits 0-2; the core refuses any other):
 * {@link IoUringQueue.cancel} was asked for the request, and how many times it went again after
 * io_uring could not start a worker thread for it (#retryNoWorker), in units of F_NO_WORKER.
 */
const F_CANCEL_ASKED = 1 << 8;
const F_NO_WORKER = 1 << 9;
const F_NO_WORKER_MASK = 0x1f << 9;
/**
 * A probe went ahead of a try of the request (#pauseFirst), once a request; and io-wq had a worker
 * thread for it: an ECANCELED of that try is then the file system's own, not a cancel for want of
 * a worker.
 */
const F_PROBED = 1 << 14;
const F_WORKER_SEEN = 1 << 15;
/** A block device's zeroing failed EBUSY and went again after a write-back (#finish), once. */
const F_BUSY_RETRIED = 1 << 16;
/**
 * How many times a request goes again after io-wq could not start a worker for it (a thread
 * limit), each after a pause of NO_WORKER_PAUSE_NS. Linux 6.18 itself tries to start one 4 times,
 * 5, 10 and 15 ms apart, before it cancels (~48 ms from submission here); Linux 6.1 tries again
 * at once and cancels within a millisecond, so without the pause the 10 tries were over in 91 ms
 * (in a 6.1 guest, emulated) and a limit that passed 150 ms later still failed the request. With
 * it, a passing shortage has about half a second (6.1) to a second (6.18).
 */
const NO_WORKER_RETRIES = 10;
/** The pause before each such try: a TIMEOUT hard-linked ahead of the request (#pauseFirst). */
const NO_WORKER_PAUSE_NS = 50_000_000;
/** In `#refs`: the caller's userData, the buffer, the iovec list (null when none). */
const R_UD = 0, R_BUF = 1, R_IOV = 2;
const SLOT_REFS = 3;

/** Options of {@link IoUringQueue}. */
export interface IoUringQueueOptions {
  poll: boolean;
  entries: number;
  fd: number;
  target: TargetInfo;
  /** A kernel thread polls the SQ (IORING_SETUP_SQPOLL); not for poll queues. */
  sqpoll?: boolean;
  /**
   * With `sqpoll`: the fd of a live SQPOLL ring (another queue's {@link IoUringQueue.sqpollRingFd})
   * whose kernel thread polls this queue's ring too, or -1 (the default) for a thread of its own.
   */
  sqpollWqFd?: number;
  /** Called once {@link IoUringQueue.destroy} has released the queue, for its owner to forget it. */
  onDestroy?: (q: IoUringQueue) => void;
}

/**
 * Fixed buffer slots of each ring, for mapped memory regions (more regions than this use plain
 * reads and writes).
 */
export const FIXED_BUFFERS = 64;

/**
 * COOP_TASKRUN (Linux 5.19): completions no longer interrupt the thread with an IPI; their task
 * work runs at its next kernel entry (a sleeping waiter is still woken). Fewer interrupts: -27%
 * CPU per request and +10% IOPS at iodepth 32 (BENCHMARKS.md). With TASKRUN_FLAG, reap() sees
 * when that work waits. SQPOLL rings refuse both.
 */
const COOP_TASKRUN = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
/** The optional flags of every other ring that may poll or wait: COOP_TASKRUN where known. */
const COOP_RING_FLAGS: readonly number[] = [COOP_TASKRUN];

/**
 * The setup flags of a regular queue's ring on a file on tmpfs, best first (the kernel takes
 * the first it knows). DEFER_TASKRUN (Linux 6.1, with SINGLE_ISSUER: only this thread uses the
 * ring, as JavaScript objects never cross threads) goes further than COOP_TASKRUN: completion
 * work waits for this thread's next GETEVENTS entry, so requests the kernel hands to its
 * workers (every buffered tmpfs read) are posted in batches by this thread instead of one by
 * one by the worker: 4-10% less time a request for tmpfs reads at iodepth 1 and 32 (in-process
 * A/B, BENCHMARKS.md). A queue whose completion fd is taken while idle gets a COOP_TASKRUN ring
 * instead (see useCompletionFd).
 */
const TMPFS_RING_FLAGS: readonly number[] = [
  COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
  COOP_TASKRUN,
];

/**
 * Whether a regular queue on `target` gets DEFER_TASKRUN ({@link TMPFS_RING_FLAGS}): only a
 * file on tmpfs, whose requests never wait for a device. Where requests complete from a device
 * (block devices, O_DIRECT, and buffered reads that miss the page cache) completions that
 * arrive while a wait returns are posted only by the next entry, after its submissions, so each
 * turn resubmits fewer: 128 KiB sequential O_DIRECT reads of a loop device at iodepth 8 did ~20%
 * fewer IOPS, and 4 KiB buffered reads of an uncached ext4 file at iodepth 32 took 10-12% longer
 * each (BENCHMARKS.md), more than the 4-8% ext4 buffered writes gained. Poll and SQPOLL queues
 * never get it.
 */
export function defersTaskWork(target: TargetInfo): boolean {
  return target.onTmpfs && !target.direct;
}

/** The optional setup flags of a regular (not poll, not SQPOLL) queue's ring on `target`. */
export function regularRingFlags(target: TargetInfo): readonly number[] {
  return defersTaskWork(target) ? TMPFS_RING_FLAGS : COOP_RING_FLAGS;
}

/** A queue of the io_uring driver. */
export class IoUringQueue implements DriverQueue {
  completions!: CompletionBacklog;
  readonly isPollQueue: boolean;
  readonly completionFd: number;
  readonly #native: Native;
  /** Replaced once at most, by a COOP_TASKRUN ring when the completion fd is taken (#remakeRing). */
  #ring: Ring;
  /** What the ring was made with, to make it again. */
  readonly #fd: number;
  /**
   * A second open file of the target for the write-back before a NO_FALLBACK write zeroes
   * (phase 3), made at its first use; -1 before, -2 when it could not be opened. Waiting for
   * write-back reports a write-back error to the waiting file once, and the next flush of that
   * file then returns 0: on the target's own fd, an earlier buffered write whose write-back had
   * failed was lost with nothing to say so (fault hunt: the flush after returned 0). Another
   * file has its own error cursor, so the target's fd still reports the error at the next flush.
   */
  #writeBackFd = -1;
  readonly #entries: number;
  readonly #target: TargetInfo;
  readonly #supportsRead: boolean;
  readonly #supportsWrite: boolean;
  readonly #supportsFallocate: boolean;
  /**
   * Discards of a block device go as BLOCK_URING_CMD_DISCARD until a kernel without block device
   * commands refuses one (for a device that sysfs says can discard).
   */
  #cmdDiscard: boolean;
  readonly #rwFlags: number;
  /** ReqFlags.FUA where a FUA write is RWF_DSYNC, else 0 (TargetInfo.fuaByFlush). */
  readonly #fuaDsync: number;
  /** ReqFlags.FUA where a FUA write is followed by an fdatasync, else 0. */
  readonly #fuaFlush: number;
  // Slot table (see S_START): allocated once, so nothing is allocated per request.
  readonly #cap: number;
  readonly #free: Int32Array;
  #why = "";
  #freeTop: number;
  readonly #slots: Float64Array;
  /** Requests taken so far: each slot in use holds its number (S_USED), the oldest lowest. */
  #age = 0;
  readonly #refs: unknown[];
  readonly #iovMem: (Uint32Array | null)[];
  readonly #iovAddr: Float64Array;
  readonly #resubmit: Int32Array;
  #resubmitHead = 0;
  /** Slots taken by cancellations, pauses and probes (OP_AUX): not requests in flight. */
  #aux = 0;
  #resubmitCount = 0;
  // Registered buffers: slot k covers [#fixedStart[k], #fixedEnd[k]); empty slots have end 0.
  readonly #fixedTable: boolean;
  readonly #fixedStart = new Float64Array(FIXED_BUFFERS);
  readonly #fixedEnd = new Float64Array(FIXED_BUFFERS);
  /** The region memory of each slot, as JS sees it: detached means the region is gone. */
  readonly #fixedBuffer: (ArrayBufferLike | null)[] = new Array(FIXED_BUFFERS).fill(null);
  /** One past the highest slot in use, so lookups with no regions cost nothing. */
  #fixedHigh = 0;
  #destroyed = false;
  readonly #onDestroy: ((q: IoUringQueue) => void) | undefined;
  #fdRegistered = false;
  /** The flags of every SQE: the registered file, and IOSQE_ASYNC ({@link submitFromEventLoop}). */
  #sqeFlags = IOSQE_FIXED_FILE;
  /** The timespec of the pauses before no-worker retries (#pauseFirst), made at the first. */
  #pauseTs: Uint8Array | null = null;
  /** Whether the last enter() waited for completions (reap() reads and clears it). */
  #waited = false;

  constructor(native: Native, opts: IoUringQueueOptions) {
    this.#native = native;
    this.#target = opts.target;
    this.isPollQueue = opts.poll;
    this.#rwFlags = opts.poll ? RWF_HIPRI : 0;
    this.#fuaFlush = opts.target.fuaByFlush ? ReqFlags.FUA : 0;
    this.#fuaDsync = ReqFlags.FUA ^ this.#fuaFlush;
    const ring = opts.sqpoll && !opts.poll
      ? new Ring(native, opts.entries, IORING_SETUP_SQPOLL, [], true, opts.sqpollWqFd ?? -1)
      : opts.poll
      ? new Ring(native, opts.entries, IORING_SETUP_IOPOLL, COOP_RING_FLAGS)
      : new Ring(native, opts.entries, 0, regularRingFlags(opts.target));
    let efd = -1;
    try {
      // Probing came with READ, WRITE and FALLOCATE in Linux 5.6: no probe means none of them.
      const ops = ring.probe();
      this.#supportsRead = ops.has(IORING_OP.READ);
      this.#supportsWrite = ops.has(IORING_OP.WRITE);
      this.#supportsFallocate = ops.has(IORING_OP.FALLOCATE);
      this.#cmdDiscard = ops.has(IORING_OP.URING_CMD);
      ring.registerFiles([opts.fd]);
      // The eventfd is made now, so its number never changes, but registered with the ring
      // only once someone takes it (useCompletionFd): a registered eventfd costs the kernel a
      // signal per completion batch, ~0.1 µs a request at iodepth 1, which a thread that only
      // waits in doIo never reads.
      if (!opts.poll) efd = newEventfd(native);
    } catch (e) {
      ring.close();
      closeFd(native, efd);
      throw e;
    }
    this.#ring = ring;
    this.#fd = opts.fd;
    this.#onDestroy = opts.onDestroy;
    this.#entries = opts.entries;
    this.completionFd = efd;
    // Registered buffers save pinning the pages of every request (get_user_pages for O_DIRECT,
    // a page walk for buffered I/O). Without a sparse table (Linux < 5.19) all I/O stays plain.
    // Nor where requests go to io-wq without an attempt inside io_uring_enter (submitAsync: a
    // FUSE file): Linux 6.18 looks a fixed buffer up when the worker issues the request, not at
    // submission, so a region unmapped in between (allowed while its requests are in flight)
    // failed them with EFAULT (fuzzer, FUSE file). An inline attempt takes its reference first.
    this.#fixedTable = !opts.target.submitAsync && ring.registerBufferTable(FIXED_BUFFERS) === 0;
    // In flight is capped at the CQ size so the CQ can never overflow (kernels before 5.5
    // drop CQEs on overflow).
    const cap = ring.cqEntries;
    this.#cap = cap;
    this.#free = new Int32Array(cap);
    for (let i = 0; i < cap; i++) this.#free[i] = cap - 1 - i;
    this.#freeTop = cap;
    this.#slots = new Float64Array(cap * SLOT_NUMBERS);
    this.#refs = new Array(cap * SLOT_REFS).fill(null);
    this.#iovMem = new Array(cap).fill(null);
    this.#iovAddr = new Float64Array(cap);
    this.#resubmit = new Int32Array(cap);
  }

  get inFlight(): number {
    return this.#cap - this.#freeTop - this.#aux;
  }

  /** Whether {@link destroy} was called. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /**
   * Registers `[addr, addr + len)` (a mapped memory region) as fixed buffer `index`: reads and
   * writes inside it then use READ_FIXED / WRITE_FIXED. Returns false when the kernel refused
   * (no sparse table, RLIMIT_MEMLOCK, memory it cannot pin): such I/O simply stays plain.
   */
  registerBuffer(index: number, addr: number, len: number, buffer: ArrayBufferLike): boolean {
    if (!this.#fixedTable || this.#destroyed || index >= FIXED_BUFFERS) return false;
    if (this.#ring.updateBuffer(index, addr, len) !== 0) return false;
    this.#fixedStart[index] = addr;
    this.#fixedEnd[index] = addr + len;
    this.#fixedBuffer[index] = buffer;
    if (index >= this.#fixedHigh) this.#fixedHigh = index + 1;
    return true;
  }

  /** Whether fixed buffer `index` holds a region on this ring. */
  hasBuffer(index: number): boolean {
    return index < FIXED_BUFFERS && this.#fixedEnd[index] !== 0;
  }

  /**
   * Empties fixed buffer `index`. SQEs already written that use it are submitted first (the
   * kernel takes its reference to the buffer at submission). Returns false when that failed:
   * the index must then not be used for another region.
   */
  unregisterBuffer(index: number): boolean {
    if (this.#destroyed || index >= this.#fixedHigh || this.#fixedEnd[index] === 0) return true;
    this.#fixedStart[index] = 0;
    this.#fixedEnd[index] = 0;
    this.#fixedBuffer[index] = null;
    while (this.#fixedHigh > 0 && this.#fixedEnd[this.#fixedHigh - 1] === 0) this.#fixedHigh--;
    if (!this.#ring.flushSubmissions()) return false;
    return this.#ring.updateBuffer(index, 0, 0) === 0;
  }

  /**
   * The fixed buffer holding `[addr, addr + len)`, or -1. Not one whose memory JS has detached
   * (transferred away while mapped): the kernel still holds the old pages, and memory mapped at
   * that address since is not them.
   */
  #fixedIndex(addr: number, len: number): number {
    const high = this.#fixedHigh;
    for (let k = 0; k < high; k++) {
      // An emptied index below the highest used one is [0, 0): an empty buffer (address 0)
      // "fitted" it, and the null buffer threw after the SQE had been claimed, so the next
      // doIo submitted whatever request that SQE held before (a write done twice).
      const buffer = this.#fixedBuffer[k];
      if (buffer !== null && addr >= this.#fixedStart[k] && addr + len <= this.#fixedEnd[k]) {
        return buffer.byteLength !== 0 ? k : -1;
      }
    }
    return -1;
  }

  get pendingSubmit(): number {
    return this.#ring.unsubmitted + this.#resubmitCount;
  }

  tryEnqueue(
    op: OpValue,
    start: number,
    buf: Uint8Array | null,
    iovecs: readonly Uint8Array[] | null,
    len: number,
    userData: unknown,
    flags: number,
  ): boolean {
    if (this.#freeTop === 0 || this.#ring.sqSpace() === 0) return false;
    const errno = this.#unsupported(op, len, flags);
    if (errno !== 0) {
      this.completions.push(userData, -errno, this.#why);
      return true;
    }
    const addr = buf === null ? 0 : bufferAddress(this.#native, buf);
    if (
      (op === Op.Write || op === Op.Writev) && this.#target.directWritesTear &&
      this.#tears(start, len, addr, iovecs)
    ) {
      this.completions.push(userData, -EINVAL, this.#misalignment(start, len, addr, iovecs));
      return true;
    }
    const slot = this.#free[--this.#freeTop];
    const s = this.#slots, b = slot * SLOT_NUMBERS;
    s[b + S_START] = start;
    s[b + S_LEN] = len;
    s[b + S_DONE] = 0;
    s[b + S_ADDR] = addr;
    s[b + S_OP] = op;
    s[b + S_PHASE] = op === Op.WriteZeroes ? this.#firstZeroPhase(flags, len) : 0;
    s[b + S_FLAGS] = flags;
    // Non-zero while in use; the count orders requests by age for cancel().
    s[b + S_USED] = ++this.#age;
    const refs = this.#refs, r = slot * SLOT_REFS;
    refs[r + R_UD] = userData;
    refs[r + R_BUF] = buf;
    refs[r + R_IOV] = iovecs;
    this.#prep(slot);
    return true;
  }

  /** 0, or the errno (message in #why) of a request this queue cannot do. */
  #unsupported(op: OpValue, len: number, flags: number): number {
    if (this.isPollQueue && op >= Op.WriteZeroes) return this.#fail(ENOTSUP, POLL_MSG);
    if ((op === Op.Read || op === Op.Write) && len > U32_MAX) return this.#fail(EINVAL, LEN_MSG);
    if (op === Op.WriteZeroes || op === Op.Discard) {
      if (!this.#supportsFallocate) return this.#fail(ENOTSUP, FALLOC_MSG);
      // The kernel checks the fallocate mode before write access, so a discard the file system
      // cannot do came back ENOTSUP on a read-only instance, where every other write is EBADF;
      // so did a NO_FALLBACK write zeroes refused below.
      if (this.#target.readOnly) return this.#fail(EBADF, READ_ONLY_MSG);
      if (
        op === Op.Discard && this.#target.isBlockDevice && !this.#cmdDiscard &&
        !(this.#target.discards && this.#target.supportsWriteZeroesWithoutFallback)
      ) return this.#noHole();
      if (
        op === Op.WriteZeroes && this.#target.isBlockDevice &&
        !this.#target.supportsWriteZeroesWithoutFallback && (flags & ReqFlags.NO_FALLBACK) !== 0
      ) return this.#fail(ENOTSUP, NOFALLBACK_MSG);
    }
    return 0;
  }

  /**
   * ENOTSUP for a discard of a block device that cannot take the hole standing for a discard
   * where the kernel has no discard command (Linux < 6.12): one without discard, or without the
   * write zeroes the hole is (blkdev_fallocate issues it BLKDEV_ZERO_NOFALLBACK: a SATA SSD
   * without WRITE SAME has discard but not that). 0 if sysfs now says it has both. The hole is
   * checked for its range before the device: an empty, misaligned or out-of-range discard failed
   * EINVAL and an in-range one EOPNOTSUPP (Linux 5.10 guest), where the command asks the device
   * first and says EOPNOTSUPP for all, libblkio's order (ENOTSUP for what the device lacks, then
   * EINVAL). Nor may a hole the device refuses be sent: the kernel drops the range's page cache,
   * dirty pages included, before it finds out, and a completed buffered write was lost. sysfs is
   * read at each such discard (a device can get both back: a loop device whose sector size is
   * set again); one with both costs nothing.
   */
  #noHole(): number {
    this.#readHoleLimits();
    const t = this.#target;
    if (!t.discards) return this.#fail(ENOTSUP, NO_DISCARD_MSG);
    return t.supportsWriteZeroesWithoutFallback ? 0 : this.#fail(ENOTSUP, NO_HOLE_MSG);
  }

  /**
   * Updates what the target is known to have for a discard's hole or a NO_FALLBACK zeroing
   * (TargetInfo.discards, supportsWriteZeroesWithoutFallback) from sysfs. When sysfs cannot be
   * read (at the fd limit) what was known stays. Never throws: it runs in the middle of a reap
   * too (#askDevice).
   */
  #readHoleLimits(): void {
    const t = this.#target, dev = t.blockDevice;
    let limits = null;
    try {
      limits = dev === null ? null : readBlockLimits(this.#native, dev.major, dev.minor);
    } catch {
      return;
    }
    if (limits === null) return;
    t.discards = limits.discardMaxBytes > 0;
    t.supportsWriteZeroesWithoutFallback = limits.writeZeroesMaxBytes > 0;
  }

  #fail(errno: number, why: string): number {
    this.#why = why;
    return errno;
  }

  /** Writes the SQE for what remains of request `slot`. */
  #prep(slot: number): void {
    const ring = this.#ring;
    const sq = ring.sqes;
    const i = ring.nextSqe();
    const s = this.#slots, b = slot * SLOT_NUMBERS;
    const done = s[b + S_DONE];
    const start = s[b + S_START] + done;
    const remaining = s[b + S_LEN] - done;
    const flags = s[b + S_FLAGS];
    switch (s[b + S_OP]) {
      case Op.Read: {
        const addr = s[b + S_ADDR] + done;
        // Looked up at each preparation, so a resubmission after an unmap goes plain.
        const fixed = this.#fixedHigh === 0 ? -1 : this.#fixedIndex(addr, remaining);
        if (fixed >= 0) prepReadFixed(sq, i, 0, addr, remaining, start, fixed);
        else if (this.#supportsRead) prepRead(sq, i, 0, addr, remaining, start);
        else prepReadv(sq, i, 0, this.#oneIovec(slot, addr, remaining), 1, start);
        setRwFlags(sq, i, this.#rwFlags);
        break;
      }
      case Op.Write: {
        const addr = s[b + S_ADDR] + done;
        const fixed = this.#fixedHigh === 0 ? -1 : this.#fixedIndex(addr, remaining);
        if (fixed >= 0) prepWriteFixed(sq, i, 0, addr, remaining, start, fixed);
        else if (this.#supportsWrite) prepWrite(sq, i, 0, addr, remaining, start);
        else prepWritev(sq, i, 0, this.#oneIovec(slot, addr, remaining), 1, start);
        setRwFlags(sq, i, this.#rwFlags | (flags & this.#fuaDsync ? RWF_DSYNC : 0));
        break;
      }
      case Op.Readv: {
        const n = this.#fillIovecs(slot, done);
        prepReadv(sq, i, 0, this.#iovAddr[slot], n, start);
        setRwFlags(sq, i, this.#rwFlags);
        break;
      }
      case Op.Writev: {
        const n = this.#fillIovecs(slot, done);
        prepWritev(sq, i, 0, this.#iovAddr[slot], n, start);
        setRwFlags(sq, i, this.#rwFlags | (flags & this.#fuaDsync ? RWF_DSYNC : 0));
        break;
      }
      case Op.Flush:
        prepFdatasync(sq, i, 0);
        break;
      case Op.WriteZeroes:
        // Phase 0 zeroes; 1 is the flush that emulates FUA once the zeroing has completed; 3 the
        // write-back of the range before a zeroing that must not fall back (#firstZeroPhase);
        // 5 zeroes again with fallback after the device refused a zeroing without (#finish).
        // 6 drops the page cache a refused zeroing left wrong (#finish). 8 zeroes a FUSE file
        // by range (TargetInfo.zeroByRange), 7 punches the hole after the daemon refused that.
        // 9 is phase 3 on a second open file of the target (#writeBack).
        if (s[b + S_PHASE] === 1) prepFdatasync(sq, i, 0);
        else if (s[b + S_PHASE] === 3 || s[b + S_PHASE] === 9) {
          if (this.#prepWriteBack(slot, i)) return;
        } else if (s[b + S_PHASE] === 6) {
          // The whole device (length 0: to its end): DONTNEED drops only folios that lie wholly
          // inside its range, and a large one with zeroes may reach far beyond the request's.
          // It drops clean pages only, and a refusal from the kernel comes once per device
          // (later requests are refused before they are sent), so the cost stays small.
          prepFadvise(sq, i, 0, 0, 0, POSIX_FADV_DONTNEED);
        } else {
          const phase = s[b + S_PHASE];
          const mode = phase === 5 || phase === 8
            ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
            : phase === 7
            ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            : this.#zeroMode(flags);
          prepFallocate(sq, i, 0, mode, s[b + S_START], s[b + S_LEN]);
        }
        break;
      case Op.Discard:
        // A block device: the discard command (phase 2), as long as the kernel has it. libblkio's
        // fallocate mode never reached one: vfs_fallocate has always refused
        // FALLOC_FL_NO_HIDE_STALE (EOPNOTSUPP, for files too), so every discard of a block device
        // failed, on any kernel (a review found the kernel's own account of it).
        if (this.#target.isBlockDevice && this.#cmdDiscard) {
          s[b + S_PHASE] = 2;
          prepCmdDiscard(sq, i, 0, s[b + S_START], s[b + S_LEN]);
          // Straight to io-wq, which copies the SQE at submission. The kernel tries a discard
          // command without waiting first; when the device's request slots are all busy it
          // retries from io-wq (io_uring_cmd_issue_blocking), reading the SQE from the ring
          // without a copy (Linux 6.18; reported upstream for 6.19), after this slot was reused:
          // the discard failed EINVAL, and had the slot held another discard it would have
          // discarded that range instead (discard hunt: 1,224 EINVAL in 34,236 discards beside
          // 200 writes in flight; none with this).
          setSqeFlags(sq, i, this.#sqeFlags | IOSQE_ASYNC);
          setUserData(sq, i, slot);
          return;
        } else if (this.#target.isBlockDevice) {
          // Before Linux 6.12 a block device's discard is out of io_uring's reach; what comes
          // nearest is a hole (phase 4), which blkdev_fallocate makes a write zeroes that may
          // unmap and never writes zero buffers (BLKDEV_ZERO_NOFALLBACK): the range is
          // deallocated where the device can, and reads back zeroes, more than a discard
          // promises. Like a NO_FALLBACK write zeroes it drops the range's page cache, dirty
          // pages included, before the device can refuse it: so the range is written back first
          // (phase 3 or 9, as the discard command does itself), sysfs is asked after that
          // (#holeAfterWriteBack), and a refusal drops the pages it left wrong (phase 6, #finish).
          // Not for a length of 0 (EINVAL), whose write-back would reach the end of the device.
          const phase = s[b + S_PHASE];
          if (phase === 6) prepFadvise(sq, i, 0, 0, 0, POSIX_FADV_DONTNEED);
          else if (phase === 4 || s[b + S_LEN] === 0) {
            s[b + S_PHASE] = 4;
            const at = this.#holeStart(s[b + S_START], s[b + S_LEN]);
            prepFallocate(sq, i, 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, at, s[b + S_LEN]);
          } else if (this.#prepWriteBack(slot, i)) return;
        } else {
          // A file keeps libblkio's mode, and its refusal (writeZeroes punches a file's holes).
          s[b + S_PHASE] = 0;
          const mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_NO_HIDE_STALE | FALLOC_FL_KEEP_SIZE;
          prepFallocate(sq, i, 0, mode, s[b + S_START], s[b + S_LEN]);
        }
        break;
    }
    setSqeFlags(sq, i, this.#sqeFlags);
    setUserData(sq, i, slot);
  }

  /**
   * Where the hole that stands for a block device's discard starts: at `start`, or at the end of
   * the device when the range reaches past it. blkdev_fallocate (KEEP_SIZE) cuts such a range at
   * the end and deallocates the part inside, returning 0, where the discard command refuses it
   * whole (EINVAL): a discard across the end succeeded on kernels before 6.12 only (Linux 6.1
   * guest). A hole starting at the end is refused EINVAL with nothing done, as the command does,
   * and #explain says why from the request's own range. The device's size is read at each such
   * discard (a loop device can be resized); unreadable, the range goes as it is.
   */
  #holeStart(start: number, len: number): number {
    let capacity: number;
    try {
      capacity = Number(seekEnd(this.#native, this.#fd));
    } catch {
      return start;
    }
    return start + len > capacity ? capacity : start;
  }

  /**
   * The first phase of a write zeroes: 3 (write the range's dirty pages back first) on a block
   * device when the request must not fall back, else 0. fallocate on a block device drops the
   * range's page cache, dirty pages included, before it zeroes: when the zeroing then fails (a
   * device that lost write zeroes), completed writes not yet written back were gone, and reads
   * found the older data. Written back first, they stay. On an O_DIRECT instance too: the page
   * cache is the device's, and the writes lost were another writer's buffered ones (a refused
   * zeroing from an O_DIRECT instance dropped them). A request that may fall back needs
   * nothing: its range ends up zeroed (#finish retries it). Nor one of length 0 (EINVAL), whose
   * write-back would reach to the end of the device.
   */
  #firstZeroPhase(flags: number, len: number): number {
    const t = this.#target;
    if (t.zeroByRange && (flags & ReqFlags.NO_UNMAP) === 0) return 8;
    return t.isBlockDevice && (flags & ReqFlags.NO_FALLBACK) !== 0 && len > 0 ? 3 : 0;
  }

  /**
   * Writes SQE `i` as the write-back of request `slot`'s range (phase 3 on the target's fd, 9 on
   * a second file: #writeBack) before a zeroing or hole that drops the range's page cache. Returns
   * true when it set the SQE's flags and user data itself (9), for the caller to return.
   */
  #prepWriteBack(slot: number, i: number): boolean {
    const s = this.#slots, b = slot * SLOT_NUMBERS, sq = this.#ring.sqes;
    // Which file the wait runs on is kept with the request (9): #finish treats its error by
    // that, not by whether a second file exists by the time it completes (review).
    const fd = this.#writeBack();
    prepSyncFileRange(sq, i, fd < 0 ? 0 : fd, s[b + S_START], s[b + S_LEN]);
    if (fd < 0) {
      s[b + S_PHASE] = 3;
      return false;
    }
    s[b + S_PHASE] = 9;
    setSqeFlags(sq, i, this.#sqeFlags & ~IOSQE_FIXED_FILE);
    setUserData(sq, i, slot);
    return true;
  }

  /**
   * The fd phase 3 waits on (#writeBackFd), or -1 to use the target's own. After a shortage
   * (EMFILE, ENFILE, ENOMEM) it is tried again next time: a passing shortage must not bring the
   * target's fd back for good (review).
   */
  #writeBack(): number {
    if (this.#writeBackFd === -1) {
      const n = this.#native;
      const fd = n.libc.open(cString(n, `/proc/self/fd/${this.#fd}`), O_RDWR | O_CLOEXEC, 0);
      if (fd >= 0) this.#writeBackFd = fd;
      else {
        const errno = n.errno();
        if (!isShortage(errno)) this.#writeBackFd = -2;
      }
    }
    return this.#writeBackFd < 0 ? -1 : this.#writeBackFd;
  }

  /** fallocate mode for write zeroes, as libblkio chooses it. */
  #zeroMode(flags: number): number {
    const noUnmap = (flags & ReqFlags.NO_UNMAP) !== 0;
    if (this.#target.isBlockDevice) {
      // PUNCH_HOLE on a block device issues REQ_OP_WRITE_ZEROES without fallback (unmapping);
      // ZERO_RANGE keeps blocks allocated and may fall back to writing zeroes. A NO_FALLBACK
      // request queued before the device was found to lack write zeroes (#finish) must still
      // not fall back: it goes without, and fails.
      if (
        !noUnmap && (this.#target.supportsWriteZeroesWithoutFallback || (flags & ReqFlags.NO_FALLBACK) !== 0)
      ) {
        return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
      }
      return FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    }
    // Regular files: the size past EOF is unspecified, as libblkio documents. (FUSE files may
    // zero by range first: phase 8, #firstZeroPhase.)
    return noUnmap ? FALLOC_FL_ZERO_RANGE : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  }

  #iovecMemory(slot: number, count: number): Uint32Array {
    let mem = this.#iovMem[slot];
    if (mem === null || mem.length < count * 4) {
      const bytes = this.#native.alloc(Math.max(count, 4) * 16);
      mem = new Uint32Array(bytes.buffer);
      this.#iovMem[slot] = mem;
      this.#iovAddr[slot] = this.#native.addressOf(bytes.buffer as ArrayBuffer);
    }
    return mem;
  }

  #oneIovec(slot: number, addr: number, len: number): number {
    const mem = this.#iovecMemory(slot, 1);
    setIovec(mem, 0, addr, len);
    return this.#iovAddr[slot];
  }

  /** Writes the slot's iovecs minus the first `skip` bytes; returns how many. */
  #fillIovecs(slot: number, skip: number): number {
    const iov = this.#refs[slot * SLOT_REFS + R_IOV] as readonly Uint8Array[];
    const mem = this.#iovecMemory(slot, iov.length);
    let n = 0;
    for (let k = 0; k < iov.length; k++) {
      const b = iov[k];
      const len = byteLengthOf(b);
      if (skip >= len && len > 0) {
        skip -= len;
        continue;
      }
      if (len === 0) continue;
      setIovec(mem, n++, bufferAddress(this.#native, b) + skip, len - skip);
      skip = 0;
    }
    return n;
  }

  reap(out: Completion[], n0: number, max: number): number {
    const waited = this.#waited;
    this.#waited = false;
    const n = this.#reapCq(out, n0, max);
    const ring = this.#ring;
    if (n === max || this.completions.badOut >= 0) return n;
    // Completions the kernel kept aside when the CQ was full come back only in an io_uring_enter
    // with GETEVENTS, which a caller polling with doIo(min 0) never makes once nothing is left to
    // submit: they would never come back to it. In flight is capped at the CQ size, so that only
    // guards against completions this queue did not count on (the retry's pause and probe did not
    // take slots once, and lost reads that way; review). liburing's peek does the same. Nor
    // does the kernel signal the completion eventfd for such a completion (Linux 6.18, tried:
    // only the flush does), so an event loop waiting on it relies on the cap all the more.
    if (!ring.cqOverflowed()) {
      // An empty CQ may only mean that completion task work waits for this thread to enter the
      // kernel: a caller polling with doIo(min 0) would otherwise wait for the next timer tick
      // (COOP_TASKRUN) or forever (DEFER_TASKRUN). With SQEs pending, the io_uring_enter that
      // submits them runs it anyway (with DEFER_TASKRUN because enter() then asks for GETEVENTS).
      if (!ring.taskrunFlag || this.pendingSubmit > 0 || !ring.taskWorkPending()) return n;
      // With DEFER_TASKRUN, work still waiting after a wait that reaped something is left to
      // the next call's entry: a thread that waits in doIo(min > 0) would otherwise pay a system
      // call per turn for it (-20% IOPS at iodepth 32 on ext4 buffered writes, measured).
      // Otherwise all of it is run, so that doIo(min 0) hands back everything that completed: a
      // caller draining until it returns fewer than it could take leaves nothing behind (see
      // Ring.runTaskWork).
      if (ring.deferTaskrun && waited && n > n0) return n;
    }
    ring.runTaskWork();
    return this.#reapCq(out, n, max);
  }

  /** Moves CQEs into `out[n..max)`; returns the new `n`. */
  #reapCq(out: Completion[], n: number, max: number): number {
    const ring = this.#ring;
    let head = ring.cqHead();
    const tail = ring.cqTail();
    if (head === tail) return n;
    const cqes = ring.cqes, res = ring.cqesRes, mask = ring.cqMask, cap = this.#cap;
    while (head !== tail && n < max) {
      const o = (head & mask) << 2;
      const slot = cqes[o];
      const r = res[o + 2];
      head = (head + 1) >>> 0;
      if (slot >= cap) continue;
      if (this.#slots[slot * SLOT_NUMBERS + S_OP] >= OP_AUX) {
        // A probe that completed 0: io-wq had a worker thread for the request behind it.
        if (r >= 0 && this.#slots[slot * SLOT_NUMBERS + S_OP] === OP_PROBE) {
          this.#workerSeen(this.#slots[slot * SLOT_NUMBERS + S_START]);
        }
        this.#aux--;
        this.#release(slot);
        continue;
      }
      const ret = this.#finish(slot, r);
      if (ret === RESUBMITTED) continue;
      const userData = this.#refs[slot * SLOT_REFS + R_UD];
      const msg = ret < 0 ? this.#explain(slot, ret) : null;
      this.#release(slot);
      // An unwritable out entry: the completion went to the backlog, and this CQE is consumed.
      if (!this.completions.deliver(out, n, userData, ret, msg)) break;
      n++;
    }
    ring.setCqHead(head);
    return n;
  }

  /**
   * A NO_FALLBACK write zeroes whose range was written back: the zeroing goes now, or it is
   * refused. The device may have lost write zeroes since connect (another request found out,
   * here or in another process). Sent all the same, the kernel would drop the range's page cache
   * before it refused, and leave zeroes the device does not hold wherever the cache could not be
   * dropped (#finish: a large folio, pages busy). Asked of sysfs, once per such request (rare),
   * it is refused without that. Apart from #finish, which runs for every completion, so that
   * this rare path does not make it too long for V8 to inline. When sysfs cannot be read (no fd
   * free) what was known stays, and the zeroing goes, as a discard's hole does
   * (#holeAfterWriteBack): a refusal is taken care of after (#finish, phase 6). Taken for "no",
   * that passing shortage failed this request and every later NO_FALLBACK one with ENOTSUP for
   * the life of the queue (#unsupported never asks again), on a device that has write zeroes
   * (review).
   */
  #zeroAfterWriteBack(slot: number): number {
    const t = this.#target;
    // A zeroing that may fall back, written back after an EBUSY (#finish): it goes again in phase
    // 0, whose mode (#zeroMode) follows what is known by now: after a refused hole and an EBUSY of
    // its fallback (phase 5), ZERO_RANGE at once, not the hole again.
    if ((this.#slots[slot * SLOT_NUMBERS + S_FLAGS] & ReqFlags.NO_FALLBACK) === 0) {
      this.#slots[slot * SLOT_NUMBERS + S_PHASE] = 0;
      this.#requeue(slot);
      return RESUBMITTED;
    }
    if (t.supportsWriteZeroesWithoutFallback) this.#readHoleLimits();
    if (!t.supportsWriteZeroesWithoutFallback) return -ENOTSUP;
    this.#slots[slot * SLOT_NUMBERS + S_PHASE] = 0;
    this.#requeue(slot);
    return RESUBMITTED;
  }

  /**
   * A discard's range was written back (phase 3 or 9): its hole goes now (phase 4), or it is
   * refused if the device has lost discard or write zeroes since it was last asked (another
   * instance or process found out; a disk after a failed WRITE SAME). As #zeroAfterWriteBack:
   * sent all the same, the kernel would drop the range's page cache before it refused. When
   * sysfs cannot be read the hole goes, and a refusal is taken care of after (#holeRefused).
   */
  #holeAfterWriteBack(slot: number): number {
    this.#readHoleLimits();
    const t = this.#target;
    if (!t.discards || !t.supportsWriteZeroesWithoutFallback) return -ENOTSUP;
    this.#slots[slot * SLOT_NUMBERS + S_PHASE] = 4;
    this.#requeue(slot);
    return RESUBMITTED;
  }

  /**
   * The completion value, RESUBMITTED, or 0 to let the kernel's stand, of a block device's hole
   * that stood for a discard (phase 4) and failed with `res`. From a device that lost discard or
   * write zeroes since it was last asked (sysfs, read now) it answers as the device does from then
   * on, whatever the range (ENOTSUP, #noHole): an EINVAL for the range comes before the kernel
   * looks at the device. EOPNOTSUPP is the device's refusal of the zeroing, after the kernel
   * dropped the range's page cache and zeroed, in the cache, the parts of folios the range only
   * partly covers: the device's clean cache is dropped then (phase 6; the range was written back
   * first), and the request completes with the refusal, as a NO_FALLBACK write zeroes does.
   * Apart from #finish, as #zeroAfterWriteBack is.
   */
  #holeRefused(slot: number, res: number): number {
    if (res !== -ENOTSUP && res !== -EINVAL) return 0;
    this.#readHoleLimits();
    const t = this.#target;
    if (res === -EINVAL) return t.discards && t.supportsWriteZeroesWithoutFallback ? 0 : -ENOTSUP;
    // The kernel's answer, whatever sysfs said.
    t.supportsWriteZeroesWithoutFallback = false;
    const s = this.#slots, b = slot * SLOT_NUMBERS;
    s[b + S_DONE] = res;
    s[b + S_PHASE] = 6;
    this.#requeue(slot);
    return RESUBMITTED;
  }

  /** The completion value of request `slot` given CQE result `res`, or RESUBMITTED. */
  #finish(slot: number, res: number): number {
    const s = this.#slots, b = slot * SLOT_NUMBERS;
    const op = s[b + S_OP], phase = s[b + S_PHASE];
    // Phases are a write zeroes' or discard's: a read, write or flush is always in phase 0.
    if (phase !== 0) {
      // The page cache dropped after a refused zeroing or hole: the result is the refusal. A
      // drop io-wq cancelled (no worker thread for it, or cancel()) never ran, and the cache
      // still held zeroes the device does not: it goes again, a cancel() notwithstanding (the
      // refusal is the request's result either way, and what stopping would leave is worse).
      // Where it cannot go again (destroy's drain, which makes no retries; or every try
      // cancelled), it is done here, in this thread: a cache dropped late beats data lost.
      if (phase === 6) {
        if (res === -ECANCELED) {
          s[b + S_FLAGS] &= ~F_CANCEL_ASKED;
          if (this.#retryNoWorker(slot)) return RESUBMITTED;
          this.#native.libc.posix_fadvise(this.#fd, 0n, 0n, POSIX_FADV_DONTNEED);
        }
        return s[b + S_DONE];
      }
      // The write-back before a NO_FALLBACK zeroing or a discard's hole (phase 3): on a file of
      // its own, its error is any earlier write-back's, which the target's fd reports at the
      // next flush; the zeroing goes ahead. On the target's fd (no second file) the error was
      // taken from that fd's flush, so this request must report it. Not after an ECANCELED: the
      // write-back never ran (io-wq had no worker thread for it, or cancel() asked), and the
      // zeroing sent without it could drop completed writes; it goes again (#retryNoWorker), or
      // the request fails.
      if (phase === 9 ? res !== -ECANCELED : phase === 3 && res >= 0) {
        return op === Op.Discard ? this.#holeAfterWriteBack(slot) : this.#zeroAfterWriteBack(slot);
      }
    }
    if (res < 0) {
      // EOPNOTSUPP from the discard command: a kernel before 6.12 has no block device commands,
      // and says so whatever the device; a newer one means the device has no discard (now: dm
      // and loop devices can lose it). Only the first turns this queue over to fallocate, this
      // request too; sysfs, read now, tells them apart.
      if (res === -ENOTSUP && op === Op.Discard && s[b + S_PHASE] === 2 && this.#askDevice(deviceDiscards)) {
        this.#cmdDiscard = false;
        this.#requeue(slot);
        return RESUBMITTED;
      }
      const t = this.#target;
      if (op === Op.Discard && s[b + S_PHASE] === 4) {
        const refused = this.#holeRefused(slot, res);
        if (refused !== 0) return refused;
      }
      // ZERO_RANGE on a FUSE file (phase 8) refused: the hole libblkio would punch (phase 7),
      // from now on at once. Not after ENOSPC (a thin image without room for the range): a
      // daemon that ignores holes would then report a zeroing that left the old data (review).
      if (res === -ENOTSUP && op === Op.WriteZeroes && s[b + S_PHASE] === 8) {
        t.zeroByRange = false;
        s[b + S_PHASE] = 7;
        this.#requeue(slot);
        return RESUBMITTED;
      }
      // EOPNOTSUPP from a zeroing without NO_UNMAP: the device no longer does write zeroes (a
      // loop device turns it off after a failure, a disk after a failed WRITE SAME), though it
      // did at connect. Known from now on. A request that may fall back goes again with
      // ZERO_RANGE (phase 5, once), which does; libblkio failed it outright. Decided from the
      // request's own flags, not from what is known now: other requests sent the same way may
      // complete after the first that told.
      if (
        res === -ENOTSUP && op === Op.WriteZeroes && s[b + S_PHASE] === 0 && t.isBlockDevice &&
        (s[b + S_FLAGS] & ReqFlags.NO_UNMAP) === 0
      ) {
        t.supportsWriteZeroesWithoutFallback = false;
        if ((s[b + S_FLAGS] & ReqFlags.NO_FALLBACK) === 0) {
          s[b + S_PHASE] = 5;
          this.#requeue(slot);
          return RESUBMITTED;
        }
        // Before it tried, the kernel dropped the range's page cache and zeroed, in the cache,
        // the parts of the folios the range only partly covers: readers saw zeroes the device
        // does not hold. A folio may be large (a large buffered write makes them), and then
        // "partly" holds for a page-aligned range too: with a split that failed, zeroes stayed
        // cached from a folio boundary inside the range on (fuzzer, loop-4k: the device held
        // the data, its cache zeroes). Those folios are dropped too (clean: phase 3 wrote them
        // back), and the request then completes with this refusal.
        s[b + S_DONE] = res;
        s[b + S_PHASE] = 6;
        this.#requeue(slot);
        return RESUBMITTED;
      }
      // EBUSY from a block device's zeroing: before Linux 5.15 blkdev_fallocate ends by dropping
      // the range's page cache once more (invalidate_inode_pages2_range), after the device was
      // zeroed, and fails EBUSY where a page of the range is dirty. The kernel keeps a dirty page
      // the range covers only in part (zeroing that part in the cache), so a write zeroes of
      // part of a page written buffered and not yet written back failed though it was done
      // (Linux 5.10 guest; 5.15 and later take the invalidate lock instead and do not check
      // again). The range is written back (phase 3 or 9) and the zeroing goes again, once: the
      // pages are clean then, and zeroing twice is harmless. A second EBUSY (a page dirtied
      // again meanwhile, or the device held exclusively by someone else, which fails it before
      // it zeroes) is the result.
      if (
        res === -EBUSY && op === Op.WriteZeroes && (phase === 0 || phase === 5) && t.isBlockDevice &&
        (s[b + S_FLAGS] & F_BUSY_RETRIED) === 0
      ) {
        s[b + S_FLAGS] |= F_BUSY_RETRIED;
        s[b + S_PHASE] = 3;
        this.#requeue(slot);
        return RESUBMITTED;
      }
      if (res === -ECANCELED && this.#retryNoWorker(slot)) return RESUBMITTED;
      return res;
    }
    if (op <= Op.Writev) {
      const remaining = s[b + S_LEN] - s[b + S_DONE];
      if (res === remaining) {
        if ((s[b + S_FLAGS] & this.#fuaFlush) === 0) return 0;
        // The write is whole; the request completes with the fdatasync that makes it durable
        // (TargetInfo.fuaByFlush). Reads never carry FUA.
        s[b + S_OP] = Op.Flush;
        this.#requeue(slot);
        return RESUBMITTED;
      }
      if (res > remaining) return -EIO;
      if (res > 0) {
        s[b + S_DONE] += res;
        // A short O_DIRECT read of a file stopped at its end, which need not be block-aligned:
        // the rest would go again at a misaligned offset, EINVAL once the file has grown past
        // it meanwhile (fuzzer). At the time of the read that rest lay past the end: zeroes.
        // Only where the file system refuses such offsets: elsewhere (FUSE, NFS) a short read
        // may stop before the end, and the rest must go again (review).
        const t = this.#target;
        if (
          t.directFileAligned && (op === Op.Read || op === Op.Readv) &&
          (s[b + S_START] + s[b + S_DONE]) % t.requestAlignment !== 0
        ) {
          this.#zeroRest(slot);
          return 0;
        }
        // Short read or write: go again for the rest.
        this.#requeue(slot);
        return RESUBMITTED;
      }
      if (this.#target.canGrow && (op === Op.Read || op === Op.Readv)) {
        this.#zeroRest(slot);
        return 0;
      }
      return -EIO;
    }
    const zeroed = op === Op.WriteZeroes && (phase === 0 || phase === 5 || phase === 7 || phase === 8);
    if (zeroed && (s[b + S_FLAGS] & ReqFlags.FUA) !== 0) {
      s[b + S_PHASE] = 1;
      this.#requeue(slot);
      return RESUBMITTED;
    }
    return 0;
  }

  /**
   * An ECANCELED that {@link cancel} did not ask for: io-wq could not start its first worker
   * thread for the request (the process at its thread limit: a pids cgroup's pids.max,
   * RLIMIT_NPROC; or out of memory), and cancelled the work waiting for one. The request goes
   * again, up to NO_WORKER_RETRIES times. Safe: the kernel cancels only work still waiting in
   * io-wq's list (io_acct_cancel_pending_work), which never started there, and the bytes an
   * inline attempt moved before the request went to io-wq come back as a short count, not as
   * ECANCELED (io_rw_fail adds them); every request here may go again anyway (a write of the
   * same bytes, a flush, a zeroing, a hole, a discard). No spin: each try waits for the kernel's
   * own four attempts (~48 ms). Not while the queue is being destroyed: its drain waits
   * for what the kernel has, and submits no new request, only the next step of one in the kernel
   * (prepared as its CQE is reaped); ten more tries would keep it waiting.
   *
   * The CQE of such a cancel is the one a file system's own ECANCELED gives (a FUSE daemon may
   * answer any errno): io-wq fails the work with -ECANCELED through the same completion path,
   * flags 0. So the first try of a file's request that can have one goes behind a probe
   * (#pauseFirst) that needs a worker of the same io-wq pool; when the probe got one and the try
   * still came back ECANCELED, the file system said it, and the request fails then, after one
   * more try, not ten (a FUSE daemon answering ECANCELED took 0.5-1 s and 11 requests, and its
   * errorMsg blamed a thread limit). Once a request: at a held limit each probe costs Linux
   * 6.18's own ~48 ms of attempts (probing every try held the requests 1.5 s, not 1), and a
   * file system's ECANCELED at a thread limit is retried as before.
   */
  #retryNoWorker(slot: number): boolean {
    const s = this.#slots, b = slot * SLOT_NUMBERS, f = s[b + S_FLAGS];
    if (
      this.#destroyed || (f & (F_CANCEL_ASKED | F_WORKER_SEEN)) !== 0 ||
      (f & F_NO_WORKER_MASK) >= NO_WORKER_RETRIES * F_NO_WORKER
    ) return false;
    s[b + S_FLAGS] = f + F_NO_WORKER;
    if (this.#pauseFirst(this.#target.isBlockDevice || (f & F_PROBED) !== 0 ? -1 : slot)) this.#prep(slot);
    else this.#requeue(slot);
    return true;
  }

  /**
   * Writes a pause of NO_WORKER_PAUSE_NS hard-linked to the next SQE (a TIMEOUT: a kernel timer,
   * which needs no worker thread; the next request starts when it expires), and returns true; or
   * returns false, without a pause, where the next SQE would not be the request's (resubmissions
   * waiting, fewer than 2 free SQEs), on a poll queue (IOPOLL rings take no TIMEOUT), or without a
   * free slot for it. The pause and the probe take slots of their own (#takeAux): their CQEs count
   * against the CQ size. Without, every slot busy with such retries posted more CQEs than the CQ
   * holds, and the kernel kept the rest aside until an io_uring_enter with GETEVENTS, which a
   * caller polling with doIo(min 0) never makes once nothing is left to submit: reads that had
   * completed never came back to it (review; 0-6 of 16 after 250 ms).
   *
   * With `probeSlot` >= 0 (and a third SQE free) a probe goes first, hard-linked too: a NOP sent
   * to io-wq (IOSQE_ASYNC), which completes 0 only where io-wq has or can start a worker thread,
   * and which marks request `probeSlot` F_WORKER_SEEN then (#workerSeen). A NOP, like every
   * request to a regular file, is bounded work (io_prep_async_work), so it asks the pool the try
   * will use. Not for a block device: some 5.x kernels sent its requests to the unbounded pool
   * (before io_prep_async_work made an exception of S_ISBLK), and the block layer has no
   * ECANCELED of its own to tell apart.
   */
  #pauseFirst(probeSlot: number): boolean {
    const ring = this.#ring;
    if (this.isPollQueue || this.#resubmitCount > 0 || ring.sqSpace() < 2 || this.#freeTop === 0) {
      return false;
    }
    if (this.#pauseTs === null) {
      // struct __kernel_timespec { tv_sec, tv_nsec }, read by the kernel at submission only.
      this.#pauseTs = this.#native.alloc(16);
      new DataView(this.#pauseTs.buffer).setBigInt64(8, BigInt(NO_WORKER_PAUSE_NS), true);
    }
    const sq = ring.sqes;
    if (probeSlot >= 0 && ring.sqSpace() >= 3 && this.#freeTop >= 2) {
      this.#slots[probeSlot * SLOT_NUMBERS + S_FLAGS] |= F_PROBED;
      const p = ring.nextSqe();
      prepNop(sq, p);
      setSqeFlags(sq, p, IOSQE_ASYNC | IOSQE_IO_HARDLINK);
      setUserData(sq, p, this.#takeAux(OP_PROBE, probeSlot));
    }
    const i = ring.nextSqe();
    prepTimeout(sq, i, this.#native.addressOf(this.#pauseTs.buffer as ArrayBuffer));
    setSqeFlags(sq, i, IOSQE_IO_HARDLINK);
    setUserData(sq, i, this.#takeAux(OP_PAUSE, -1));
    return true;
  }

  /**
   * Takes a free slot for a cancellation, pause or probe (`op`, OP_AUX) concerning request slot
   * `of`; returns it, the user_data of its SQE.
   */
  #takeAux(op: number, of: number): number {
    const c = this.#free[--this.#freeTop], b = c * SLOT_NUMBERS;
    this.#slots[b + S_USED] = 1;
    this.#slots[b + S_OP] = op;
    this.#slots[b + S_START] = of;
    this.#aux++;
    return c;
  }

  /** A probe for request `slot` completed 0 (#pauseFirst): io-wq had a worker thread for it. */
  #workerSeen(slot: number): void {
    if (slot >= 0 && slot < this.#cap) this.#slots[slot * SLOT_NUMBERS + S_FLAGS] |= F_WORKER_SEEN;
  }

  /**
   * `ask` of the target's block device (sysfs; after a failure, or before a zeroing that must not
   * fall back), false for a file. Never throws: it runs in the middle of a reap, where a throw
   * (sysfs unreadable at the fd limit) lost the CQ head and released slots twice. Unknown counts
   * as no.
   */
  #askDevice(ask: (native: Native, major: number, minor: number) => boolean): boolean {
    const dev = this.#target.blockDevice;
    try {
      return dev !== null && ask(this.#native, dev.major, dev.minor);
    } catch {
      return false;
    }
  }

  /**
   * What the library can tell beyond the errno of failed request `slot` (its errorMsg), or null:
   * the kernel says only EINVAL for misaligned O_DIRECT, EBADF for a write on a read-only
   * instance, EOPNOTSUPP for a discard or write zeroes the target lacks. Failures only, so it
   * costs the request path nothing.
   */
  #explain(slot: number, ret: number): string | null {
    const s = this.#slots, b = slot * SLOT_NUMBERS, op = s[b + S_OP], t = this.#target;
    if (ret === -ECANCELED) {
      // Not one the caller cancelled: it would have read like one, with nothing to say why.
      const f = s[b + S_FLAGS];
      if ((f & F_CANCEL_ASKED) !== 0) return null;
      if ((f & F_WORKER_SEEN) !== 0) {
        return "The file system failed this request with ECANCELED: io_uring had a worker thread for its " +
          "last try, so it was not cancelled for want of one";
      }
      const n = (f & F_NO_WORKER_MASK) / F_NO_WORKER + 1, tries = n === 1 ? "1 try" : `${n} tries`;
      return `io_uring could not start a worker thread for this request, and cancelled it (${tries}): ` +
        "the process may be at its thread limit (a pids cgroup's pids.max, as docker --pids-limit or " +
        "systemd's TasksMax set it, or RLIMIT_NPROC) or short of memory. Buffered writes, flushes, write " +
        "zeroes and a FUSE file's requests need room for one such thread per thread submitting them";
    }
    if (ret === -EBADF && op !== Op.Read && op !== Op.Readv && op !== Op.Flush && t.readOnly) {
      return READ_ONLY_MSG;
    }
    if (
      ret === -EPERM && op !== Op.Read && op !== Op.Readv && t.blockDevice !== null &&
      this.#askDevice(deviceReadOnly)
    ) {
      return "The block device is read-only (blockdev --setro, losetup -r): writes fail with EPERM";
    }
    if (ret === -ENOTSUP && (op === Op.Discard || op === Op.WriteZeroes)) {
      const what = op === Op.Discard
        ? "Discard"
        : (s[b + S_FLAGS] & ReqFlags.NO_UNMAP) !== 0
        ? "Write zeroes with NO_UNMAP (FALLOC_FL_ZERO_RANGE)"
        : "Write zeroes";
      if (op === Op.Discard && !t.isBlockDevice) {
        // Every file, not only this one: users asked why (new-user review).
        return "Discard is not supported on regular files: libblkio discards them with fallocate(" +
          "FALLOC_FL_PUNCH_HOLE | FALLOC_FL_NO_HIDE_STALE | FALLOC_FL_KEEP_SIZE), a mode Linux does not " +
          "accept for files. writeZeroes without NO_UNMAP deallocates a file's range (FALLOC_FL_PUNCH_HOLE)";
      }
      // A device with discard, but without the write zeroes its hole needs.
      if (op === Op.Discard && !this.#cmdDiscard && t.discards) return NO_HOLE_MSG;
      return `${what} is not supported by this ${t.isBlockDevice ? "device" : "file system"}`;
    }
    if (ret === -EFBIG && !t.isBlockDevice) {
      // Past s_maxbytes (16 TiB on ext4 with 4 KiB blocks) or RLIMIT_FSIZE; "File too large"
      // alone did not say which end of the request was at fault (new-user review).
      const end = s[b + S_START] + s[b + S_LEN];
      return `The request ends at ${end}, past the largest file allowed here (the file system's ` +
        "limit, or this process's RLIMIT_FSIZE)";
    }
    if (ret === -EBUSY && op === Op.Discard && s[b + S_PHASE] === 2) {
      // BLOCK_URING_CMD_DISCARD writes the range's dirty pages back and drops its page cache
      // first; pages busy with I/O then cannot be dropped, and it fails with EBUSY.
      return "The kernel could not drop the range's page cache: buffered reads or writes of it are in " +
        "flight; retry once they completed";
    }
    if (ret === -EINVAL && (op === Op.Discard || op === Op.WriteZeroes) && s[b + S_LEN] === 0) {
      // fallocate and the block layer refuse an empty range, where a read or write of 0 bytes
      // succeeds: without a word the EINVAL read like a bad offset.
      return `${op === Op.Discard ? "Discard" : "Write zeroes"} of 0 bytes: the kernel refuses an empty ` +
        "range (a read or write of 0 bytes succeeds)";
    }
    if (ret === -EINVAL && (op === Op.Discard || op === Op.WriteZeroes) && t.fallocateAlignment > 1) {
      const a = t.fallocateAlignment, why: string[] = [];
      if (s[b + S_START] % a !== 0) why.push(`start ${s[b + S_START]}`);
      if (s[b + S_LEN] % a !== 0) why.push(`length ${s[b + S_LEN]}`);
      const what = op === Op.Discard ? "Discard" : "Write zeroes";
      if (why.length > 0) {
        return `${what} on a block device needs start and length in multiples of its logical block size ` +
          `(${a}); not a multiple of it: ${why.join(", ")}`;
      }
    }
    if (ret !== -EINVAL && ret !== -EIO && ret !== -ENOSPC) return null;
    // Past the end a write zeroes or discard fails EINVAL like a misaligned one: say which.
    if (op > Op.Writev) return op === Op.Flush ? null : this.#beyondEnd(s[b + S_START], s[b + S_LEN]);
    if (ret !== -EINVAL) return this.#beyondEnd(s[b + S_START], s[b + S_LEN]);
    const iovs = this.#refs[slot * SLOT_REFS + R_IOV] as readonly Uint8Array[] | null;
    // Empty iovecs never reach the kernel (#fillIovecs leaves them out).
    const segments = iovs === null ? 1 : iovs.reduce((n, v) => n + (byteLengthOf(v) > 0 ? 1 : 0), 0);
    const max = iovMax(this.#native);
    if (segments > max) return `${segments} iovecs: more than max-segments (IOV_MAX, ${max})`;
    if (!t.direct) return null;
    // A misaligned request first: the kernel may have served part of it all the same (ext4
    // zero-fills a hole up to the end of the file without checking alignment), and its rest
    // then failed, which is still the request's fault, not the file system's.
    const misaligned = this.#misalignment(
      s[b + S_START],
      s[b + S_LEN],
      iovs === null ? s[b + S_ADDR] : 0,
      iovs,
    );
    if (misaligned !== null) return misaligned;
    const done = s[b + S_DONE], a = t.requestAlignment;
    const at = s[b + S_START] + done, rest = s[b + S_LEN] - done;
    if (done > 0 && (at % a !== 0 || rest % a !== 0)) {
      // The rest of a transfer cut short off a block boundary (a FUSE or NFS server may answer
      // so): the request was aligned, its rest is not.
      return `The device transferred ${done} of ${s[b + S_LEN]} bytes; the rest, ${rest} bytes at ${at}, ` +
        `is not a multiple of request-alignment (${a}), as O_DIRECT needs: this file system cut an ` +
        "O_DIRECT transfer short where it cannot be resumed";
    }
    return this.#beyondEnd(s[b + S_START], s[b + S_LEN]);
  }

  /**
   * Why a read or write reaching past or into the end of a block device failed, or null. Past
   * the end the kernel says only EIO (reads) or ENOSPC (writes), which read like a failing disk
   * (new-user walkthrough). A device whose capacity ends in part of a logical block (a loop
   * device over a file whose size is not a multiple of its sector size) reports that capacity,
   * and nobody can read or write the part block (the kernel fails it EINVAL with O_DIRECT, EIO
   * through the page cache).
   */
  #beyondEnd(start: number, len: number): string | null {
    const t = this.#target, block = t.fallocateAlignment;
    if (!t.isBlockDevice) return null;
    let capacity: number;
    try {
      capacity = Number(seekEnd(this.#native, this.#fd));
    } catch {
      return null;
    }
    const whole = block > 1 ? capacity - capacity % block : capacity;
    if (whole !== capacity && start + len > whole) {
      return `The device's capacity (${capacity}) is not a multiple of its logical block size (${block}): ` +
        `its last ${capacity - whole} bytes, from ${whole}, cannot be read or written (a loop device over ` +
        "a file whose size is not a multiple of its sector size?)";
    }
    if (start + len <= capacity) return null;
    return `The request, ${len} bytes at ${start}, reaches past the end of the device (capacity ${capacity})`;
  }

  /** What of an O_DIRECT request is not a multiple of request-alignment, as a message, or null. */
  #misalignment(start: number, len: number, addr: number, iovs: readonly Uint8Array[] | null): string | null {
    // Every misaligned part, not only the first: the kernel may accept some of them (it checks
    // addresses against the device's DMA alignment, which can be finer than request-alignment).
    // Each with what it is past a multiple, and addresses in hex: a decimal address alone left a
    // new user to work out by how much it was off.
    const a = this.#target.requestAlignment, why: string[] = [];
    let address = false;
    const off = (what: string, v: number, isAddress = false) => {
      if (v % a === 0) return;
      why.push(`${what} ${isAddress ? `0x${v.toString(16)}` : v} (${v % a} past a multiple)`);
      address ||= isAddress;
    };
    off("start", start);
    off("length", len);
    if (iovs === null) off("the buffer's address", addr, true);
    for (let k = 0; iovs !== null && k < iovs.length; k++) {
      if (byteLengthOf(iovs[k]) === 0) continue;
      off(`iovec ${k}'s address`, bufferAddress(this.#native, iovs[k]), true);
      off(`iovec ${k}'s length`, byteLengthOf(iovs[k]));
    }
    if (why.length === 0) return null;
    const list = why.length > 4 ? `${why.slice(0, 4).join(", ")} and ${why.length - 4} more` : why.join(", ");
    return `O_DIRECT needs request-alignment and buf-alignment (${a}); not a multiple of it: ${list}` +
      (address ? BUFFER_REMEDIES.aligned : "");
  }

  /**
   * Whether an O_DIRECT write could be partly done before failing (see
   * TargetInfo.directWritesTear): its start or length is not a multiple of request-alignment,
   * or a memory segment's address or length not one of the device's DMA alignment
   * (TargetInfo.directMemAlignment, which can be finer). Only checked for writes; reads are not
   * worth it (nothing is lost when one fails half-done).
   */
  #tears(start: number, len: number, addr: number, iovs: readonly Uint8Array[] | null): boolean {
    // Nothing to tear: the kernel completes an empty write with 0 before looking at alignment.
    if (len === 0) return false;
    const a = this.#target.requestAlignment, m = this.#target.directMemAlignment;
    if (start % a !== 0 || len % a !== 0) return true;
    if (iovs === null) return addr % m !== 0 || len % m !== 0;
    for (let k = 0; iovs !== null && k < iovs.length; k++) {
      const n = byteLengthOf(iovs[k]);
      if (n > 0 && (bufferAddress(this.#native, iovs[k]) % m !== 0 || n % m !== 0)) return true;
    }
    return false;
  }

  /**
   * A read hit end of file: the rest reads as zeroes. With the built-in fill and lengths: this
   * runs in the middle of a reap, where a subclass's own `fill` that threw left the CQE unreaped
   * and every later doIo threw again.
   */
  #zeroRest(slot: number): void {
    let skip = this.#slots[slot * SLOT_NUMBERS + S_DONE];
    const r = slot * SLOT_REFS;
    const buf = this.#refs[r + R_BUF] as Uint8Array | null;
    if (buf !== null) {
      // Not a buffer detached while in flight (ArrayBuffer.prototype.transfer): fill throws for
      // it, here in the middle of a reap, before the CQ head is stored; every later doIo threw
      // again on the same CQE, and completions reaped before it in that batch were lost, their
      // slots released twice. A detached buffer has no bytes to zero (length 0).
      if (byteLengthOf(buf) > skip) zeroFrom(buf, skip);
      return;
    }
    const iov = this.#refs[r + R_IOV] as readonly Uint8Array[];
    for (let k = 0; k < iov.length; k++) {
      const len = byteLengthOf(iov[k]);
      if (skip >= len) {
        skip -= len;
        continue;
      }
      zeroFrom(iov[k], skip);
      skip = 0;
    }
  }

  #requeue(slot: number): void {
    if (this.#resubmitCount === 0 && this.#ring.sqSpace() > 0) {
      this.#prep(slot);
      return;
    }
    this.#resubmit[(this.#resubmitHead + this.#resubmitCount++) % this.#cap] = slot;
  }

  #flushResubmits(): void {
    while (this.#resubmitCount > 0 && this.#ring.sqSpace() > 0) {
      const slot = this.#resubmit[this.#resubmitHead];
      this.#resubmitHead = (this.#resubmitHead + 1) % this.#cap;
      this.#resubmitCount--;
      this.#prep(slot);
    }
  }

  #release(slot: number): void {
    this.#slots[slot * SLOT_NUMBERS + S_USED] = 0;
    const refs = this.#refs, r = slot * SLOT_REFS;
    refs[r + R_UD] = null;
    refs[r + R_BUF] = null;
    refs[r + R_IOV] = null;
    this.#free[this.#freeTop++] = slot;
  }

  enter(minComplete: number, timeoutNs: number, interruptible = false): number {
    this.#flushResubmits();
    // Requests still parked for resubmission (the SQ was full when their first part completed)
    // count as in flight but the kernel does not have them: waiting for them would never end.
    // Wait for what it has; the next enter hands them over.
    const held = this.inFlight - this.#resubmitCount;
    if (minComplete > held) minComplete = held;
    const ring = this.#ring;
    // DEFER_TASKRUN: completion work runs only in a GETEVENTS entry, so a submitting entry asks
    // for it too (min 0 waits for nothing) rather than leave it to a second system call.
    const flags = minComplete > 0 || this.isPollQueue || ring.deferTaskrun ? IORING_ENTER_GETEVENTS : 0;
    if (minComplete === 0 && !this.isPollQueue && ring.unsubmitted === 0) return 0;
    this.#waited = minComplete > 0;
    // A FUSE file's inline attempt waits for the daemon inside this call (TargetInfo.submitAsync),
    // where no timeout applies: a doIo with a 300 ms timeout returned after the daemon's 4 s
    // (fault hunt), and a stopped daemon would hold it for ever. So a call that must not wait,
    // or not past a deadline, hands such requests to io-wq; a wait without a timeout keeps the
    // inline attempt, which is the fast way (ab_bench: twice the speed for page-cached reads).
    if (
      (minComplete === 0 || timeoutNs >= 0) && this.#target.submitAsync &&
      (this.#sqeFlags & IOSQE_ASYNC) === 0
    ) ring.addFlagsToUnsubmitted(IOSQE_ASYNC);
    if (ring.sqPoll && minComplete > 0 && !interruptible) {
      // Publish the SQEs (waking the kernel thread if it sleeps), then spin before sleeping.
      // Not for an interruptible wait: a signal handled while spinning would not end the sleep
      // that follows.
      const pub = ring.enter(0, 0, -1);
      if (pub < 0) return pub;
      const spun = this.#spin(minComplete, timeoutNs);
      if (spun < 0) return 0;
      if (timeoutNs >= 0) timeoutNs = Math.max(0, timeoutNs - spun);
    }
    const r = ring.enter(minComplete, flags, timeoutNs);
    if (r < 0) return r;
    // A wait that a signal or the timeout cut short does not always say so: the kernel returns
    // the number submitted, or 0 when any CQE is there, and -EINTR / -ETIME only when it
    // submitted nothing and the CQ is empty. Otherwise it returns only once `minComplete` CQEs
    // are in the CQ (everything before was reaped), so fewer means cut short. Reported as
    // -EINTR: doIo waits again, doIoInterruptible tells its caller, and the caller's deadline
    // tells a timeout apart. Unless the kernel stopped submitting at an SQE it failed (more than
    // IOV_MAX iovecs, say): then it returns without waiting at all, and SQEs are left.
    if (minComplete > 0 && ring.cqReady() < minComplete && ring.unsubmitted === 0) return -EINTR;
    return 0;
  }

  /**
   * SQPOLL: the kernel thread posts completions without this thread entering the kernel, so
   * a wait first watches the CQ for up to SQPOLL_SPIN_NS (spin, then block). Returns -1 when
   * `min` CQEs arrived, else the nanoseconds spent.
   */
  #spin(min: number, timeoutNs: number): number {
    const ring = this.#ring;
    if (((ring.cqTail() - ring.cqHead()) >>> 0) >= min) return -1;
    const budget = timeoutNs >= 0 && timeoutNs < SQPOLL_SPIN_NS ? timeoutNs : SQPOLL_SPIN_NS;
    const start = performance.now(), end = start + budget / 1e6;
    let now = start;
    do {
      if (((ring.cqTail() - ring.cqHead()) >>> 0) >= min) return -1;
      now = performance.now();
    } while (now < end);
    return (now - start) * 1e6;
  }

  /**
   * The ring fd when the ring is polled by a kernel thread (SQPOLL), for another queue's ring to
   * share that thread ({@link IoUringQueueOptions.sqpollWqFd}); -1 otherwise. Valid until
   * {@link destroy} (an SQPOLL ring is never remade).
   */
  get sqpollRingFd(): number {
    return this.#ring.sqPoll ? this.#ring.fd : -1;
  }

  /** Whether the ring defers completion work to GETEVENTS entries (DEFER_TASKRUN). */
  get deferTaskrun(): boolean {
    return this.#ring.deferTaskrun;
  }

  useCompletionFd(): void {
    if (this.#fdRegistered || this.completionFd < 0 || this.#destroyed) return;
    if (this.#ring.deferTaskrun && this.#idle()) this.#remakeRing();
    this.#ring.registerEventfd(this.completionFd);
    this.#fdRegistered = true;
    // Requests that completed before the registration signalled nothing: one signal for them
    // all, so a caller waiting on the fd sees them (a spurious wakeup at worst).
    if (this.inFlight > 0) signalEventfd(this.#native, this.completionFd);
  }

  /** Nothing in flight, queued or waiting to be reaped. */
  #idle(): boolean {
    const ring = this.#ring;
    return this.#freeTop === this.#cap && ring.unsubmitted === 0 && this.#resubmitCount === 0 &&
      ring.cqHead() === ring.cqTail() && !ring.taskWorkPending();
  }

  /**
   * Makes the ring again with COOP_TASKRUN instead of DEFER_TASKRUN (a queue on tmpfs), for a
   * queue about to be driven from an event loop through its completion fd. With DEFER_TASKRUN
   * the completions of requests the kernel's workers finish reach the CQ only when this thread
   * enters with GETEVENTS, so every wake-up costs an extra system call before there is anything
   * to reap; with COOP_TASKRUN they are posted as they finish. BlockDevice, in-process A/B at
   * iodepth 32 (when every queue had DEFER_TASKRUN): ext4 buffered writes took 14-17% longer a
   * request on Bun with it, and O_DIRECT reads of a loop device 6-8% longer on Deno
   * (BENCHMARKS.md). Only an idle ring is remade; if that fails the ring stays as it was, which
   * is correct, only slower.
   */
  #remakeRing(): void {
    const old = this.#ring;
    let ring: Ring;
    try {
      ring = new Ring(this.#native, this.#entries, 0, COOP_RING_FLAGS);
    } catch {
      return;
    }
    try {
      if (ring.cqEntries !== old.cqEntries || ring.sqEntries !== old.sqEntries) return ring.close();
      ring.registerFiles([this.#fd]);
      if (this.#fixedTable && ring.registerBufferTable(FIXED_BUFFERS) !== 0) return ring.close();
      for (let k = 0; k < this.#fixedHigh; k++) {
        const start = this.#fixedStart[k], end = this.#fixedEnd[k];
        if (end !== 0 && ring.updateBuffer(k, start, end - start) !== 0) return ring.close();
      }
      ring.setEventfdEnabled(old.eventfdEnabled());
    } catch {
      return ring.close();
    }
    old.close();
    // The new ring was made while the old one held its registered-fd slot: with all 16 of the
    // thread's taken, it had none, and the one just freed is its.
    ring.registerRingFd();
    this.#ring = ring;
  }

  /**
   * From now on, requests to a target whose inline attempt can block (TargetInfo.submitAsync:
   * FUSE) go to io-wq at once. Only for event loops: it doubles the time of a page-cached FUSE
   * read (ab_bench), which a doIo caller, blocking by design, need not pay.
   */
  submitFromEventLoop(): void {
    if (this.#target.submitAsync) this.#sqeFlags = IOSQE_FIXED_FILE | IOSQE_ASYNC;
  }

  setCompletionFdEnabled(enabled: boolean): void {
    if (!this.isPollQueue) this.#ring.setEventfdEnabled(enabled);
  }

  cancel(userData: unknown): boolean {
    // The oldest request carrying userData: slots are reused newest first, so slot order is not age.
    let s = -1, oldest = Infinity;
    for (let k = 0; k < this.#cap; k++) {
      const b = k * SLOT_NUMBERS, age = this.#slots[b + S_USED];
      // Not a cancellation, pause or probe of ours: its R_UD is null, which is no caller's request.
      if (age === 0 || age >= oldest || this.#slots[b + S_OP] >= OP_AUX) continue;
      if (this.#refs[k * SLOT_REFS + R_UD] !== userData) continue;
      s = k;
      oldest = age;
    }
    if (s < 0) return false;
    // Its ECANCELED is then the caller's, not io-wq's (#retryNoWorker): S_FLAGS is set anew
    // when the slot is taken again.
    this.#slots[s * SLOT_NUMBERS + S_FLAGS] |= F_CANCEL_ASKED;
    // IOPOLL rings reject ASYNC_CANCEL; without a free slot or SQE the request simply runs to
    // its end. A slot is only reused after its CQE is reaped, and SQEs are issued in order,
    // so this cancel can never hit a later request in the same slot.
    if (!this.isPollQueue && this.#freeTop > 0 && this.#ring.sqSpace() > 0) {
      const sq = this.#ring.sqes;
      const i = this.#ring.nextSqe();
      prepCancel(sq, i, s);
      setUserData(sq, i, this.#takeAux(OP_CANCEL, s));
    }
    return true;
  }

  /** Frees `slot` of a request (or cancellation) the kernel never received. */
  #dropSlot(slot: number): void {
    if (slot >= this.#cap || this.#slots[slot * SLOT_NUMBERS + S_USED] === 0) return;
    if (this.#slots[slot * SLOT_NUMBERS + S_OP] >= OP_AUX) this.#aux--;
    this.#release(slot);
  }

  usesBuffer(buffer: ArrayBufferLike): boolean {
    // Every free and destroy asks every queue of every live instance: an idle one answers at once
    // (1,000 idle instances of 4,096 entries made a free take 35 ms).
    if (this.#freeTop === this.#cap) return false;
    for (let s = 0; s < this.#cap; s++) {
      const buf = this.#refs[s * SLOT_REFS + R_BUF] as Uint8Array | null;
      if (buf !== null && bufferOf(buf) === buffer) return true;
      const iov = this.#refs[s * SLOT_REFS + R_IOV] as readonly Uint8Array[] | null;
      if (iov !== null) { for (const b of iov) if (bufferOf(b) === buffer) return true; }
    }
    return false;
  }

  /** Whether a request in the kernel uses memory that goes when this thread ends. */
  #usesThreadMemory(): boolean {
    for (let s = 0; s < this.#cap; s++) {
      if (this.#slots[s * SLOT_NUMBERS + S_USED] === 0) continue;
      const buf = this.#refs[s * SLOT_REFS + R_BUF] as Uint8Array | null;
      if (buf !== null && !outlivesThread(bufferOf(buf))) return true;
      const iov = this.#refs[s * SLOT_REFS + R_IOV] as readonly Uint8Array[] | null;
      if (iov !== null) { for (const b of iov) if (!outlivesThread(bufferOf(b))) return true; }
    }
    return false;
  }

  destroy(): void {
    this.#destroyed = true;
    // Requests the kernel never received are dropped, not carried out: as in libblkio, only
    // doIo hands requests over (the drain's enter below would otherwise submit the first
    // ring's worth of them). Nor are parked second parts (FUA fdatasync, the rest of a short
    // transfer) started now. None of their memory is in the kernel's hands.
    const sq = this.#ring.sqes;
    this.#ring.retractUnsubmitted((i) => this.#dropSlot(sq[(i << 4) + 8]));
    while (this.#resubmitCount > 0) {
      this.#dropSlot(this.#resubmit[this.#resubmitHead]);
      this.#resubmitHead = (this.#resubmitHead + 1) % this.#cap;
      this.#resubmitCount--;
    }
    // Give requests already in the kernel a moment to finish, so their memory can be released.
    // Off the main thread (a Worker, a `deno test` module), requests into the thread's own heap
    // get all the time they need: that memory is freed when the thread's isolate ends, whatever
    // keeps it referenced, and the kernel would then write into (or, for a write, send to the
    // device) memory reused for something else. This wait comes before the heap goes.
    const out: Completion[] = [];
    const deadline = performance.now() + 1000;
    const waitAll = !onMainThread(this.#native);
    while (
      this.inFlight - this.#resubmitCount > 0 &&
      (performance.now() < deadline || (waitAll && this.#usesThreadMemory()))
    ) {
      const before = this.inFlight;
      const r = this.enter(1, 100e6);
      this.reap(out, 0, Infinity);
      out.length = 0;
      if (r < 0 && r !== -62 && this.inFlight === before) {
        // A shortage passes: in a Worker, giving up on one (ENOMEM) would let the thread's heap
        // go with reads still writing into it. A moment between attempts, not a spin.
        if (!enterMayPass(-r)) break;
        pause(1);
      }
    }
    for (let s = 0; s < this.#cap; s++) {
      if (this.#slots[s * SLOT_NUMBERS + S_USED] === 0) continue;
      // The kernel may still write into these: keep them reachable for the life of the process.
      const r = s * SLOT_REFS;
      abandon(this.#refs[r + R_BUF] as Uint8Array | null, this.#refs[r + R_IOV], this.#iovMem[s]);
      this.#release(s);
    }
    this.#ring.close();
    closeFd(this.#native, this.completionFd);
    closeFd(this.#native, this.#writeBackFd);
    this.#onDestroy?.(this);
  }
}

/** Whether block device `major:minor` has discard now. */
function deviceDiscards(native: Native, major: number, minor: number): boolean {
  return (readBlockLimits(native, major, minor)?.discardMaxBytes ?? 0) > 0;
}

const POLL_MSG = "request not supported on poll queues for this driver";
const READ_ONLY_MSG = "The instance is read-only (read-only=true): requests that write fail with EBADF";
const LEN_MSG = "len must fit in an unsigned 32-bit integer";
const FALLOC_MSG = "the kernel does not support IORING_OP_FALLOCATE";
const NO_DISCARD_MSG = "Discard is not supported by this device";
const NO_HOLE_MSG =
  "Discard is not supported by this device on this kernel: before Linux 6.12 io_uring reaches " +
  "a block device's discard only as a write zeroes that may unmap (FALLOC_FL_PUNCH_HOLE), which it lacks";
const NOFALLBACK_MSG = "the block device does not support write zeroes with BLKIO_REQ_NO_FALLBACK";

function setIovec(mem: Uint32Array, k: number, addr: number, len: number): void {
  const b = k << 2;
  mem[b] = addr >>> 0;
  mem[b + 1] = (addr / 4294967296) >>> 0;
  mem[b + 2] = len >>> 0;
  mem[b + 3] = (len / 4294967296) >>> 0;
}
