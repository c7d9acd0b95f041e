/**
 * One virtio-blk queue over vhost-user: a split virtqueue, its kick and call eventfds, and the
 * table of requests in flight.
 *
 * A request is a descriptor chain `[out header][data...][status]` (`[out header][segment]
 * [status]` for discard and write zeroes). The request's slot index picks its header memory;
 * the chain head maps back to the slot when the device returns it. Work the device cannot do in
 * one request continues in the same slot: FUA is a write followed by a flush (virtio-blk has no
 * FUA), and long discard / write-zeroes ranges go in chunks of the device's limit.
 *
 * The back-end is another process and may die. Its hang-up is seen on the vhost-user socket
 * (polled alongside the call eventfd while waiting, and from time to time otherwise); the
 * requests it still returns within a second complete with what it said, the rest with -EIO, and
 * new ones fail at once, so nothing waits forever. A control message that fails (no reply in
 * time) is not a hang-up: the back-end may be slow and still have the requests, so they stay in
 * flight until it returns them.
 *
 * @module
 */
import type { Native } from "../../../ffi/types.ts";
import { abandon } from "../../abandoned.ts";
import { BUFFER_REMEDIES, bufferAddress, bufferOf, byteLengthOf } from "../../buffers.ts";
import { type Completion, Op, type OpValue, ReqFlags } from "../../completion.ts";
import type { CompletionBacklog } from "../../completion_backlog.ts";
import type { DriverQueue } from "../../driver.ts";
import { ERRNO } from "../../errno.ts";
import { closeFd, signalEventfd } from "../../sys.ts";
import { HANG_UP, POLL_HANG_UP } from "./unix_socket.ts";
import type { MemTable } from "./mem_table.ts";
import type { VhostUserClient } from "./vhost_user.ts";
import {
  BLK_WRITE_ZEROES_FLAG_UNMAP,
  BlkReqType,
  BlkStatus,
  OUTHDR_SIZE,
  SECTOR_SIZE,
} from "./virtio_blk.ts";
import {
  HEADER_OUTHDR,
  HEADER_SEGMENT,
  HEADER_SLOT_SIZE,
  HEADER_STATUS,
  type SplitVirtqueue,
} from "./virtqueue.ts";

const EIO = ERRNO.EIO;
const EBADF = ERRNO.EBADF;
const EINVAL = ERRNO.EINVAL;
const EINTR = ERRNO.EINTR;
const ENOTSUP = ERRNO.ENOTSUP;
const ETIME = ERRNO.ETIME;
const ECANCELED = ERRNO.ECANCELED;
const POLLIN = 1;
const U32_MAX = 0xffffffff;
/** reap() result of a request that went on with its next step instead of completing. */
const CONTINUED = 1;
/** A status byte the device has not written. */
const STATUS_UNSET = 0xff;
/** How often (ms) a queue that is not waiting looks for a back-end hang-up. */
const HANGUP_CHECK_MS = 100;
/** How long destroy() waits for the requests the back-end has (as the io_uring driver does). */
export const DESTROY_DRAIN_MS = 1000;
/**
 * How long requests in flight may still come back after the back-end hung up, when it is not
 * known whether its process lives (see #settle).
 */
const HANGUP_DRAIN_MS = 1000;
/** The longest a wait for requests of a broken queue lasts before doIo looks again. */
const SETTLE_STEP_MS = 50;
/**
 * The longest one sleep on the call eventfd lasts before the used ring is looked at again: a
 * back-end that returns requests without signalling (a bug, or a notification lost) would
 * otherwise leave a wait without a timeout asleep for ever with its completions in the ring.
 */
const WAIT_STEP_MS = 100;

/** What a queue needs to know of the device (fixed at start). */
export interface VirtioDeviceInfo {
  /** The instance's read-only property. */
  readOnly: boolean;
  /** FLUSH negotiated (else flush completes at once and FUA needs nothing). */
  flush: boolean;
  discard: boolean;
  writeZeroes: boolean;
  requestAlignment: number;
  /** seg_max when negotiated, else 0 (then only the queue size limits segments). */
  maxSegments: number;
  /** size_max when negotiated, else 0. */
  maxSegmentLen: number;
  /** The longest read or write, in bytes (max-transfer). */
  maxTransfer: number;
  /** Bytes of one discard / write-zeroes request to the device. */
  discardChunk: number;
  writeZeroesChunk: number;
  /** Capacity in bytes at start: a read or write failing past it says so (the device says EIO). */
  capacity: number;
}

