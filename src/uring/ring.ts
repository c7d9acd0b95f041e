/**
 * One io_uring instance: liburing sets it up, probes and registers; SQEs and CQEs are then
 * read and written through typed views over the kernel-shared ring memory, and the only call
 * per batch is `io_uring_enter`.
 *
 * @module
 */
import type { Native } from "../../ffi/types.ts";
import { BlkioError } from "../errors.ts";
import { errnoError, memlockLimit, pause } from "../sys.ts";
import { CQE, GETEVENTS_ARG, IOVEC, LIBURING_RING, PARAMS, PROBE, SQE, TIMESPEC } from "./layout.ts";
import { addSqeFlags } from "./sqe.ts";
import {
  IO_URING_OP_SUPPORTED,
  IORING_CQ_EVENTFD_DISABLED,
  IORING_ENTER_EXT_ARG,
  IORING_ENTER_GETEVENTS,
  IORING_ENTER_REGISTERED_RING,
  IORING_ENTER_SQ_WAKEUP,
  IORING_FEAT_EXT_ARG,
  IORING_FEAT_RW_CUR_POS,
  IORING_OP,
  IORING_SETUP_ATTACH_WQ,
  IORING_SETUP_DEFER_TASKRUN,
  IORING_SETUP_SQPOLL,
  IORING_SETUP_TASKRUN_FLAG,
  IORING_SQ_CQ_OVERFLOW,
  IORING_SQ_NEED_WAKEUP,
  IORING_SQ_TASKRUN,
} from "./constants.ts";

const ENOTSUP = 95;
const EINVAL = 22;
const ENOMEM = 12;
const EAGAIN = 11;
const EPERM = 1;
const EACCES = 13;
/** sizeof(struct io_uring_getevents_arg), made once: a bigint per timed wait would allocate. */
const GETEVENTS_ARG_SIZE = BigInt(GETEVENTS_ARG.size);

/** A set-up ring with views over its SQ, SQE array and CQ. */
export class Ring {
  /** The ring fd. */
  readonly fd: number;
  readonly sqEntries: number;
  readonly cqEntries: number;
  readonly features: number;
  /** IORING_SETUP_SQPOLL: a kernel thread takes SQEs as soon as the tail is published. */
  readonly sqPoll: boolean;
  /** IORING_SETUP_TASKRUN_FLAG: {@link taskWorkPending} tells when completions wait. */
  readonly taskrunFlag: boolean;
  /**
   * IORING_SETUP_DEFER_TASKRUN: completions that did not finish inside the submitting call
   * reach the CQ only when this thread enters with GETEVENTS ({@link runTaskWork}).
   */
  readonly deferTaskrun: boolean;
  /** The SQE array, 16 u32 per SQE; fill with the `prep*` writers. */
  readonly sqes: Uint32Array;
  /** The CQE array as u32 (user_data low half at 4*i, flags at 4*i+3). */
  readonly cqes: Uint32Array;
  /** The CQE array as i32 (res at 4*i+2). */
  readonly cqesRes: Int32Array;
  readonly cqMask: number;
  /**
   * Whether io_uring_enter gets the ring's index among this thread's registered ring fds
   * instead of the fd: the kernel then skips looking the file up (and its reference count) on
   * every call. Registered rings belong to the thread that registered them, which is the only
   * one that may use a queue (JavaScript objects never cross threads).
   */
  registeredRing = false;
  /** io_uring_enter's fd argument: the registered index, else {@link fd}. */
  #enterFd: number;
  /** IORING_ENTER_REGISTERED_RING, or 0. */
  #enterFlags = 0;
  readonly #native: Native;
  readonly #struct: Uint8Array;
  readonly #sqHead: Uint32Array;
  readonly #sqTail: Uint32Array;
  readonly #sqMask: number;
  readonly #cqHead: Uint32Array;
  readonly #cqTail: Uint32Array;
  readonly #cqFlags: Uint32Array;
  readonly #sqFlags: Uint32Array;
  readonly #arg: Uint8Array;
  readonly #ts: Uint32Array;
  /** One struct iovec for buffer table updates. */
  readonly #iov: Uint8Array;
  #tail: number;
  /** The tail last stored for the kernel. */
  #published: number;
  #closed = false;

