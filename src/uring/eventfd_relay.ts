/**
 * EventfdRelay: makes an eventfd's signal show up as data in a pipe, so that a runtime whose
 * event loop can watch pipes but not eventfds (Deno) waits for completions without a thread.
 *
 * A small ring of its own holds, per wait, a one-shot POLL_ADD on the eventfd hard-linked to
 * an 8-byte WRITE into the pipe. When the eventfd is signalled, the kernel completes the poll
 * and runs the write as task work of the thread that submitted them (the JavaScript thread,
 * woken from its event-loop sleep for that), and the write makes the pipe readable for the
 * event loop. One wakeup per wait, where a poll(2) on a pool thread costs two (the pool thread,
 * then the event loop); measured in BENCHMARKS.md.
 *
 * The ring must use neither IORING_SETUP_COOP_TASKRUN nor DEFER_TASKRUN: with them that task
 * work would wait for the thread to enter io_uring, and a thread asleep in epoll never would.
 * The link is a hard link so that the write runs even when the poll fails: the wait then
 * ends with the poll's error instead of never.
 *
 * @module
 */
import type { Native } from "../../ffi/types.ts";
import { ERRNO } from "../errno.ts";
import { BlkioError } from "../errors.ts";
import { errnoError } from "../sys.ts";
import { IORING_OP, IOSQE_IO_HARDLINK, POLLIN } from "./constants.ts";
import { Ring } from "./ring.ts";
import { prepPollAdd, prepWrite, setCurrentPosition, setSqeFlags, setUserData } from "./sqe.ts";

/** One chain (2 SQEs) per wait, one wait at a time; room for a chain left over by a failure. */
const ENTRIES = 4;
const POLL = 1;
const WRITE = 2;
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;
const EAGAIN = 11;