/** Options of {@link VirtioBlkQueue}. */
export interface VirtioBlkQueueOptions {
  /** The virtqueue index on the device. */
  index: number;
  poll: boolean;
  vq: SplitVirtqueue;
  kickFd: number;
  callFd: number;
  device: VirtioDeviceInfo;
  /** The mapped memory regions buffers must lie in. */
  memTable: MemTable;
  conn: VhostUserClient;
  /** Called once by destroy(), after the queue stopped using its fds. */
  onDestroy: (index: number) => void;
  /**
   * Until when (a performance.now() time) destroy() waits for the requests the back-end has:
   * one deadline for all the queues of an instance being destroyed, not a second each.
   */
  drainDeadline: () => number;
}

/** A queue of the virtio-blk-vhost-user driver. */
export class VirtioBlkQueue implements DriverQueue {
  completions!: CompletionBacklog;
  readonly isPollQueue: boolean;
  readonly completionFd: number;
  /** A back-end that died signals nothing: it is found when the queue is entered. */
  readonly failureCheckMs = HANGUP_CHECK_MS;
  readonly index: number;
  readonly #native: Native;
  readonly #vq: SplitVirtqueue;
  readonly #kickFd: number;
  readonly #callFd: number;
  readonly #dev: VirtioDeviceInfo;
  readonly #mem: MemTable;
  readonly #conn: VhostUserClient;
  readonly #onDestroy: (index: number) => void;
  readonly #drainDeadline: () => number;
  readonly #hdr: DataView;
  readonly #hdrBytes: Uint8Array;
  readonly #hdrAddr: number;
  readonly #eight: Uint8Array;
  readonly #pollfds: Uint8Array;
  readonly #pollView: DataView;
  #interruptsWanted = true;
  #why = "";
  #broken: string | null = null;
  /** The back-end returned a used entry that is not in flight: nothing in the used ring counts. */
  #corrupt = false;
  #destroyed = false;
  #lastHangupCheck = 0;
  // Slot table, struct-of-arrays so nothing is allocated per request.
  readonly #cap: number;
  readonly #free: Int32Array;
  #freeTop: number;
  /** Non-zero while in use: the request's number, the oldest lowest (for cancel()). */
  readonly #used: Float64Array;
  #age = 0;
  readonly #op: Uint8Array;
  /** 0: the request itself, 1: the flush that makes it FUA. */
  readonly #phase: Uint8Array;
  readonly #flags: Uint32Array;
  readonly #start: Float64Array;
  readonly #len: Float64Array;
  /** Discard / write zeroes: bytes done, and bytes in the request now in the ring. */
  readonly #done: Float64Array;
  readonly #chunk: Float64Array;
  readonly #addr: Float64Array;
  readonly #nseg: Int32Array;
  /** Whether the slot's chain is in the ring (vs not yet sent, or taken back unpublished). */
  readonly #inRing: Uint8Array;
  #ringCount = 0;
  /** cancel() asked to stop after the step now in the ring. */
  readonly #cancelled: Uint8Array;
  readonly #ud: unknown[];
  readonly #buf: (Uint8Array | null)[];
  readonly #iov: (readonly Uint8Array[] | null)[];
  readonly #headSlot: Int32Array;

  constructor(native: Native, opts: VirtioBlkQueueOptions) {
    this.#native = native;
    this.index = opts.index;
    this.isPollQueue = opts.poll;
    this.#vq = opts.vq;
    this.#kickFd = opts.kickFd;
    this.#callFd = opts.callFd;
    this.completionFd = opts.poll ? -1 : opts.callFd;
    this.#dev = opts.device;
    this.#mem = opts.memTable;
    this.#conn = opts.conn;
    this.#onDestroy = opts.onDestroy;
    this.#drainDeadline = opts.drainDeadline;
    const h = opts.vq.headers;
    this.#hdrBytes = h;
    this.#hdr = new DataView(h.buffer, h.byteOffset, h.byteLength);
    this.#hdrAddr = opts.vq.headersAddr;
    this.#eight = native.alloc(8);
    this.#pollfds = native.alloc(16);
    this.#pollView = new DataView(this.#pollfds.buffer);
    // A poll queue never wants notifications: it reads the used ring itself.
    if (opts.poll) {
      this.#interruptsWanted = false;
      opts.vq.setInterrupts(false);
    }
    const cap = opts.vq.size;
    this.#cap = cap;
    this.#free = new Int32Array(cap);
    for (let i = 0; i < cap; i++) this.#free[i] = cap - 1 - i;
    this.#freeTop = cap;
    this.#used = new Float64Array(cap);
    this.#op = new Uint8Array(cap);
    this.#phase = new Uint8Array(cap);
    this.#flags = new Uint32Array(cap);
    this.#start = new Float64Array(cap);
    this.#len = new Float64Array(cap);
    this.#done = new Float64Array(cap);
    this.#chunk = new Float64Array(cap);
    this.#addr = new Float64Array(cap);
    this.#nseg = new Int32Array(cap);
    this.#inRing = new Uint8Array(cap);
    this.#cancelled = new Uint8Array(cap);
    this.#ud = new Array(cap).fill(undefined);
    this.#buf = new Array(cap).fill(null);
    this.#iov = new Array(cap).fill(null);
    this.#headSlot = new Int32Array(cap).fill(-1);
  }

