/**
 * The io_uring driver: regular files and block devices through io_uring, one ring per queue.
 *
 * @module
 */
import type { Native } from "../../../ffi/types.ts";
import type { Driver, DriverQueue } from "../../driver.ts";
import { BlkioError, propertyError } from "../../errors.ts";
import { bufferOf } from "../../buffers.ts";
import { mapAnonymous, type MemoryRegion } from "../../memory_region.ts";
import { PropertyTable } from "../../properties.ts";
import { queueCountRows } from "../../queue_count_rows.ts";
import { State } from "../../state.ts";
import {
  closeFd,
  type FileStat,
  iovMax,
  isOpenFd,
  isShortage,
  O_RDONLY,
  O_RDWR,
  oDirect,
  openPath,
  pageSize,
  S_IFCHR,
  S_IFIFO,
  S_IFMT,
  S_IFSOCK,
  seekEnd,
  statPath,
} from "../../sys.ts";
import { Ring } from "../../uring/ring.ts";
import { IORING_ENTER_GETEVENTS, IORING_SETUP_IOPOLL } from "../../uring/constants.ts";
import { prepReadv, setUserData } from "../../uring/sqe.ts";
import { FIXED_BUFFERS, IoUringQueue } from "./queue.ts";
import {
  inspecting,
  notFileOrDevice,
  refuseReadOnlyDevice,
  type TargetInfo,
  targetInfo,
} from "./target_info.ts";

/** Whether a ring has been set up in this process: io_uring is there, no need to ask again. */
let uringSeen = false;

/**
 * libblkio's `blkio_create("io_uring")` fails with ENOSYS where io_uring is unavailable, rather
 * than leaving it to `start()`: a kernel without it (ENOSYS), or one that refuses it
 * (`kernel.io_uring_disabled`, a container's seccomp profile: EPERM). A one-entry ring is set up
 * and torn down once per process; other failures (EMFILE, ENOMEM) are the caller's to see.
 */
function requireIoUring(native: Native): void {
  if (uringSeen) return;
  try {
    new Ring(native, 1, 0, [], false).close();
  } catch (e) {
    if (!(e instanceof BlkioError) || (e.code !== "ENOSYS" && e.code !== "EPERM")) throw e;
    const why = e.code === "EPERM"
      ? "the kernel refuses it (sysctl kernel.io_uring_disabled, or a seccomp filter)"
      : "the kernel has no io_uring";
    throw BlkioError.of("ENOSYS", `io_uring is not available: ${why}: ${e.message}`, { cause: e });
  }
  uringSeen = true;
}

/** Hardware queue depths of 64-128 are common; libblkio's default. */
const NUM_ENTRIES_DEFAULT = 128;
/** The kernel's IORING_MAX_ENTRIES. */
const NUM_ENTRIES_MAX = 32768;
const INT_MAX = 2147483647;

const C = State.Created;
const K = State.Connected;

/** The io_uring driver instance. */
export class IoUringDriver implements Driver {
  readonly name = "io_uring";
  readonly properties: PropertyTable<this> = IO_URING_PROPERTIES as unknown as PropertyTable<this>;
  readonly native: Native;
  path = "";
  fd = -1;
  direct = false;
  readOnly = false;
  numEntries = NUM_ENTRIES_DEFAULT;
  numQueues = 1;
  numPollQueues = 0;
  sqpoll = false;
  canGrow = false;
  supportsFuaNatively = false;
  supportsPollQueues = false;
  target: TargetInfo | null = null;
  #ownsFd = false;
  /**
   * The live queues. A destroyed queue leaves it (onDestroy): a removed queue, or one a failed
   * start made, must not stay reachable with its slot tables (~6.5 MB at num-entries 32768).
   */
  readonly #queues = new Set<IoUringQueue>();
  readonly #forget = (q: IoUringQueue): void => void this.#queues.delete(q);
  /** Mapped regions and their fixed buffer index, registered on every queue's ring. */
  readonly #fixed = new Map<
    MemoryRegion,
    { index: number; addr: number; len: number; buffer: ArrayBufferLike }
  >();
  readonly #freeFixed: number[] = Array.from({ length: FIXED_BUFFERS }, (_, i) => FIXED_BUFFERS - 1 - i);

  constructor(native: Native) {
    requireIoUring(native);
    this.native = native;
  }

  /** Target info; only called by properties readable from connected state. */
  get info(): TargetInfo {
    return this.target!;
  }

