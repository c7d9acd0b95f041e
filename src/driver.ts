/**
 * The contract between the core and a driver. The core owns the lifecycle, property access,
 * memory-region bookkeeping, request validation, both backlogs and the `doIo` loop; a driver
 * owns the device connection and its queues' rings.
 *
 * @module
 */
import type { Completion } from "./completion.ts";
import type { MemoryRegion } from "./memory_region.ts";
import type { PropertyTable } from "./properties.ts";
import type { CompletionBacklog } from "./completion_backlog.ts";
import type { RequestSink } from "./request_backlog.ts";

/** One queue of a driver: a ring (or virtqueue) with its in-flight requests. */
export interface DriverQueue extends RequestSink {
  /** Poll queues are completed by busy polling inside `enter`, and have no completion fd. */
  readonly isPollQueue: boolean;
  /**
   * The eventfd signalled on completions, or -1 (poll queues). Its number is fixed for the
   * life of the queue; the device need only signal it once {@link useCompletionFd} was called.
   */
  readonly completionFd: number;
  /**
   * The caller took the completion fd: from now on every completion must signal it. A driver
   * that defers signalling until this call must signal once here for requests that already
   * completed (a spurious signal is allowed, a missed one never).
   */
  useCompletionFd(): void;
  /**
   * Milliseconds, for a driver that notices some failures only when the queue is entered (a
   * vhost-user back-end that died signals no eventfd): while requests are in flight, a caller
   * waiting on the completion fd should enter (`doIo` with min 0) at least this often. Absent
   * when every completion signals the fd (io_uring: the kernel completes everything).
   */
  readonly failureCheckMs?: number;
  /** Requests the driver holds: prepared, submitted, or waiting for resubmission. */
  readonly inFlight: number;
  /** Requests prepared but not yet handed to the device. */
  readonly pendingSubmit: number;
  /** Where the driver puts completions for requests it fails itself. */
  completions: CompletionBacklog;
  /**
   * Moves finished requests into `out[n..max)` without blocking; returns the new `n`. Partial
   * transfers are resubmitted inside and do not count. Each goes in through
   * `completions.deliver`, after the driver has released the request: when that returns false
   * (an unwritable entry, or one that is the same object as an earlier one; the completion is in
   * the backlog now) the driver stops and returns.
   */
  reap(out: Completion[], n: number, max: number): number;
  /**
   * Hands prepared requests to the device and, when `minComplete` > 0, waits for that many
   * completions (poll queues poll at least once). `timeoutNs` < 0 waits without limit.
   * Returns 0 or a negative errno (-ETIME on timeout, -EINTR when interrupted; -EINTR may also
   * stand for a timeout, which the caller tells apart by its own deadline). `interruptible`:
   * the caller reports signals (doIoInterruptible), so the wait must be one a signal ends; no
   * busy-polling where a handled signal would go unnoticed.
   */
  enter(minComplete: number, timeoutNs: number, interruptible?: boolean): number;
  /** Enables or disables completion fd notifications (advisory). */
  setCompletionFdEnabled(enabled: boolean): void;
  /**
   * The queue is driven from an event loop (BlockDevice), which a submission must not hold up:
   * where the device may block inside the submitting call, the driver avoids it, even at some
   * cost. Optional: a driver whose submission never blocks has nothing to do.
   */
  submitFromEventLoop?(): void;
  /** Whether a request in flight uses memory of `buffer`. */
  usesBuffer(buffer: ArrayBufferLike): boolean;
  /**
   * Asks the device to cancel the request in flight whose `userData` is `userData` (`===`),
   * where it can (the cancellation itself is submitted by the next `enter`). The request still
   * completes through `reap`, with `-ECANCELED` or its normal result, and keeps its buffers
   * until then. Returns whether such a request is in flight.
   */
  cancel(userData: unknown): boolean;
  /** Releases the ring and fds. Requests in flight are abandoned by the kernel's ring teardown. */
  destroy(): void;
}

/** One device connection. */
export interface Driver {
  /** The driver name given to `Blkio.create`. */
  readonly name: string;
  /** The driver's property table; accessors receive the driver itself. */
  readonly properties: PropertyTable<this>;
  /** Opens the device; afterwards device properties are readable. */
  connect(): void;
  /** Creates the initial queues from num-queues / num-poll-queues. */
  start(): { queues: DriverQueue[]; pollQueues: DriverQueue[] };
  /**
   * Whether {@link addQueue} can work at all (the `can-add-queues` property). Where it cannot,
   * adding a queue is ENOTSUP in every state, as in libblkio, whose driver answers before any
   * state check (tests/add-remove-queues.c: connected, can-add-queues false, -ENOTSUP).
   */
  readonly canAddQueues: boolean;
  /** Creates one more queue (started state, canAddQueues); throws EINVAL when it cannot. */
  addQueue(poll: boolean): DriverQueue;
  /** mem-region-alignment, once connected. */
  memRegionAlignment(): number;
  /** Makes a validated region usable by the device (started state). */
  mapMemRegion(region: MemoryRegion, addr: number): void;
  /**
   * Undoes {@link mapMemRegion}. `inUse`: requests of the instance use the region, in a queue
   * or still waiting in its backlog, or a request given up on may still be written there
   * (abandoned); a driver that shares the memory with a back-end refuses then.
   */
  unmapMemRegion(region: MemoryRegion, inUse: boolean): void;
  /**
   * Whether reading `capacity` may wait for another party (a vhost-user back-end, a FUSE daemon,
   * a file server): an event loop then keeps the size read at open rather than hold up every
   * other task for it. Absent: false.
   */
  capacityMayWait?(): boolean;
  /**
   * The whole instance is going (called before its queues are destroyed, then {@link destroy}):
   * per-queue teardown the device connection's close covers anyway may be skipped.
   */
  beginDestroy?(): void;
  /** Closes the device connection; queues were destroyed before. */
  destroy(): void;
}