  get inFlight(): number {
    return this.#cap - this.#freeTop;
  }

  get pendingSubmit(): number {
    // Chains a dead back-end will never see are not pending: they were failed.
    if (this.#broken !== null) return 0;
    return this.#vq.unpublished;
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
    if (this.#broken !== null) {
      this.completions.push(userData, -EIO, this.#broken);
      return true;
    }
    const nseg = this.#check(op, start, buf, iovecs, len);
    if (nseg < 0) {
      this.completions.push(userData, nseg, this.#why);
      return true;
    }
    // Nothing for the device to do: an empty transfer, or a flush it does not need.
    if ((len === 0 && op !== Op.Flush) || (op === Op.Flush && !this.#dev.flush)) {
      this.completions.push(userData, 0, null);
      return true;
    }
    const descs = descriptorsFor(op, nseg);
    if (this.#freeTop === 0 || this.#vq.numFree < descs) return false;
    const slot = this.#free[--this.#freeTop];
    this.#used[slot] = ++this.#age;
    this.#op[slot] = op;
    this.#phase[slot] = 0;
    this.#flags[slot] = flags;
    this.#start[slot] = start;
    this.#len[slot] = len;
    this.#done[slot] = 0;
    this.#cancelled[slot] = 0;
    this.#nseg[slot] = nseg;
    this.#ud[slot] = userData;
    this.#buf[slot] = buf;
    this.#iov[slot] = iovecs;
    this.#addr[slot] = buf === null ? 0 : bufferAddress(this.#native, buf);
    this.#prep(slot);
    return true;
  }

  /**
   * The number of data segments of a valid request, or -errno (message in #why) for one that
   * must fail without reaching the device.
   */
  #check(
    op: OpValue,
    start: number,
    buf: Uint8Array | null,
    iovecs: readonly Uint8Array[] | null,
    len: number,
  ): number {
    const dev = this.#dev;
    // A flush the device does not need completes without reaching it (tryEnqueue).
    if (op === Op.Flush) return dev.flush ? this.#fitsRing(op, 0) : 0;
    // libblkio's order (VirtioBlk's try_enqueue): a write zeroes or discard the device lacks
    // (ENOTSUP), the start offset and a write zeroes' or discard's end (EINVAL), then the
    // read-only flag (EBADF). It leaves a write's length to the device; checked here, it comes
    // after the flag. A misaligned write on a read-only instance was EBADF.
    const ranged = op === Op.WriteZeroes || op === Op.Discard;
    if (op === Op.WriteZeroes && !dev.writeZeroes) {
      return this.#fail(ENOTSUP, "the device does not support write zeroes");
    }
    if (op === Op.Discard && !dev.discard) return this.#fail(ENOTSUP, "the device does not support discard");
    const ra = dev.requestAlignment;
    if (start % ra !== 0) {
      return this.#fail(
        EINVAL,
        `invalid start offset: ${start} is not a multiple of request-alignment (${ra})`,
      );
    }
    const badLength = len % ra !== 0;
    if (ranged && badLength) return this.#badLength(len, ra);
    if ((ranged || op === Op.Write || op === Op.Writev) && dev.readOnly) {
      return this.#fail(EBADF, "device is read-only");
    }
    if (ranged) return this.#fitsRing(op, 0);
    if (badLength) return this.#badLength(len, ra);
    if (len > dev.maxTransfer) {
      return this.#fail(EINVAL, `invalid length: ${len} is more than max-transfer (${dev.maxTransfer})`);
    }
    let nseg = 0;
    if (buf !== null) {
      if (byteLengthOf(buf) > 0) {
        const bad = this.#checkSegment(buf);
        if (bad < 0) return bad;
        nseg = 1;
      }
    } else {
      for (const b of iovecs!) {
        if (byteLengthOf(b) === 0) continue;
        const bad = this.#checkSegment(b);
        if (bad < 0) return bad;
        nseg++;
      }
    }
    if (dev.maxSegments > 0 && nseg > dev.maxSegments) {
      return this.#fail(EINVAL, `request has ${nseg} segments but max-segments is ${dev.maxSegments}`);
    }
    return this.#fitsRing(op, nseg);
  }

  /**
   * `nseg`, or -EINVAL when the request needs more descriptors than the ring has: libblkio leaves
   * such a request in its queue forever, and every request behind it with it.
   */
  #fitsRing(op: OpValue, nseg: number): number {
    const descs = descriptorsFor(op, nseg);
    if (descs <= this.#cap) return nseg;
    const fix = nseg > 1 ? "use fewer segments or a larger queue-size" : "use a larger queue-size";
    return this.#fail(EINVAL, `request needs ${descs} descriptors but queue-size is ${this.#cap}: ${fix}`);
  }

  #checkSegment(b: Uint8Array): number {
    const len = byteLengthOf(b);
    const max = this.#dev.maxSegmentLen;
    if (len > U32_MAX || (max > 0 && len > max)) {
      return this.#fail(EINVAL, `a buffer of ${len} bytes exceeds max-segment-len (${max || U32_MAX})`);
    }
    if (!this.#mem.contains(bufferOf(b), bufferAddress(this.#native, b), len)) {
      return this.#fail(
        EINVAL,
        "buffer is not inside a mapped memory region of virtio-blk-vhost-user" + BUFFER_REMEDIES.mapped,
      );
    }
    return 0;
  }

  #badLength(len: number, ra: number): number {
    return this.#fail(EINVAL, `invalid length: ${len} is not a multiple of request-alignment (${ra})`);
  }