  /**
   * Sets up a ring with `setupFlags` plus the first of `optional` (sets of flags, best first)
   * that the kernel knows: it rejects unknown setup flags with EINVAL, so each is tried in turn,
   * and last `setupFlags` alone.
   * `registerFd`: try to register the ring fd with this thread (16 slots per thread: rings
   * entered once per request should have them, rings entered rarely need not).
   * `wqFd`: for an SQPOLL ring, the fd of a live SQPOLL ring of this process whose kernel thread
   * should poll this one too (IORING_SETUP_ATTACH_WQ), or -1 for a thread of its own. Where the
   * kernel refuses the attachment (EINVAL: before 5.6 it does not know the flag) the ring is set
   * up again without it, with a thread of its own.
   */
  constructor(
    native: Native,
    entries: number,
    setupFlags: number,
    optional: readonly number[] = [],
    registerFd = true,
    wqFd = -1,
  ) {
    this.#native = native;
    const ring = native.alloc(LIBURING_RING.size);
    const params = native.alloc(PARAMS.size);
    const pv = new DataView(params.buffer);
    let flags = setupFlags;
    let r = -EINVAL;
    // Ring memory counts against RLIMIT_MEMLOCK in a process without CAP_IPC_LOCK, and the kernel
    // gives a closed ring's share back only once the ring's exit work has run, a little after
    // io_uring_queue_exit: under a low limit (64 KiB is common) a ring set up right after
    // another was closed failed ENOMEM (leak hunt). So there ENOMEM is tried again for ~130 ms;
    // any other ENOMEM (RLIMIT_AS, say) fails at once.
    // Likewise an SQPOLL ring's kernel thread, which counts against the process's thread limits
    // (a pids cgroup's pids.max, RLIMIT_NPROC): a closed ring's thread exits only with that exit
    // work (15-120 ms here), and until then a new ring's thread failed EAGAIN where one fitted
    // (review). Only SQPOLL set-up makes a thread, so EAGAIN is tried again for ~500 ms there.
    const sqpoll = (setupFlags & IORING_SETUP_SQPOLL) !== 0;
    // Attaching is tried first, with each optional set and alone, then everything without it.
    const tries = sqpoll && wqFd >= 0
      ? [...optional.map((f) => f | IORING_SETUP_ATTACH_WQ), IORING_SETUP_ATTACH_WQ, ...optional]
      : optional;
    let limit: number | null | undefined;
    for (let wait = 1;; wait *= 2) {
      r = -EINVAL;
      for (let i = 0; i <= tries.length && r === -EINVAL; i++) {
        flags = setupFlags | (i < tries.length ? tries[i] : 0);
        params.fill(0);
        pv.setUint32(PARAMS.flags, flags, true);
        if ((flags & IORING_SETUP_ATTACH_WQ) !== 0) pv.setInt32(PARAMS.wqFd, wqFd, true);
        r = native.uring.io_uring_queue_init_params(entries, ring, params);
      }
      if (r === -EAGAIN && sqpoll) {
        if (wait > 256) break;
      } else if (r !== -ENOMEM || wait > 64 || (limit ??= memlockLimit(native)) === null) break;
      pause(wait);
    }
    if (r < 0) {
      const e = errnoError(-r, `io_uring_queue_init_params(${entries}) failed`);
      if (r === -EAGAIN && sqpoll) {
        throw BlkioError.of(
          "EAGAIN",
          `${e.message}: the kernel could not start the ring's submission polling thread (sqpoll): ` +
            "the process is at its thread limit (a pids cgroup's pids.max, such as docker's " +
            "--pids-limit or systemd's TasksMax, or RLIMIT_NPROC); raise it, or set sqpoll to false",
          { cause: e },
        );
      }
      if ((r === -EPERM || r === -EACCES) && sqpoll) {
        // io_uring itself works (Blkio.create made a ring): it is the polling thread that is
        // refused, which a bare EPERM made look like io_uring_disabled or a seccomp filter.
        throw new BlkioError(
          -r,
          `${e.message}: the kernel refuses this process a submission polling thread (sqpoll): ` +
            "Linux before 5.11 allows it only with CAP_SYS_ADMIN, and a security module (SELinux) " +
            "may deny it; set sqpoll to false",
          { cause: e },
        );
      }
      if (r === -EINVAL) {
        throw BlkioError.of("EINVAL", `${e.message}: num-entries may exceed the kernel limit`);
      }
      if (r === -ENOMEM && limit !== null && limit !== undefined) {
        throw BlkioError.of(
          "ENOMEM",
          `${e.message}: ring memory counts against the locked-memory limit (RLIMIT_MEMLOCK, ` +
            `${limit} bytes here) of a process without CAP_IPC_LOCK; raise it (ulimit -l, ` +
            "systemd's LimitMEMLOCK, docker run --ulimit memlock) or use fewer rings or a smaller num-entries",
          { cause: e },
        );
      }
      throw e;
    }
    this.#struct = ring;
    const rv = new DataView(ring.buffer);
    const addr = (off: number) => Number(rv.getBigUint64(off, true));
    const u32At = (off: number, count = 1) => new Uint32Array(native.view(addr(off), 4 * count));
    this.fd = rv.getInt32(LIBURING_RING.ringFd, true);
    this.sqPoll = (flags & IORING_SETUP_SQPOLL) !== 0;
    this.taskrunFlag = (flags & IORING_SETUP_TASKRUN_FLAG) !== 0;
    this.deferTaskrun = (flags & IORING_SETUP_DEFER_TASKRUN) !== 0;
    this.sqEntries = pv.getUint32(PARAMS.sqEntries, true);
    this.cqEntries = pv.getUint32(PARAMS.cqEntries, true);
    this.features = pv.getUint32(PARAMS.features, true);
    // The struct io_uring offsets are liburing's private ABI: check them against what the
    // kernel reported in io_uring_params before trusting any pointer read through them.
    const sqEntriesSeen = u32At(LIBURING_RING.sqKringEntries)[0];
    const cqEntriesSeen = u32At(LIBURING_RING.cqKringEntries)[0];
    if (sqEntriesSeen !== this.sqEntries || cqEntriesSeen !== this.cqEntries) {
      native.uring.io_uring_queue_exit(ring);
      throw BlkioError.of("ELIBACC", "liburing's struct io_uring layout is not the expected 2.x layout");
    }
    this.#enterFd = this.fd;
    if (registerFd) this.registerRingFd();
    this.#sqHead = u32At(LIBURING_RING.sqKhead);
    this.#sqTail = u32At(LIBURING_RING.sqKtail);
    this.#sqMask = u32At(LIBURING_RING.sqKringMask)[0];
    this.#cqHead = u32At(LIBURING_RING.cqKhead);
    this.#cqTail = u32At(LIBURING_RING.cqKtail);
    this.#cqFlags = u32At(LIBURING_RING.cqKflags);
    this.#sqFlags = u32At(LIBURING_RING.sqKflags);
    this.cqMask = u32At(LIBURING_RING.cqKringMask)[0];
    // Identity SQ index array: SQE i is always published at array slot i.
    const array = u32At(LIBURING_RING.sqArray, this.sqEntries);
    for (let i = 0; i < this.sqEntries; i++) array[i] = i;
    this.sqes = new Uint32Array(native.view(addr(LIBURING_RING.sqSqes), this.sqEntries * SQE.size));
    const cqeBuf = native.view(addr(LIBURING_RING.cqCqes), this.cqEntries * CQE.size);
    this.cqes = new Uint32Array(cqeBuf);
    this.cqesRes = new Int32Array(cqeBuf);
    this.#tail = this.#sqTail[0];
    this.#published = this.#tail;
    // EXT_ARG wait argument and its timespec, allocated once; their addresses are fixed.
    this.#arg = native.alloc(GETEVENTS_ARG.size + TIMESPEC.size);
    const tsAddr = native.addressOf(this.#arg.buffer as ArrayBuffer) + GETEVENTS_ARG.size;
    const av = new DataView(this.#arg.buffer);
    av.setBigUint64(GETEVENTS_ARG.ts, BigInt(tsAddr), true);
    this.#ts = new Uint32Array(this.#arg.buffer, GETEVENTS_ARG.size, 4);
    this.#iov = native.alloc(IOVEC.size);
  }

  /**
   * The kernel's SQ head. Without SQPOLL only this thread's io_uring_enter moves it, so a plain
   * read after that call is exact on any CPU (it is a system call, and the engines reload
   * memory after a native call); an Atomics operation is a builtin call on V8 (~9 ns in a
   * tight loop, ~6 ns on JavaScriptCore), and several run per request. The SQPOLL thread
   * moves it concurrently: an acquire load there.
   */
  #kernelSqHead(): number {
    return this.sqPoll ? Atomics.load(this.#sqHead, 0) : this.#sqHead[0];
  }

  /** Free SQEs. */
  sqSpace(): number {
    return this.sqEntries - ((this.#tail - this.#kernelSqHead()) >>> 0);
  }

  /** Claims the next SQE slot (caller checked {@link sqSpace}); returns its index. */
  nextSqe(): number {
    const i = this.#tail & this.#sqMask;
    this.#tail = (this.#tail + 1) >>> 0;
    return i;
  }

  /**
   * SQEs written but not yet consumed by the kernel; with SQPOLL, written but not yet published
   * (the kernel thread takes published ones by itself).
   */
  get unsubmitted(): number {
    if (this.sqPoll) return (this.#tail - this.#published) >>> 0;
    return (this.#tail - this.#sqHead[0]) >>> 0;
  }

  /**
   * Takes back the SQEs the kernel has not received (without SQPOLL: not consumed by an enter;
   * with SQPOLL: not yet published, as the kernel thread may take published ones any time),
   * calling `each` with each one's SQE index, oldest first. Returns how many.
   */
  retractUnsubmitted(each: (sqe: number) => void): number {
    const from = this.sqPoll ? this.#published : this.#kernelSqHead();
    let n = 0;
    for (let t = from; t !== this.#tail; t = (t + 1) >>> 0, n++) each(t & this.#sqMask);
    this.#tail = from;
    if (!this.sqPoll) {
      // Only read by the kernel inside io_uring_enter: a plain store, as in enter().
      this.#sqTail[0] = from;
      this.#published = from;
    }
    return n;
  }

  /**
   * Adds `flags` (IOSQE_*) to every SQE written but not yet consumed by the kernel, except
   * cancellations and pauses. Not with SQPOLL, whose kernel thread may be reading them.
   *
   * A cancellation must run in the system call that submits it. Its target is a user_data,
   * which the driver gives to the next request in that slot once the target has completed;
   * only the order of SQEs keeps the cancellation from finding that request. Sent to io-wq
   * (IOSQE_ASYNC), it ran behind a FUSE daemon's slow requests, after the slot's next request
   * was submitted, and cancelled that one (fuzzer, FUSE file: a read nobody cancelled completed
   * -ECANCELED).
   */
  addFlagsToUnsubmitted(flags: number): void {
    if (this.sqPoll) return;
    const sqes = this.sqes;
    for (let t = this.#sqHead[0]; t !== this.#tail; t = (t + 1) >>> 0) {
      const i = t & this.#sqMask;
      // Nor a pause (a TIMEOUT): sent to io-wq it needs the worker thread it waits for.
      const op = sqes[i << 4] & 0xff;
      if (op !== IORING_OP.ASYNC_CANCEL && op !== IORING_OP.TIMEOUT) addSqeFlags(sqes, i, flags);
    }
  }

  /**
   * Publishes written SQEs and calls io_uring_enter. `timeoutNs` < 0 waits without limit.
   * Returns what the kernel returned (submitted count or -errno). With SQPOLL the call is only
   * made to wait (GETEVENTS) or to wake the kernel thread, and returns 0 otherwise.
   */
  enter(minComplete: number, flags: number, timeoutNs: number): number {
    // Without SQPOLL the kernel reads the tail in the system call below, after everything
    // this thread wrote before it: a plain store. The SQPOLL thread reads it concurrently: a
    // release store there, and Atomics are sequentially consistent, so the NEED_WAKEUP load
    // below cannot move before it (liburing's smp_mb between the two).
    if (this.sqPoll) Atomics.store(this.#sqTail, 0, this.#tail);
    else this.#sqTail[0] = this.#tail;
    let toSubmit = this.unsubmitted;
    this.#published = this.#tail;
    if (this.sqPoll) {
      toSubmit = 0;
      if ((Atomics.load(this.#sqFlags, 0) & IORING_SQ_NEED_WAKEUP) !== 0) flags |= IORING_ENTER_SQ_WAKEUP;
      if (flags === 0) return 0;
    }
    const u = this.#native.uring;
    flags |= this.#enterFlags;
    if (timeoutNs < 0) return u.io_uring_enter(this.#enterFd, toSubmit, minComplete, flags, null);
    if ((this.features & IORING_FEAT_EXT_ARG) === 0) return -ENOTSUP; // Linux < 5.11
    const sec = Math.floor(timeoutNs / 1e9);
    const ts = this.#ts;
    ts[0] = sec >>> 0;
    ts[1] = (sec / 4294967296) >>> 0;
    ts[2] = timeoutNs - sec * 1e9;
    ts[3] = 0;
    return u.io_uring_enter2(
      this.#enterFd,
      toSubmit,
      minComplete,
      flags | IORING_ENTER_EXT_ARG,
      this.#arg,
      GETEVENTS_ARG_SIZE,
    );
  }

  /**
   * Whether completion task work is waiting for this thread to enter the kernel (always false
   * without IORING_SETUP_TASKRUN_FLAG).
   */
  taskWorkPending(): boolean {
    // A hint the kernel sets at any time (liburing reads it with READ_ONCE, no barrier): a
    // plain read, fresh after any native call; one missed now is seen by the next doIo.
    return (this.#sqFlags[0] & IORING_SQ_TASKRUN) !== 0;
  }

  /**
   * Whether the kernel holds completions aside because the CQ was full (IORING_SQ_CQ_OVERFLOW):
   * they reach the CQ only in an io_uring_enter with GETEVENTS ({@link runTaskWork}).
   */
  cqOverflowed(): boolean {
    // A plain read, as for taskWorkPending: the kernel sets it while posting.
    return (this.#sqFlags[0] & IORING_SQ_CQ_OVERFLOW) !== 0;
  }

  /**
   * Runs waiting completion task work (its CQEs get posted), and moves completions held aside
   * after a CQ overflow into the CQ; submits and waits for nothing.
   * With DEFER_TASKRUN one entry runs a limited amount of it (since Linux 6.13, 20 items; the
   * rest stays queued and IORING_SQ_TASKRUN set), so it enters until the flag stays clear: a
   * doIo(min 0) then hands back everything that had completed, and a caller draining until it
   * returns fewer than it could take leaves nothing behind. Completions keep coming only for
   * requests in flight, so the loop ends; its bound guards against a kernel that leaves the
   * flag set.
   */
  runTaskWork(): number {
    const flags = IORING_ENTER_GETEVENTS | this.#enterFlags;
    const u = this.#native.uring;
    let r = u.io_uring_enter(this.#enterFd, 0, 0, flags, null);
    for (let i = 0; this.deferTaskrun && r >= 0 && i < this.cqEntries && this.taskWorkPending(); i++) {
      r = u.io_uring_enter(this.#enterFd, 0, 0, flags, null);
    }
    return r;
  }

  /** The CQ head (next CQE to read). */
  cqHead(): number {
    return this.#cqHead[0];
  }

  /** The CQ tail (acquire load: CQE contents before it are visible). */
  cqTail(): number {
    return Atomics.load(this.#cqTail, 0);
  }

  /**
   * How many CQEs wait in the CQ, by plain reads: for a count taken right after io_uring_enter
   * returns, which cannot be older than what the kernel saw before returning (no engine moves a
   * load above a native call). Reading CQE contents still needs cqTail()'s acquire load.
   */
  cqReady(): number {
    return (this.#cqTail[0] - this.#cqHead[0]) >>> 0;
  }

  /** Hands CQEs up to `head` back to the kernel. */
  setCqHead(head: number): void {
    Atomics.store(this.#cqHead, 0, head);
  }

  /** Whether IORING_CQ_EVENTFD_DISABLED is clear. */
  eventfdEnabled(): boolean {
    return (Atomics.load(this.#cqFlags, 0) & IORING_CQ_EVENTFD_DISABLED) === 0;
  }

  /** Sets or clears IORING_CQ_EVENTFD_DISABLED (Linux 5.8+). */
  setEventfdEnabled(enabled: boolean): void {
    const f = this.#cqFlags[0];
    Atomics.store(
      this.#cqFlags,
      0,
      enabled ? f & ~IORING_CQ_EVENTFD_DISABLED : f | IORING_CQ_EVENTFD_DISABLED,
    );
  }

  /** Registers `fds` as fixed files 0..n-1. */
  registerFiles(fds: number[]): void {
    const buf = this.#native.alloc(4 * fds.length);
    new Int32Array(buf.buffer).set(fds);
    const r = this.#native.uring.io_uring_register_files(this.#struct, buf, fds.length);
    if (r < 0) throw errnoError(-r, "io_uring_register_files failed");
  }

  /**
   * Registers an empty table of `count` fixed buffers (IORING_RSRC_REGISTER_SPARSE, Linux 5.19),
   * filled later with {@link updateBuffer}. Returns 0 or -errno.
   */
  registerBufferTable(count: number): number {
    return this.#native.uring.io_uring_register_buffers_sparse(this.#struct, count);
  }

  /**
   * Makes fixed buffer `index` the `len` bytes at `addr` (the kernel pins their pages), or
   * empties it when `len` is 0. Requests already submitted keep what they imported. Returns 0 or
   * -errno (ENOMEM past RLIMIT_MEMLOCK without CAP_IPC_LOCK, EFAULT for memory that cannot be
   * pinned, EINVAL past 1 GiB).
   */
  updateBuffer(index: number, addr: number, len: number): number {
    const iov = new Uint32Array(this.#iov.buffer);
    iov[0] = addr >>> 0;
    iov[1] = (addr / 4294967296) >>> 0;
    iov[2] = len >>> 0;
    iov[3] = (len / 4294967296) >>> 0;
    const r = this.#native.uring.io_uring_register_buffers_update_tag(
      this.#struct,
      index,
      this.#iov,
      null,
      1,
    );
    return r < 0 ? r : 0;
  }

  /**
   * Hands every written SQE to the kernel now (with SQPOLL: waits until its thread took them).
   * Returns false when that did not happen.
   */
  flushSubmissions(): boolean {
    const deadline = performance.now() + 1000;
    while (performance.now() < deadline) {
      // With SQPOLL, published is not taken: compare with the kernel's head.
      const pending = this.sqPoll ? (this.#tail - this.#kernelSqHead()) >>> 0 : this.unsubmitted;
      if (pending === 0) return true;
      const r = this.enter(0, 0, -1);
      if (r < 0 && r !== -4 && r !== -11 && r !== -16) return false; // retry EINTR, EAGAIN, EBUSY
    }
    return false;
  }

  /**
   * Registers the ring fd with this thread unless it is already (see {@link registeredRing}).
   * Best effort: Linux < 5.18 says EINVAL, and a thread has 16 slots (EBUSY beyond), so a ring
   * made while they were taken may try again once one is free. Returns whether it is registered.
   */
  registerRingFd(): boolean {
    if (this.registeredRing || this.#closed) return this.registeredRing;
    if (this.#native.uring.io_uring_register_ring_fd(this.#struct) !== 1) return false;
    this.registeredRing = true;
    this.#enterFd = new DataView(this.#struct.buffer).getInt32(LIBURING_RING.enterRingFd, true);
    this.#enterFlags = IORING_ENTER_REGISTERED_RING;
    return true;
  }

  /** Registers the completion eventfd. */
  registerEventfd(fd: number): void {
    const r = this.#native.uring.io_uring_register_eventfd(this.#struct, fd);
    if (r < 0) throw errnoError(-r, "io_uring_register_eventfd failed");
  }

  /** The opcodes the kernel supports (empty when probing is not available, Linux < 5.6). */
  probe(): Set<number> {
    const ops = new Set<number>();
    const n = this.#native;
    const p = n.uring.io_uring_get_probe_ring(this.#struct);
    if (p === 0) {
      // NULL also when liburing's malloc or the kernel's IORING_REGISTER_PROBE ran out of
      // memory. A kernel that reports IORING_FEAT_RW_CUR_POS (5.6, with probing) can probe, so
      // that was a shortage: taken for "no opcodes", it left a queue without write zeroes and
      // discard (ENOTSUP) and Deno's waits without their relay, for good.
      if ((this.features & IORING_FEAT_RW_CUR_POS) !== 0) {
        throw errnoError(ENOMEM, "io_uring_get_probe_ring failed (short of memory)");
      }
      return ops;
    }
    try {
      const head = new Uint8Array(n.view(p, PROBE.header));
      const count = head[PROBE.opsLen];
      const body = new Uint8Array(n.view(p, PROBE.header + count * PROBE.opSize));
      for (let op = 0; op < count; op++) {
        const flags = body[PROBE.header + op * PROBE.opSize + PROBE.opFlags];
        if (flags & IO_URING_OP_SUPPORTED) ops.add(op);
      }
    } finally {
      n.uring.io_uring_free_probe(p);
    }
    return ops;
  }

  /** Tears the ring down (liburing unmaps and closes it). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // liburing also unregisters the ring fd here: a registration would otherwise keep the ring
    // (and its fixed file, the device) alive until the thread exits. Tested.
    this.#native.uring.io_uring_queue_exit(this.#struct);
  }
}