/** Relays one eventfd to a pipe the event loop watches (see the module doc). */
export class EventfdRelay {
  readonly #native: Native;
  readonly #eventfd: number;
  readonly #ring: Ring;
  readonly #pipeRead: number;
  readonly #pipeWrite: number;
  /** What the write puts in the pipe (its content does not matter), and where it is. */
  readonly #token: Uint8Array;
  readonly #tokenAddr: number;
  /** Where the eventfd's counter is read to reset it. */
  readonly #counter: Uint8Array;
  #closed = false;
  /** The pipe's wait failed (an error, or EOF): this relay will not wake anyone again. */
  #broken = false;
  readonly #settle = (): void => this.#reap();
  readonly #pipeFailed = (e: unknown): never => {
    this.#broken = true;
    throw e;
  };

  private constructor(native: Native, eventfd: number, ring: Ring, pipeRead: number, pipeWrite: number) {
    this.#native = native;
    this.#eventfd = eventfd;
    this.#ring = ring;
    this.#pipeRead = pipeRead;
    this.#pipeWrite = pipeWrite;
    this.#token = native.alloc(8);
    this.#token[0] = 1;
    this.#tokenAddr = native.addressOf(this.#token.buffer as ArrayBuffer);
    this.#counter = native.alloc(8);
  }

  /**
   * A relay for `eventfd` (non-blocking, read by nobody else), or null when this kernel cannot
   * do it (no io_uring, or no POLL_ADD or WRITE: Linux < 5.6). Throws BlkioError when a resource
   * is short (EMFILE, ENFILE, ENOMEM): that passes, and the caller should try again later rather
   * than settle for the thread-holding wait for good.
   */
  static open(native: Native, eventfd: number): EventfdRelay | null {
    let ring: Ring;
    try {
      // Entered once per wait, so it leaves the thread's registered-ring slots to I/O rings.
      ring = new Ring(native, ENTRIES, 0, [], false);
    } catch (e) {
      // No io_uring here (ENOSYS), or not for this process (EPERM: io_uring_disabled, seccomp).
      if (e instanceof BlkioError && (e.errno === ERRNO.ENOSYS || e.errno === ERRNO.EPERM)) return null;
      throw e;
    }
    let ops: Set<number>;
    try {
      ops = ring.probe();
    } catch (e) {
      ring.close(); // short of memory: the caller tries again later
      throw e;
    }
    if (!ops.has(IORING_OP.POLL_ADD) || !ops.has(IORING_OP.WRITE)) {
      ring.close();
      return null;
    }
    const fds = native.alloc(8);
    if (native.libc.pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
      const errno = native.errno();
      ring.close();
      throw errnoError(errno, "pipe2 for the completion relay failed");
    }
    const v = new DataView(fds.buffer);
    return new EventfdRelay(native, eventfd, ring, v.getInt32(0, true), v.getInt32(4, true));
  }

  /**
   * Resolves once the eventfd was signalled (at once if it was since the last wait) and resets
   * its counter; rejects with the error of the poll or the write if one failed. One wait at a
   * time; it keeps the event loop alive while pending.
   */
  wait(): Promise<void> {
    if (this.#closed) return Promise.reject(errnoError(9, "The eventfd relay is closed"));
    const ring = this.#ring;
    // A failed io_uring_enter leaves its chain queued: submit that one rather than another.
    if (ring.unsubmitted === 0) {
      const sqes = ring.sqes;
      let i = ring.nextSqe();
      prepPollAdd(sqes, i, this.#eventfd, POLLIN);
      setSqeFlags(sqes, i, IOSQE_IO_HARDLINK);
      setUserData(sqes, i, POLL);
      i = ring.nextSqe();
      prepWrite(sqes, i, this.#pipeWrite, this.#tokenAddr, 8, 0);
      setCurrentPosition(sqes, i);
      setUserData(sqes, i, WRITE);
    }
    const r = ring.enter(0, 0, -1);
    if (r < 0) return Promise.reject(errnoError(-r, "io_uring_enter failed (eventfd relay)"));
    // A poll that failed as the kernel took it from the SQ (Linux 5.10 looks its file up then: a
    // bad fd fails it EBADF; 6.1 looks it up when the poll runs, and the write follows) fails
    // its link too, hard or not: the write fails ECANCELED (5.10.262 guest: both CQEs are in when
    // io_uring_enter returns), or stays in the SQ where the submission stops at the poll, and the
    // pipe never gets its token. The wait never ended (5.10 guest, both runtimes). The write, if
    // still in the SQ, is taken back, and the wait ends with the poll's error.
    if (this.#pollFailedAlone()) {
      ring.retractUnsubmitted(() => {});
      try {
        this.#reap();
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return this.#native.waitPipe(this.#pipeRead).then(this.#settle, this.#pipeFailed);
  }

  /**
   * Whether the chain's poll has failed and its write will not run: the poll's error CQE is in,
   * and the write is still in the SQ or has failed too. Reads the CQ without consuming it.
   */
  #pollFailedAlone(): boolean {
    const ring = this.#ring;
    let pollFailed = false, writeFailed = false;
    for (let head = ring.cqHead(), tail = ring.cqTail(); head !== tail; head = (head + 1) >>> 0) {
      const k = head & ring.cqMask;
      if (ring.cqesRes[4 * k + 2] >= 0) continue;
      if (ring.cqes[4 * k] === POLL) pollFailed = true;
      else writeFailed = true;
    }
    return pollFailed && (writeFailed || ring.unsubmitted > 0);
  }

  /** Whether the pipe's wait failed: every later wait would too, so make a new relay. */
  get broken(): boolean {
    return this.#broken;
  }

  /** Resets the eventfd and reaps the chain's completions; throws the first error among them. */
  #reap(): void {
    const n = Number(this.#native.libc.read(this.#eventfd, this.#counter, 8n));
    if (n < 0 && this.#native.errno() !== EAGAIN) {
      throw errnoError(this.#native.errno(), "Reading the eventfd failed");
    }
    const ring = this.#ring;
    const tail = ring.cqTail();
    let head = ring.cqHead();
    let error = 0;
    let what = "";
    for (; head !== tail; head = (head + 1) >>> 0) {
      const k = head & ring.cqMask;
      const res = ring.cqesRes[4 * k + 2];
      if (res < 0 && error === 0) {
        error = -res;
        what = ring.cqes[4 * k] === POLL ? "Polling the eventfd failed" : "Writing the relay pipe failed";
      }
    }
    ring.setCqHead(head);
    if (error !== 0) throw errnoError(error, what);
  }

  /** Releases the ring and the pipe; call with no wait pending. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#ring.close();
    await this.#native.forgetPipe(this.#pipeRead);
    this.#native.libc.close(this.#pipeWrite);
  }
}