  #fail(errno: number, why: string): number {
    this.#why = why;
    return -errno;
  }

  /** Writes the descriptor chain for the current step of request `slot` and queues it. */
  #prep(slot: number): void {
    const vq = this.#vq, h = this.#hdr;
    const base = slot * HEADER_SLOT_SIZE;
    const hdrAddr = this.#hdrAddr + base;
    const statusAddr = hdrAddr + HEADER_STATUS;
    this.#hdrBytes[base + HEADER_STATUS] = STATUS_UNSET;
    const op = this.#phase[slot] === 1 ? Op.Flush : this.#op[slot];
    let type: number;
    let sector = 0;
    switch (op) {
      case Op.Read:
      case Op.Readv:
        type = BlkReqType.IN;
        sector = this.#start[slot] / SECTOR_SIZE;
        break;
      case Op.Write:
      case Op.Writev:
        type = BlkReqType.OUT;
        sector = this.#start[slot] / SECTOR_SIZE;
        break;
      case Op.WriteZeroes:
        type = BlkReqType.WRITE_ZEROES;
        break;
      case Op.Discard:
        type = BlkReqType.DISCARD;
        break;
      default:
        type = BlkReqType.FLUSH;
    }
    h.setUint32(base + HEADER_OUTHDR, type, true);
    h.setUint32(base + HEADER_OUTHDR + 4, 0, true); // ioprio
    setU64(h, base + HEADER_OUTHDR + 8, sector);
    vq.push(hdrAddr, OUTHDR_SIZE, false);
    if (op === Op.WriteZeroes || op === Op.Discard) {
      // The chunks go from the end of the range back to its start. A device refuses a chunk
      // that reaches past its end whole, and it is then the first one sent: a request past the
      // end fails with nothing done. Sent from the start, the chunks inside the device were
      // zeroed (or discarded) before the last one failed, and the request reported EIO over a
      // range it had changed (fuzzer, 40 MiB export). The capacity at start cannot decide this
      // up front: the device may have grown since.
      const done = this.#done[slot];
      const max = op === Op.Discard ? this.#dev.discardChunk : this.#dev.writeZeroesChunk;
      const chunk = Math.min(this.#len[slot] - done, max);
      this.#chunk[slot] = chunk;
      const seg = base + HEADER_SEGMENT;
      setU64(h, seg, (this.#start[slot] + this.#len[slot] - done - chunk) / SECTOR_SIZE);
      h.setUint32(seg + 8, chunk / SECTOR_SIZE, true);
      const unmap = op === Op.WriteZeroes && (this.#flags[slot] & ReqFlags.NO_UNMAP) === 0;
      h.setUint32(seg + 12, unmap ? BLK_WRITE_ZEROES_FLAG_UNMAP : 0, true);
      vq.push(hdrAddr + HEADER_SEGMENT, 16, false);
    } else if (op !== Op.Flush) {
      const deviceWrites = op === Op.Read || op === Op.Readv;
      const buf = this.#buf[slot];
      if (buf !== null) {
        vq.push(this.#addr[slot], byteLengthOf(buf), deviceWrites);
      } else {
        for (const b of this.#iov[slot]!) {
          const len = byteLengthOf(b);
          if (len > 0) vq.push(bufferAddress(this.#native, b), len, deviceWrites);
        }
      }
    }
    vq.push(statusAddr, 1, true);
    const head = vq.commit();
    this.#headSlot[head] = slot;
    this.#inRing[slot] = 1;
    this.#ringCount++;
  }

  reap(out: Completion[], n: number, max: number): number {
    const vq = this.#vq;
    const n0 = n;
    while (n < max && this.#ringCount > 0) {
      let head: number;
      try {
        head = vq.popUsed();
      } catch (e) {
        this.#corrupt = true;
        this.#breakDown(`The vhost-user back-end corrupted the virtqueue: ${(e as Error).message}`);
        break;
      }
      if (head < 0) break;
      const slot = this.#takeHead(head);
      if (slot < 0) {
        // The virtqueue knew the chain but no request holds it any more (one written off after
        // a hang-up): completing it would complete some other request, or none, twice.
        this.#corrupt = true;
        this.#breakDown(
          `The vhost-user back-end corrupted the virtqueue: descriptor ${head} belongs to no request`,
        );
        break;
      }
      const status = this.#hdrBytes[slot * HEADER_SLOT_SIZE + HEADER_STATUS];
      if (status === STATUS_UNSET) {
        // Returned without its status written: a head the back-end returned for another request
        // (one it returned twice, a stale entry) while it still has this one and will write its
        // buffers. Nothing in the ring can be told apart from that: the queue is done with.
        const userData = this.#unfinished(slot, head);
        if (!this.completions.deliver(out, n, userData, -EIO, this.#broken)) break;
        n++;
        break;
      }
      const ret = this.#finish(slot, status);
      if (ret === CONTINUED) continue;
      const userData = this.#ud[slot];
      this.#release(slot);
      // An unwritable out entry: the completion went to the backlog, and this one is consumed.
      if (!this.completions.deliver(out, n, userData, ret, ret === 0 ? null : this.#why)) break;
      n++;
    }
    if (n === n0 && this.#ringCount > 0 && this.#broken === null) this.#maybeCheckHangup();
    // Never waits here: reap runs on event loops (BlockDevice's failure check).
    if (this.#broken !== null && this.inFlight > 0) this.#settle(performance.now());
    if (n < max && this.completions.length > 0 && this.#broken !== null && this.completions.badOut < 0) {
      n = this.completions.fill(out, n, max);
    }
    return n;
  }

  /** The completion value of request `slot` given its status byte, or CONTINUED. */
  #finish(slot: number, status: number): number {
    if (status !== BlkStatus.OK) {
      if (status === BlkStatus.UNSUPP) return this.#fail(ENOTSUP, "the device does not support this request");
      if (status === BlkStatus.IOERR) return this.#fail(EIO, this.#ioErrorMsg(slot));
      return this.#fail(EIO, `the device returned an invalid status (${status})`);
    }
    if (!this.#hasNextStep(slot)) return 0;
    const op = this.#op[slot];
    if (op === Op.WriteZeroes || op === Op.Discard) this.#done[slot] += this.#chunk[slot];
    if (this.#done[slot] >= this.#len[slot] || (op !== Op.WriteZeroes && op !== Op.Discard)) {
      this.#phase[slot] = 1; // the rest is the flush that makes it FUA
    }
    if (this.#cancelled[slot]) return this.#fail(ECANCELED, "request cancelled before it completed");
    // The next step always fits: the chain just popped freed its descriptors, and no step needs
    // more than the one before it (a flush 2, a discard or write zeroes chunk 3 each time; see
    // descriptorsFor). So a continuation never waits, and a cancel() never finds one waiting.
    this.#prep(slot);
    return CONTINUED;
  }

  /**
   * The message of an I/O error: past the end of the device, a plain EIO reads like a failing
   * disk (new-user walkthrough).
   */
  #ioErrorMsg(slot: number): string {
    const start = this.#start[slot], len = this.#len[slot], cap = this.#dev.capacity;
    if (start + len <= cap) return "the device reported an I/O error";
    return `the device reported an I/O error: the request, ${len} bytes at ${start}, reaches past its end ` +
      `(capacity ${cap} at start)`;
  }

  /**
   * Whether request `slot`, whose current step succeeded, has another: the next chunk of a
   * discard or write zeroes, or the flush after a FUA write.
   */
  #hasNextStep(slot: number): boolean {
    if (this.#phase[slot] !== 0) return false;
    const op = this.#op[slot];
    if (
      (op === Op.WriteZeroes || op === Op.Discard) && this.#done[slot] + this.#chunk[slot] < this.#len[slot]
    ) {
      return true;
    }
    const fuaOp = op === Op.Write || op === Op.Writev || op === Op.WriteZeroes;
    return fuaOp && (this.#flags[slot] & ReqFlags.FUA) !== 0 && this.#dev.flush;
  }

  #release(slot: number): void {
    this.#used[slot] = 0;
    this.#ud[slot] = undefined;
    this.#buf[slot] = null;
    this.#iov[slot] = null;
    this.#free[this.#freeTop++] = slot;
  }

  /**
   * This queue is done with: the back-end hung up, or it corrupted the virtqueue (then nothing
   * it writes there can be trusted, and no further control message is sent either). From now on
   * every request fails.
   */
  #breakDown(reason: string): void {
    if (this.#corrupt) this.#conn.markBroken(reason);
    this.#broken ??= reason;
  }

  /** The back-end hung up: the queue breaks down (see #settle for its requests). */
  #hungUp(): void {
    this.#breakDown(`vhost-user back-end disconnected: ${this.#conn.hungUpReason ?? "connection lost"}`);
  }

  /**
   * Completes what it can of the requests in flight once the queue broke down, waiting until
   * `waitUntil` (a performance.now() time; now: no wait) for more, in steps of SETTLE_STEP_MS.
   * A back-end that hung up may still be finishing what it had: qemu-storage-daemon shuts its end
   * of the socket first and then waits for its requests in flight, which go on writing into this
   * process's memory and the used ring. So what it returns completes with what it said; requests
   * it never had complete with -EIO at once; and those it has stay in flight while its process
   * lives (failed earlier, their buffers went back to the application, and its late writes
   * landed in whatever they held next). Once it has exited they complete with -EIO. A back-end
   * whose pid is not visible here gets HANGUP_DRAIN_MS from the hang-up, and then the buffers of
   * what it still has are abandoned (kept referenced, their regions never unmapped). Nothing in
   * a corrupted ring is read at all: its requests fail at once, their buffers abandoned.
   */
  #settle(waitUntil: number): void {
    const msg = this.#broken ?? "vhost-user back-end disconnected";
    const vq = this.#vq, v = this.#pollView, libc = this.#native.libc;
    // Chains never published: the back-end never saw them.
    for (const head of vq.retractUnpublished()) this.#takeHead(head);
    const restore = !vq.interrupts;
    if (restore) vq.setInterrupts(true);
    try {
      for (;;) {
        while (!this.#corrupt && this.#ringCount > 0) {
          let head: number;
          try {
            head = vq.popUsed();
          } catch {
            this.#corrupt = true; // nothing in it can be trusted
            break;
          }
          if (head < 0) break;
          this.#completeAfterHangup(head);
        }
        this.#failRequests(false, msg); // those the back-end does not have
        if (this.#ringCount === 0) break;
        const now = performance.now();
        const peer = this.#corrupt ? "unknown" : this.#conn.peerState();
        if (
          this.#corrupt || peer === "exited" ||
          (peer === "unknown" && now >= this.#conn.hungUpAt + HANGUP_DRAIN_MS)
        ) {
          this.#failRequests(true, msg, peer !== "exited");
          break;
        }
        if (now >= waitUntil) return;
        v.setInt32(0, this.#callFd, true);
        v.setInt16(4, POLLIN, true);
        v.setInt16(6, 0, true);
        const ms = Math.ceil(Math.min(waitUntil - now, SETTLE_STEP_MS));
        if (libc.poll(this.#pollfds, 1n, ms) > 0) libc.read(this.#callFd, this.#eight, 8n);
      }
      this.#headSlot.fill(-1);
    } finally {
      if (restore) vq.setInterrupts(false);
    }
  }

  /**
   * Completes with -EIO the requests in use that the back-end has (`inRing`), or that it does not
   * (never sent, or taken back unpublished); `keep`: abandon the buffers of the first kind.
   */
  #failRequests(inRing: boolean, msg: string, keep = false): void {
    for (let s = 0; s < this.#cap; s++) {
      if (this.#used[s] === 0 || (this.#inRing[s] === 1) !== inRing) continue;
      const ud = this.#ud[s];
      if (inRing) {
        this.#inRing[s] = 0;
        this.#ringCount--;
        if (keep) abandon(this.#buf[s], this.#iov[s]);
      }
      this.#release(s);
      this.completions.push(ud, -EIO, msg);
    }
  }

  /**
   * Request `slot`, taken out of the ring by `head`, came back with its status byte unwritten:
   * the ring is corrupt (the queue breaks down) and the request's buffers are abandoned, as the
   * back-end may still be working on it. Releases the slot; returns its userData (to complete
   * with -EIO).
   */
  #unfinished(slot: number, head: number): unknown {
    this.#corrupt = true;
    this.#breakDown(
      `The vhost-user back-end corrupted the virtqueue: it returned descriptor ${head} without ` +
        "writing the request's status",
    );
    const userData = this.#ud[slot];
    abandon(this.#buf[slot], this.#iov[slot]);
    this.#release(slot);
    return userData;
  }

  /** Completes the request whose chain `head` a back-end that hung up returned. */
  #completeAfterHangup(head: number): void {
    const slot = this.#takeHead(head);
    if (slot < 0) return;
    const status = this.#hdrBytes[slot * HEADER_SLOT_SIZE + HEADER_STATUS];
    if (status === STATUS_UNSET) {
      this.completions.push(this.#unfinished(slot, head), -EIO, this.#broken);
      return;
    }
    // A step other than the last that succeeded leaves the request unfinished: -EIO in #settle.
    if (status === BlkStatus.OK && this.#hasNextStep(slot)) return;
    const ret = this.#finish(slot, status);
    const ud = this.#ud[slot];
    this.#release(slot);
    this.completions.push(ud, ret, ret === 0 ? null : this.#why);
  }

  /**
   * Application-level polling (doIo with min 0) never waits on the socket, so a reap that finds
   * nothing looks for a hang-up now and then.
   */
  #maybeCheckHangup(): void {
    const now = performance.now();
    if (now - this.#lastHangupCheck < HANGUP_CHECK_MS) return;
    this.#lastHangupCheck = now;
    this.#checkHangup();
  }

  /** Looks for a back-end hang-up; true (and the queue broken) when there was one. */
  #checkHangup(): boolean {
    if (this.#broken === null && this.#conn.checkHangup()) this.#hungUp();
    return this.#broken !== null;
  }

  enter(minComplete: number, timeoutNs: number): number {
    if (this.#broken === null && this.#conn.hungUpReason !== null) this.#hungUp();
    // Before publishing: a used index already ahead of what the device has would have the next
    // chains taken for entries it skipped (reap finds it too, but only with chains in the ring).
    if (this.#broken === null && this.#vq.usedOverrun) {
      this.#corrupt = true;
      this.#breakDown("The vhost-user back-end corrupted the virtqueue: its used index ran ahead");
    }
    if (this.#broken !== null) {
      // Waits for a request's end only when asked to, and at most a step (doIo calls again).
      const now = performance.now();
      const until = minComplete <= 0 ? now : timeoutNs >= 0 ? now + timeoutNs / 1e6 : now + SETTLE_STEP_MS;
      if (this.inFlight > 0) this.#settle(Math.min(until, now + SETTLE_STEP_MS));
      return 0;
    }
    if (this.#vq.publish()) this.#kick();
    if (this.#ringCount === 0 || minComplete <= 0) return 0;
    // Completions only come from chains in the ring; waiting for more would never end.
    const target = Math.min(minComplete, this.#ringCount);
    const deadline = timeoutNs >= 0 ? performance.now() + timeoutNs / 1e6 : -1;
    return this.isPollQueue ? this.#spin(target, deadline) : this.#wait(target, deadline);
  }

  #kick(): void {
    signalEventfd(this.#native, this.#kickFd);
  }

  /** Busy-polls the used ring (poll queues). */
  #spin(target: number, deadline: number): number {
    const vq = this.#vq;
    let spins = 0;
    let lastCheck = performance.now();
    while (vq.usedPending < target) {
      if ((++spins & 1023) !== 0) continue;
      const now = performance.now();
      if (deadline >= 0 && now >= deadline) return -ETIME;
      if (now - lastCheck >= 10) {
        lastCheck = now;
        if (this.#checkHangup()) {
          this.#settle(Math.min(deadline >= 0 ? deadline : now + SETTLE_STEP_MS, now + SETTLE_STEP_MS));
          return 0;
        }
      }
    }
    return 0;
  }

  /** Sleeps on the call eventfd and the vhost-user socket until `target` used entries. */
  #wait(target: number, deadline: number): number {
    const vq = this.#vq, v = this.#pollView, libc = this.#native.libc;
    // Waiting needs notifications even when the application turned them off.
    const restore = !this.#interruptsWanted;
    if (restore) vq.setInterrupts(true);
    try {
      for (;;) {
        if (vq.usedPending >= target) return 0;
        let ms = WAIT_STEP_MS;
        if (deadline >= 0) {
          const left = deadline - performance.now();
          if (left <= 0) return -ETIME;
          ms = Math.min(Math.ceil(left), WAIT_STEP_MS);
        }
        v.setInt32(0, this.#callFd, true);
        v.setInt16(4, POLLIN, true);
        v.setInt16(6, 0, true);
        // A hang-up only: the late reply to a control message whose wait timed out may be
        // waiting to be read, from a back-end that still serves the virtqueues.
        v.setInt32(8, this.#conn.socketFd, true);
        v.setInt16(12, POLL_HANG_UP, true);
        v.setInt16(14, 0, true);
        const r = libc.poll(this.#pollfds, 2n, ms);
        if (r < 0) {
          const errno = this.#native.errno();
          if (errno === EINTR) return -EINTR;
          return -errno;
        }
        if (v.getInt16(6, true) !== 0) libc.read(this.#callFd, this.#eight, 8n);
        if ((v.getInt16(14, true) & HANG_UP) !== 0) {
          this.#conn.markHungUp("The vhost-user back-end closed the connection");
          this.#hungUp();
          const now = performance.now();
          this.#settle(Math.min(deadline >= 0 ? deadline : now + SETTLE_STEP_MS, now + SETTLE_STEP_MS));
          return 0;
        }
      }
    } finally {
      if (restore) vq.setInterrupts(false);
    }
  }

  /** The back-end signals the call fd by itself whenever interrupts are on: nothing deferred. */
  useCompletionFd(): void {}

  setCompletionFdEnabled(enabled: boolean): void {
    if (this.isPollQueue) return;
    this.#interruptsWanted = enabled;
    this.#vq.setInterrupts(enabled);
  }

  /**
   * virtio-blk cannot take back a request the device has: it runs to its end. What the driver
   * still has to send is dropped: the FUA flush or the remaining chunks of a discard or write
   * zeroes (the request then completes with -ECANCELED).
   */
  cancel(userData: unknown): boolean {
    // The oldest request carrying userData: free slots are reused in no particular age order.
    let s = -1, oldest = Infinity;
    for (let k = 0; k < this.#cap; k++) {
      const age = this.#used[k];
      if (age === 0 || age >= oldest || this.#ud[k] !== userData) continue;
      s = k;
      oldest = age;
    }
    if (s < 0) return false;
    this.#cancelled[s] = 1;
    return true;
  }

  usesBuffer(buffer: ArrayBufferLike): boolean {
    // Asked of every queue of every live instance at each free and destroy: idle answers at once.
    if (this.#freeTop === this.#cap) return false;
    for (let s = 0; s < this.#cap; s++) {
      if (this.#used[s] === 0) continue;
      const buf = this.#buf[s];
      if (buf !== null && bufferOf(buf) === buffer) return true;
      const iov = this.#iov[s];
      if (iov !== null) { for (const b of iov) if (bufferOf(b) === buffer) return true; }
    }
    return false;
  }

  /**
   * Stops the virtqueue; its requests are dropped without completions. What the back-end never
   * saw (chains not yet published) is let go at once. The rest get up to a second to come back,
   * without starting any further step; the buffers of those still out are abandoned: the
   * back-end may yet write into that shared memory, so it must never be unmapped or freed (and
   * reused). Abandoning everything, as before, kept every region a queued request touched mapped
   * for the life of the process.
   */
  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    const vq = this.#vq;
    for (const head of vq.retractUnpublished()) this.#dropHead(head);
    // Chains the back-end has: wait for them while it answers (not when it is gone: then nothing
    // comes back, and a corrupted ring cannot be trusted).
    // A back-end that stopped answering control messages may still return them.
    const deadline = this.#drainDeadline();
    while (this.#ringCount > 0 && this.#broken === null && this.#conn.hungUpReason === null) {
      let head: number;
      try {
        head = vq.popUsed();
      } catch {
        break;
      }
      if (head >= 0) {
        this.#dropHead(head);
        continue;
      }
      if (performance.now() >= deadline) break;
      // A signal does not end the wait early: every request still out now is abandoned memory.
      const r = this.#wait(1, deadline);
      if ((r < 0 && r !== -EINTR) || this.#broken !== null) break;
    }
    // A back-end whose process has exited writes nothing more: its requests' memory is free.
    const exited = this.#conn.hungUpReason !== null && this.#conn.peerState() === "exited";
    for (let s = 0; s < this.#cap; s++) {
      if (this.#used[s] === 0) continue;
      if (!exited) abandon(this.#buf[s], this.#iov[s]);
      this.#release(s);
    }
    this.#ringCount = 0;
    this.#onDestroy(this.index);
    closeFd(this.#native, this.#kickFd);
    closeFd(this.#native, this.#callFd);
  }

  /** Lets go of the request whose chain starts at `head`, which the back-end no longer has. */
  #dropHead(head: number): void {
    const slot = this.#takeHead(head);
    if (slot >= 0) this.#release(slot);
  }

  /**
   * The slot of the request whose chain starts at `head`, now out of the ring (still in use),
   * or -1 when no request in use has that chain.
   */
  #takeHead(head: number): number {
    const slot = this.#headSlot[head];
    this.#headSlot[head] = -1;
    if (slot < 0 || this.#used[slot] === 0) return -1;
    this.#inRing[slot] = 0;
    this.#ringCount--;
    return slot;
  }
}

/**
 * Stores `value`, an integer below 2^53, at `off` as a little-endian u64: two u32 halves, since
 * a BigInt for setBigUint64 would be an allocation per request.
 */
function setU64(view: DataView, off: number, value: number): void {
  view.setUint32(off, value >>> 0, true);
  view.setUint32(off + 4, (value / 4294967296) >>> 0, true);
}

/** Descriptors a request of kind `op` with `nseg` data segments takes. */
function descriptorsFor(op: number, nseg: number): number {
  if (op === Op.Flush) return 2;
  if (op === Op.WriteZeroes || op === Op.Discard) return 3;
  return 2 + nseg;
}