  connect(): void {
    const n = this.native;
    let fd: number;
    if (this.path !== "") {
      if (this.fd !== -1) throw BlkioError.of("EINVAL", "path and fd cannot be set at the same time");
      // FIFOs and character devices are refused before the open, which could block for good: a
      // FIFO opened for reading waits for a writer, a terminal for carrier. Not with O_NONBLOCK
      // instead: that changes open itself (EAGAIN on a leased file, no media check on a
      // removable disk). Sockets too, where open says only ENXIO: most likely a vhost-user
      // export given to the wrong driver. Anything else open judges first (EISDIR), then
      // targetInfo.
      let st: FileStat | null = null;
      try {
        st = statPath(n, this.path);
      } catch {
        // open says what is wrong with the path
      }
      const type = st === null ? 0 : st.mode & S_IFMT;
      if (type === S_IFIFO || type === S_IFCHR || type === S_IFSOCK) {
        throw notFileOrDevice(JSON.stringify(this.path), type);
      }
      try {
        fd = openPath(n, this.path, (this.readOnly ? O_RDONLY : O_RDWR) | (this.direct ? oDirect(n) : 0));
        if (!this.readOnly) refuseReadOnlyDevice(n, fd, this.path);
      } catch (e) {
        const code = (e as BlkioError).code;
        // The hint only where it helps: read-only would be refused too on a file this user
        // may not read.
        if (this.readOnly || (code !== "EACCES" && code !== "EROFS") || !readable(n, this.path)) throw e;
        throw new BlkioError(
          (e as BlkioError).errno,
          `${
            (e as Error).message
          }; to open it for reading only, set read-only (readOnly in BlockDevice.open)`,
          {
            cause: e,
          },
        );
      }
    } else if (this.fd !== -1) {
      fd = this.fd;
      if (!isOpenFd(n, fd)) throw BlkioError.of("EBADF", `fd ${fd} is not an open file descriptor`);
    } else {
      throw BlkioError.of("EINVAL", "One of path and fd must be set");
    }
    const opened = this.path !== "";
    const name = opened ? JSON.stringify(this.path) : `fd ${fd}`;
    try {
      const info = targetInfo(n, fd, name);
      // capacity must be readable: a procfs file is a regular file whose end lseek refuses.
      try {
        seekEnd(n, fd);
      } catch (e) {
        throw new BlkioError(
          (e as BlkioError).errno,
          `Cannot tell the size of ${name}: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
      const poll = supportsIopoll(n, fd, info);
      // With `fd`, the fd's own flags decide; with `path` they match what was asked for.
      this.direct = info.direct;
      this.readOnly = info.readOnly;
      this.canGrow = info.canGrow;
      this.supportsFuaNatively = info.supportsFuaNatively;
      this.supportsPollQueues = poll;
      this.target = info;
      this.fd = fd;
      this.#ownsFd = true;
    } catch (e) {
      if (opened) closeFd(n, fd);
      throw inspecting(name, e);
    }
  }

  start(): { queues: DriverQueue[]; pollQueues: DriverQueue[] } {
    if (this.numPollQueues > 0 && !this.supportsPollQueues) {
      throw BlkioError.of("EINVAL", "Poll queues not supported");
    }
    if (this.numEntries > NUM_ENTRIES_MAX) {
      throw propertyError(
        "num-entries",
        "EINVAL",
        `num-entries must be at most ${NUM_ENTRIES_MAX}: received ${this.numEntries}`,
      );
    }
    const made: DriverQueue[] = [];
    try {
      for (let i = 0; i < this.numQueues; i++) made.push(this.#queue(false));
      for (let i = 0; i < this.numPollQueues; i++) made.push(this.#queue(true));
    } catch (e) {
      for (const q of made) q.destroy();
      throw e;
    }
    return { queues: made.slice(0, this.numQueues), pollQueues: made.slice(this.numQueues) };
  }

  readonly canAddQueues = true;

  addQueue(poll: boolean): DriverQueue {
    if (poll && !this.supportsPollQueues) throw BlkioError.of("EINVAL", "Poll queues not supported");
    return this.#queue(poll);
  }

  /**
   * The ring of a live SQPOLL queue, whose kernel thread a new SQPOLL queue shares, or -1. Every
   * queue of an instance runs on the thread that made it, so a thread per queue only spins
   * beside the others: with two queues on this 2-vCPU VM, sharing one gave 1.8x-11x the IOPS at
   * 0.08-0.43 of the CPU a request (medians, BENCHMARKS.md). Any live one will do: the rings
   * attached to a thread share it, and the kernel keeps it while one of them lives, so removing
   * the first queue leaves the others theirs; with none left, the next queue starts a new one.
   */
  #sqpollRingFd(): number {
    if (!this.sqpoll) return -1;
    for (const q of this.#queues) if (q.sqpollRingFd >= 0) return q.sqpollRingFd;
    return -1;
  }

  #queue(poll: boolean): DriverQueue {
    const q = new IoUringQueue(this.native, {
      poll,
      entries: this.numEntries,
      fd: this.fd,
      target: this.info,
      sqpoll: this.sqpoll,
      sqpollWqFd: poll ? -1 : this.#sqpollRingFd(),
      onDestroy: this.#forget,
    });
    for (const f of this.#fixed.values()) q.registerBuffer(f.index, f.addr, f.len, f.buffer);
    this.#queues.add(q);
    return q;
  }

  memRegionAlignment(): number {
    return this.info.requestAlignment;
  }

  capacityMayWait(): boolean {
    return this.target?.sizeMayWait ?? false;
  }

  // io_uring can use any memory; a mapped region also becomes a fixed buffer of every ring (the
  // core validated it), so its requests skip pinning pages each time. Without a free index, or
  // where the kernel refuses, its I/O stays plain: mapping never fails for it.
  mapMemRegion(region: MemoryRegion, addr: number): void {
    const index = this.#freeFixed.pop();
    if (index === undefined) return;
    const buffer = bufferOf(region.bytes);
    this.#fixed.set(region, { index, addr, len: region.len, buffer });
    this.#registerRefused();
  }

  unmapMemRegion(region: MemoryRegion, _inUse: boolean): void {
    const f = this.#fixed.get(region);
    if (f === undefined) return;
    this.#fixed.delete(region);
    let reusable = true;
    for (const q of this.#queues) if (!q.unregisterBuffer(f.index)) reusable = false;
    // An index some ring may still hold unsubmitted requests for is never handed out again.
    if (reusable) this.#freeFixed.push(f.index);
    this.#registerRefused();
  }

  /**
   * Registers every mapped region on every ring that does not hold it yet. A ring refuses one
   * that would pass RLIMIT_MEMLOCK (ENOMEM, in a process without CAP_IPC_LOCK), and the limit
   * can have room again once a region is unmapped here or pinned memory is given back elsewhere:
   * a refused region stayed plain until unmapped, though its turn had come. Tried again whenever
   * the regions change, never per request; a ring without a fixed table answers at once.
   */
  #registerRefused(): void {
    for (const q of this.#queues) {
      for (const f of this.#fixed.values()) {
        if (!q.hasBuffer(f.index)) q.registerBuffer(f.index, f.addr, f.len, f.buffer);
      }
    }
  }

  destroy(): void {
    if (this.#ownsFd) closeFd(this.native, this.fd);
    this.#ownsFd = false;
  }
}

/**
 * Whether IOPOLL works on `fd`: a polled read of one aligned block must succeed. Only O_DIRECT
 * can poll. libblkio probes with a zero-length read, but that never reaches the block layer,
 * so on Linux 6.x it succeeds even where every real polled read fails with EOPNOTSUPP (a disk
 * without poll queues, a loop device). libblkio fails connect when the probe read fails in an
 * unexpected way; this treats any failure as "no poll queues" so a file system with odd
 * IOPOLL behaviour still connects. The read of a file's block 0 does not reach the disk either
 * when that block holds no data (an empty or sparse image, the usual kind), so a device whose
 * sysfs io_poll says it has no poll queues is taken at its word first.
 */
function supportsIopoll(native: Native, fd: number, info: TargetInfo): boolean {
  if (!info.direct || info.ioPoll === false) return false;
  let ring: Ring;
  try {
    ring = new Ring(native, 1, IORING_SETUP_IOPOLL);
  } catch (e) {
    // No IOPOLL here, unless the process ran short: then connect fails saying so, where
    // supports-poll-queues=false made a later start with poll queues fail for the wrong reason.
    if (e instanceof BlkioError && isShortage(e.errno)) throw e;
    return false;
  }
  const len = info.requestAlignment;
  // Until the read's completion is reaped the kernel may write into the buffer (and, on kernels
  // before 6.10, read the iovec again): closing the ring does not wait for it. So both live in
  // memory the library maps, never the thread's heap (freed with a Worker's isolate whatever
  // references it), left mapped if the read was not reaped. No fd: connect needs none for it.
  const size = 3 * len; // the iovec, then a len-aligned buffer of len bytes
  let addr: number;
  try {
    addr = mapAnonymous(native, size, "IOPOLL probe");
  } catch (e) {
    ring.close();
    throw e;
  }
  let reaped = false;
  try {
    const v = new DataView(native.view(addr, 16));
    v.setBigUint64(0, BigInt(Math.ceil((addr + 16) / len) * len), true);
    v.setBigUint64(8, BigInt(len), true);
    const i = ring.nextSqe();
    prepReadv(ring.sqes, i, fd, addr, 1, 0);
    setUserData(ring.sqes, i, 1);
    // Polling may return before the CQE is there (the task used up its time slice).
    let r = 0;
    for (let tries = 0; tries < 100 && r >= 0 && ring.cqHead() === ring.cqTail(); tries++) {
      r = ring.enter(1, IORING_ENTER_GETEVENTS, 1e9);
    }
    if (ring.cqHead() === ring.cqTail()) {
      // The kernel never took the SQE (the enter failed before submitting: EAGAIN, ENOMEM):
      // nothing can touch the memory, which was left mapped for good here.
      if (ring.unsubmitted > 0) reaped = true;
      return false;
    }
    reaped = true;
    const res = ring.cqesRes[((ring.cqHead() & ring.cqMask) << 2) + 2];
    ring.setCqHead(ring.cqHead() + 1);
    return r >= 0 && res >= 0;
  } finally {
    ring.close();
    if (reaped) native.libc.munmap(addr, BigInt(size));
  }
}

type D = IoUringDriver;
const must = (d: D): TargetInfo => d.info;

/** Every io_uring property, as libblkio 1.5 has them. */
export const IO_URING_PROPERTIES: PropertyTable<D> = new PropertyTable<D>({
  "buf-alignment": {
    type: "int",
    doc: "Required alignment of buffer addresses and lengths (each iovec too)",
    readableFrom: K,
    get: (d) => must(d).requestAlignment,
  },
  "can-add-queues": {
    type: "bool",
    doc: "Whether addQueue() works",
    get: (d) => d.canAddQueues,
  },
  "can-grow": {
    type: "bool",
    doc: "Reads past the end return zeroes and writes extend the file (regular files)",
    get: (d) => d.canGrow,
  },
  "capacity": {
    type: "uint64",
    doc: "Size in bytes (read anew each time, so it follows a growing file)",
    readableFrom: K,
    get: (d) => seekEnd(d.native, d.fd),
  },
  "direct": {
    type: "bool",
    doc: "Open with O_DIRECT, bypassing the page cache",
    settableIn: [C],
    get: (d) => d.direct,
    set: (d, v) => void (d.direct = v),
  },
  "discard-alignment": {
    type: "int",
    doc: "Discard start and length granularity",
    readableFrom: K,
    get: (d) => must(d).discardAlignment,
  },
  "discard-alignment-offset": {
    type: "int",
    doc: "Offset of the first discardable block (partitions)",
    readableFrom: K,
    get: (d) => must(d).discardAlignmentOffset,
  },
  "driver": {
    type: "str",
    doc: "The driver name",
    get: (d) => d.name,
  },
  "fd": {
    type: "int",
    doc: "An open file descriptor to use instead of path; the instance owns it after connect",
    settableIn: [C],
    get: (d) => d.fd,
    set: (d, v) => void (d.fd = v),
  },
  "flush-needed": {
    type: "bool",
    // A stored field in libblkio: readable before connect, with its default.
    doc: "Whether completed writes need a flush to be durable (true until connect)",
    get: (d) => d.target?.flushNeeded ?? true,
  },
  "max-discard-len": {
    type: "uint64",
    doc: "Maximum discard length, 0 for no limit (the block layer splits)",
    readableFrom: K,
    get: (d) => (must(d), 0n),
  },
  "max-mem-regions": {
    type: "uint64",
    doc: "Maximum number of mapped memory regions",
    get: () => 0xffffffffffffffffn,
  },
  "max-queues": {
    type: "int",
    doc: "Maximum number of queues, poll queues included",
    get: () => INT_MAX,
  },
  "max-segment-len": {
    type: "int",
    doc: "Maximum iovec length, 0 for no limit",
    readableFrom: K,
    get: (d) => (must(d), 0),
  },
  "max-segments": {
    type: "int",
    doc: "Maximum number of iovecs per request (IOV_MAX)",
    readableFrom: K,
    get: (d) => (must(d), iovMax(d.native)),
  },
  "max-transfer": {
    type: "int",
    doc: "Maximum read/write length, 0 for no limit (the block layer splits)",
    readableFrom: K,
    get: (d) => (must(d), 0),
  },
  "max-write-zeroes-len": {
    type: "uint64",
    doc: "Maximum write-zeroes length, 0 for no limit",
    readableFrom: K,
    get: (d) => (must(d), 0n),
  },
  "may-pin-mem-regions": {
    type: "bool",
    // Mapped regions become io_uring fixed buffers, whose pages the kernel pins.
    doc: "Whether the driver may pin memory region pages (mapped regions are registered buffers)",
    get: () => true,
  },
  "mem-region-alignment": {
    type: "uint64",
    doc: "Required alignment of memory region addresses and lengths",
    readableFrom: K,
    get: (d) => BigInt(must(d).requestAlignment),
  },
  "needs-mem-region-fd": {
    type: "bool",
    doc: "Whether memory regions must be backed by an fd",
    get: () => false,
  },
  "needs-mem-regions": {
    type: "bool",
    doc: "Whether buffers must lie in mapped memory regions",
    get: () => false,
  },
  "num-entries": {
    type: "int",
    doc: "Minimum submission/completion ring entries per queue",
    settableIn: [K],
    get: (d) => d.numEntries,
    set: (d, v) => {
      if (v <= 0) throw BlkioError.of("EINVAL", `num-entries must be greater than 0: received ${v}`);
      d.numEntries = v;
    },
  },
  ...queueCountRows<D>(),
  "optimal-buf-alignment": {
    type: "int",
    doc: "Preferred buffer alignment (the page size, or buf-alignment where that is larger)",
    readableFrom: K,
    // libblkio says the page size. Where a device's logical block is larger (loop devices take
    // 8 KiB and more), a buffer at the "preferred" alignment would be refused with O_DIRECT;
    // libblkio's nvme-io_uring driver takes max(page, LBA) for the same reason.
    get: (d) => Math.max(pageSize(d.native), must(d).requestAlignment),
  },
  "optimal-io-alignment": {
    type: "int",
    doc: "Preferred start and length alignment",
    readableFrom: K,
    get: (d) => must(d).optimalIoAlignment,
  },
  "optimal-io-size": {
    type: "int",
    doc: "Preferred request length, 0 when unspecified",
    readableFrom: K,
    get: (d) => must(d).optimalIoSize,
  },
  "path": {
    type: "str",
    doc: "Regular file or block device to open",
    settableIn: [C],
    get: (d) => d.path,
    set: (d, v) => void (d.path = v),
  },
  "read-only": {
    type: "bool",
    doc: "Open read-only; writes then fail with EBADF",
    settableIn: [C],
    get: (d) => d.readOnly,
    set: (d, v) => void (d.readOnly = v),
  },
  "request-alignment": {
    type: "int",
    doc: "Required alignment of request start and length",
    readableFrom: K,
    get: (d) => must(d).requestAlignment,
  },
  "sqpoll": {
    type: "bool",
    doc: "Queues (not poll queues) get a kernel thread that polls for submissions " +
      "(IORING_SETUP_SQPOLL), one for all the instance's queues (IORING_SETUP_ATTACH_WQ; a kernel " +
      "before 5.10 gives each its own), and doIo waits watch for completions up to 50 µs " +
      "before sleeping: fewer system calls, two busy CPUs while there is I/O",
    settableIn: [C, K],
    get: (d) => d.sqpoll,
    set: (d, v) => void (d.sqpoll = v),
  },
  "supports-fua-natively": {
    type: "bool",
    doc: "Whether FUA writes are native rather than emulated",
    get: (d) => d.supportsFuaNatively,
  },
  "supports-poll-queues": {
    type: "bool",
    doc: "Whether poll queues work (O_DIRECT on a target that supports IOPOLL)",
    get: (d) => d.supportsPollQueues,
  },
});

/** Whether `path` opens for reading (then closed again). */
function readable(n: Native, path: string): boolean {
  try {
    closeFd(n, openPath(n, path, O_RDONLY));
    return true;
  } catch {
    return false;
  }
}
