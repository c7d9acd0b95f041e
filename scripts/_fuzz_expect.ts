/**
 * What a request may complete with on a target, and what each outcome leaves on the target: the
 * fuzzer's table of libblkio's semantics (`libblkio.md` §2, §7, §10) as this port decided them
 * (README "Request-level problems", and the tests named below, which pin each case).
 *
 * Written independently of the library's own checks (`flagsError`, the driver's `#unsupported`):
 * a copy would agree with the library's mistakes.
 *
 * @module
 */
import { release } from "node:os";
import type { Op, Outcome } from "./_fuzz_request.ts";

/** ReqFlags, spelled out here for the same reason. */
export const FUA = 1, NO_UNMAP = 2, NO_FALLBACK = 4;

const EBADF = -9, EIO = -5, EBUSY = -16, EINVAL = -22, ENOSPC = -28, EOPNOTSUPP = -95;

/** What the fuzzer knows about the instance and queue a request goes to. */
export interface TargetFacts {
  isBlockDevice: boolean;
  direct: boolean;
  readOnly: boolean;
  /** request-alignment and buf-alignment: the logical block size with O_DIRECT, else 1. */
  alignment: number;
  /** A block device's logical block size: fallocate needs it even without O_DIRECT. */
  blockSize: number;
  /**
   * O_DIRECT on a block device or on a file of a file system over one: the library refuses
   * writes that could tear before submitting them (a misaligned start or length, or a piece
   * finer than the DMA alignment: ext4 and the block layer would write part of them). On tmpfs
   * such writes go through the page cache and succeed. Not on a read-only instance, where every
   * write is EBADF.
   */
  directWritesChecked: boolean;
  /**
   * The file system runs out of room now and then: a write may fail ENOSPC, after landing in
   * part (the kernel wrote what fitted and reported a short count; the rest, sent again, found no
   * room).
   */
  spaceLimited: boolean;
  /** A block device without discard or write zeroes (`loop-bare`). */
  bareDevice: boolean;
  /**
   * A block device that io_uring discards as a hole, without the discard command ({@link kernel}):
   * a write zeroes that may unmap, which a device without write zeroes refuses. A loop device over
   * tmpfs loses them at its first NO_UNMAP zeroing (Linux 6.10 on).
   */
  discardByHole: boolean;
  /**
   * Byte ranges `[start, end)`: a request that touches one fails with EIO. On `fuse-eio` the
   * daemon fails every read, write and fallocate so (direct_io, so nothing is cached), and a
   * write split into several FUSE requests may land in part before one fails; on `vhost-eio`
   * each range is the first byte of a bad sector, and discards never get that far.
   */
  badRanges: readonly (readonly [number, number])[];
  /** The request goes to a poll queue. */
  poll: boolean;
  /** A block device's size (it cannot grow). */
  size: number;
  /** virtio-blk-vhost-user (then `vhost` says more), else io_uring. */
  vhost: VhostFacts | null;
}

/** What of a target the model needs (scripts/_fuzz_target.ts's FuzzTarget has it all). */
type TargetSide = Pick<
  TargetFacts,
  | "isBlockDevice"
  | "direct"
  | "blockSize"
  | "directWritesChecked"
  | "spaceLimited"
  | "bareDevice"
  | "badRanges"
  | "size"
>;

/** The facts for a request: the target's, and the run's (its instance, queue and buffers). */
export function targetFacts(
  t: TargetSide,
  run: Pick<TargetFacts, "readOnly" | "alignment" | "poll" | "vhost">,
): TargetFacts {
  return {
    isBlockDevice: t.isBlockDevice,
    direct: t.direct,
    blockSize: t.blockSize,
    directWritesChecked: t.directWritesChecked,
    spaceLimited: t.spaceLimited,
    bareDevice: t.bareDevice,
    discardByHole: t.isBlockDevice && run.vhost === null && !kernel.discardCommand,
    badRanges: t.badRanges,
    size: t.size,
    ...run,
  };
}

/**
 * What the kernel offers: the block device discard command (BLOCK_URING_CMD_DISCARD, Linux 6.12),
 * unless the fuzzer hides io_uring's block device commands from the library
 * (`--no-discard-command`).
 */
export const kernel = { discardCommand: kernelAtLeast(6, 12) };

/** Whether the running kernel is Linux `major`.`minor` or later (os.release()). */
export function kernelAtLeast(major: number, minor: number): boolean {
  const [a, b] = release().split(".").map((p) => parseInt(p, 10));
  return a > major || (a === major && b >= minor);
}

/** What the model needs of a virtio-blk-vhost-user instance. */
export interface VhostFacts {
  queueSize: number;
  /** The export's max-segments at the default queue-size (its seg_max). */
  maxSegments: number;
  /** Bytes of one write zeroes request to the device (max-write-zeroes-len; 0: unspecified). */
  maxWriteZeroes: number;
  /**
   * Where the request's buffers lie, the worst piece: all in mapped regions, one in a region
   * not mapped now (it may be mapped before the request leaves the backlog), or one outside
   * every region.
   */
  buffers: "mapped" | "unmapped" | "plain";
}

/** The request, as the table needs it. */
export interface RequestShape {
  op: Op;
  start: number;
  len: number;
  flags: number;
  /** Address and length of each buffer or iovec that is not empty. */
  pieces: readonly { addr: number; len: number }[];
}

/** libblkio's message for flags a request does not take (libblkio.md §2), or null. */
export function flagsMessage(op: Op, flags: number): string | null {
  if ((flags & ~(FUA | NO_UNMAP | NO_FALLBACK)) !== 0) return "unsupported bits in request flags";
  const allowed = op === "write" || op === "writev"
    ? FUA
    : op === "writeZeroes"
    ? FUA | NO_UNMAP | NO_FALLBACK
    : 0;
  const bad = flags & ~allowed;
  if (bad & FUA) return "BLKIO_REQ_FUA is invalid for this request type";
  if (bad & NO_UNMAP) return "BLKIO_REQ_NO_UNMAP is invalid for this request type";
  if (bad & NO_FALLBACK) return "BLKIO_REQ_NO_FALLBACK is invalid for this request type";
  return null;
}

const exact = (s: string) => new RegExp(`^${s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
const BEYOND_MSG = /^start and length must be below 2\^53/;
const POLL_MSG = exact("request not supported on poll queues for this driver");
const READ_ONLY_MSG = /read-only \(read-only=true\)/;
const IOV_MAX_MSG = /iovecs: more than max-segments \(IOV_MAX, \d+\)$/;
const directMsg = (a: number) =>
  new RegExp(`^O_DIRECT needs request-alignment and buf-alignment \\(${a}\\); not a multiple of it: `);
const blockMsg = (what: string, a: number) =>
  new RegExp(
    `^${what} on a block device needs start and length in multiples of its logical block size \\(${a}\\)`,
  );
const DISCARD_NOTSUP =
  /^(Discard is not supported by this device( on this kernel: .+)?|Discard is not supported on regular files: .+)$/;
const ZEROES_NOTSUP =
  /^(Write zeroes( with NO_UNMAP \(FALLOC_FL_ZERO_RANGE\))? is not supported by this (device|file system)|the block device does not support write zeroes with BLKIO_REQ_NO_FALLBACK)$/;
/** A write zeroes or discard of 0 bytes, which the kernel refuses (io_uring). */
const EMPTY_RANGE_MSG = /^(Write zeroes|Discard) of 0 bytes: the kernel refuses an empty range/;
const DISCARD_EBUSY = /^The kernel could not drop the range's page cache/;
/** A request past the end of a block device (or into a part block at its end): the driver says which. */
const PAST_END_MSG =
  /^The (request, \d+ bytes at \d+, reaches past the end of the device \(capacity \d+\)|device's capacity \(\d+\) is not a multiple of its logical block size)/;

/** The most iovecs a request may have (IOV_MAX on Linux). */
export const IOV_MAX = 1024;

/**
 * The outcomes the model allows for request `r` on `f`. At least one; when the request can fail
 * without touching the target, those outcomes have effect "none".
 */
export function outcomesOf(f: TargetFacts, r: RequestShape): Outcome[] {
  const flagsMsg = flagsMessage(r.op, r.flags);
  // Checked by the queue before anything else (bad_input: "completion" rows).
  if (flagsMsg !== null) return [{ ret: EINVAL, msg: exact(flagsMsg), effect: "none", early: true }];
  if (r.start >= 2 ** 53 || r.len >= 2 ** 53) {
    return [{ ret: EINVAL, msg: BEYOND_MSG, effect: "none", early: true }];
  }
  if (f.vhost !== null) return vhostOutcomes(f, f.vhost, r);
  const isIo = r.op === "read" || r.op === "readv" || r.op === "write" || r.op === "writev";
  // libblkio.md §6: io_uring poll queues take reads and writes only.
  if (f.poll && !isIo) return [{ ret: EOPNOTSUPP, msg: POLL_MSG, effect: "none", early: "maybe" }];
  switch (r.op) {
    case "flush":
      return [{ ret: 0, msg: null, effect: "none" }];
    case "read":
    case "readv":
      return readOutcomes(f, r);
    case "write":
    case "writev":
      return writeOutcomes(f, r);
    case "writeZeroes":
      return zeroesOutcomes(f, r);
    case "discard":
      return discardOutcomes(f, r);
  }
}

/** Whether any buffer address or iovec length is off the alignment (start and length aside). */
function piecesMisaligned(f: TargetFacts, r: RequestShape): boolean {
  const a = f.alignment;
  if (r.pieces.some((p) => p.addr % a !== 0)) return true;
  return (r.op === "readv" || r.op === "writev") && r.pieces.some((p) => p.len % a !== 0);
}

/**
 * Collects outcomes: `must` ones mean the request cannot succeed. Several problems at once give
 * the union (which one the kernel checks first is its business).
 */
class Outcomes {
  readonly list: Outcome[] = [];
  mustFail = false;

  add(o: Outcome, must: boolean): void {
    if (!this.list.some((x) => x.ret === o.ret && x.effect === o.effect)) this.list.push(o);
    if (must) this.mustFail = true;
  }

  /** The failures, plus `success` unless one of them is certain. */
  done(success: Outcome): Outcome[] {
    return this.mustFail ? this.list : [success, ...this.list];
  }
}

/** Whether `r`, not empty, touches one of the target's bad ranges. */
function touchesBad(f: TargetFacts, r: RequestShape): boolean {
  return r.len > 0 && f.badRanges.some(([s, e]) => r.start < e && r.start + r.len > s);
}

function tooManyIovecs(r: RequestShape): boolean {
  return (r.op === "readv" || r.op === "writev") && r.pieces.length > IOV_MAX;
}

function readOutcomes(f: TargetFacts, r: RequestShape): Outcome[] {
  const o = new Outcomes();
  // Nothing to read: the kernel returns 0 at once, anywhere (probed on all four targets).
  if (r.len === 0) return [{ ret: 0, msg: null, effect: "check" }];
  if (tooManyIovecs(r)) o.add({ ret: EINVAL, msg: IOV_MAX_MSG, effect: "none" }, true);
  if (f.direct) {
    const a = f.alignment;
    // The block layer checks the whole request first (README: "a misaligned request completes
    // with -EINVAL and a message"); the kernel may accept finer buffer alignment. A file system
    // checks extent by extent, and not at all where it only fills zeroes: a misaligned read of a
    // hole, or at or past the end of the file, succeeds (libblkio.md §10: "Alignment is not
    // validated by the library (kernel decides)"; only writes are checked, as they could tear).
    const startOrLen = r.start % a !== 0 || r.len % a !== 0;
    if (startOrLen) o.add({ ret: EINVAL, msg: directMsg(a), effect: "none" }, f.isBlockDevice);
    else if (piecesMisaligned(f, r)) o.add({ ret: EINVAL, msg: directMsg(a), effect: "none" }, false);
  }
  // Past the end of a block device: EIO (write.test.ts "read across end of device"); a file
  // reads zeroes there (can-grow).
  if (f.isBlockDevice && r.start + r.len > f.size) o.add({ ret: EIO, effect: "none" }, true);
  if (touchesBad(f, r)) o.add({ ret: EIO, effect: "none" }, true);
  return o.done({ ret: 0, msg: null, effect: "check" });
}

function writeOutcomes(f: TargetFacts, r: RequestShape): Outcome[] {
  // The kernel refuses a write on an O_RDONLY fd (read_only.test.ts) when it issues it, before it
  // looks at O_DIRECT alignment (so the library does not check that there: security.test.ts); an
  // iovec array it cannot take fails earlier, when it prepares the request.
  if (f.readOnly) {
    const ro: Outcome = { ret: EBADF, msg: READ_ONLY_MSG, effect: "none" };
    return tooManyIovecs(r) ? [ro, { ret: EINVAL, msg: IOV_MAX_MSG, effect: "none" }] : [ro];
  }
  const a = f.alignment;
  const startOrLenOff = f.direct && (r.start % a !== 0 || r.len % a !== 0);
  // An empty write cannot tear: the kernel completes it with 0 whatever its alignment.
  if (startOrLenOff && f.directWritesChecked && r.len > 0) {
    return [{ ret: EINVAL, msg: directMsg(a), effect: "none", early: "maybe" }];
  }
  if (r.len === 0) return [{ ret: 0, msg: null, effect: "none" }];
  const o = new Outcomes();
  if (tooManyIovecs(r)) o.add({ ret: EINVAL, msg: IOV_MAX_MSG, effect: "none" }, true);
  if (f.direct) {
    if (startOrLenOff) o.add({ ret: EINVAL, msg: directMsg(a), effect: "none" }, f.isBlockDevice);
    else if (piecesMisaligned(f, r)) {
      // Refused before submission where it could tear (a piece finer than the DMA alignment),
      // else the kernel's to decide: whole either way.
      const early = f.directWritesChecked ? "maybe" as const : undefined;
      o.add({ ret: EINVAL, msg: directMsg(a), effect: "none", early }, false);
    }
  }
  if (f.isBlockDevice) {
    // growing_file.test.ts: the part inside the device is written, the rest fails with ENOSPC.
    if (r.start >= f.size) o.add({ ret: ENOSPC, effect: "none" }, true);
    else if (r.start + r.len > f.size) o.add({ ret: ENOSPC, effect: "forget" }, true);
  }
  // A full file system: each byte holds its old value or the write's, nothing else; a driver
  // that went on from the wrong place after a short count would leave a third.
  if (f.spaceLimited) o.add({ ret: ENOSPC, effect: "either" }, false);
  if (touchesBad(f, r)) o.add({ ret: EIO, effect: "either" }, true);
  return o.done({ ret: 0, msg: null, effect: "data" });
}

function zeroesOutcomes(f: TargetFacts, r: RequestShape): Outcome[] {
  // Checked before submission: the kernel would check the fallocate mode first (driver comment).
  if (f.readOnly) return [{ ret: EBADF, msg: READ_ONLY_MSG, effect: "none", early: "maybe" }];
  const success: Outcome = { ret: 0, msg: null, effect: "zero" };
  const refused: Outcome = { ret: EOPNOTSUPP, msg: ZEROES_NOTSUP, effect: "none" };
  if (f.isBlockDevice) {
    // write_zeroes.test.ts: a device that lost write zeroes falls back unless NO_FALLBACK,
    // which then fails with EOPNOTSUPP and must leave completed writes alone. Once the driver
    // knows the device lacks them, it refuses such a request before anything else.
    const early: Outcome[] = (r.flags & NO_FALLBACK) !== 0 ? [{ ...refused, early: "maybe" }] : [];
    const b = f.blockSize;
    // fallocate refuses a length of 0 (bad_input: "writeZeroes len 0").
    if (r.len === 0) return [{ ret: EINVAL, msg: EMPTY_RANGE_MSG, effect: "none" }, ...early];
    // Across the end, KEEP_SIZE makes the kernel cut the range at the end before it checks the
    // alignment (blkdev_fallocate), so only what is inside the device must be aligned: a length
    // of 4608 across the end of a 4 KiB-sector device zeroes its last block (4K-device hunt).
    const inside = r.start < f.size ? Math.min(r.len, f.size - r.start) : r.len;
    if (r.start % b !== 0 || inside % b !== 0) {
      return [{ ret: EINVAL, msg: blockMsg("Write zeroes", b), effect: "none" }, ...early];
    }
    // Past the end: EINVAL; across it, the kernel zeroes up to the end (probed).
    if (r.start >= f.size) return [{ ret: EINVAL, msg: PAST_END_MSG, effect: "none" }, ...early];
    // Without write zeroes in the device the kernel writes zero buffers, unless NO_FALLBACK.
    if (f.bareDevice) return early.length > 0 ? early : [success];
    return [success, ...early];
  }
  if (r.len === 0) return [{ ret: EINVAL, msg: EMPTY_RANGE_MSG, effect: "none" }];
  // Regular files: fallocate, no fallback. A file system without FALLOC_FL_ZERO_RANGE (tmpfs)
  // refuses NO_UNMAP (write_zeroes.test.ts); ext4 and XFS do every flag combination. One
  // fallocate, which a bad range fails whole.
  const done = touchesBad(f, r) ? { ret: EIO, effect: "none" as const } : success;
  return (r.flags & (NO_UNMAP | NO_FALLBACK)) !== 0 ? [done, refused] : [done];
}

function discardOutcomes(f: TargetFacts, r: RequestShape): Outcome[] {
  if (f.readOnly) return [{ ret: EBADF, msg: READ_ONLY_MSG, effect: "none", early: "maybe" }];
  const refused: Outcome = { ret: EOPNOTSUPP, msg: DISCARD_NOTSUP, effect: "none" };
  // The discard command asks whether the device discards before it looks at the range: empty,
  // misaligned and past the end alike fail EOPNOTSUPP on a device without (probed, Linux 6.18).
  // Where the kernel has no discard command (before 6.12) the queue asks sysfs instead, before
  // the request is sent; and discards there as a hole, which a device that lost write zeroes
  // refuses: the queue answers so whatever the range, before the request is sent once it knows,
  // with the range written back first and nothing changed (discard.test.ts).
  if (f.bareDevice) return [{ ...refused, early: "maybe" }];
  const lost: Outcome[] = f.discardByHole ? [{ ...refused, early: "maybe" }] : [];
  if (r.len === 0) return [{ ret: EINVAL, msg: EMPTY_RANGE_MSG, effect: "none" }, ...lost];
  const success: Outcome = { ret: 0, msg: null, effect: "discard" };
  if (f.isBlockDevice) {
    const b = f.blockSize;
    if (r.start % b !== 0 || r.len % b !== 0) {
      return [{ ret: EINVAL, msg: blockMsg("Discard", b), effect: "none" }, ...lost];
    }
    // The discard command takes no range past the end (probed: EINVAL, whole).
    if (r.start + r.len > f.size) return [{ ret: EINVAL, msg: PAST_END_MSG, effect: "none" }, ...lost];
    // discard.test.ts: EBUSY while buffered I/O of the range is in flight.
    return [success, refused, { ret: EBUSY, msg: DISCARD_EBUSY, effect: "none" }, ...lost];
  }
  // libblkio.md §10 says ext4 rejects the fallocate mode; every file does: vfs_fallocate refuses
  // FALLOC_FL_NO_HIDE_STALE for them (it is not among the modes it passes on) before a file
  // system, FUSE daemon or bad sector is asked.
  return [refused];
}

const NO_REGION_MSG = /^buffer is not inside a mapped memory region/;
const queueSizeMsg = (n: number) => new RegExp(`descriptors but queue-size is ${n}: `);

/**
 * virtio-blk-vhost-user (README "virtio-blk-vhost-user", virtio_blk.test.ts): the driver checks
 * a request in this order when it goes into the ring (at once, or on leaving the backlog:
 * "maybe" early), and qemu-storage-daemon fails whatever passes the end with EIO, whole. Poll
 * queues take every request. Write zeroes never falls back (NO_FALLBACK changes nothing), and the
 * export takes discard (without `discard=unmap` it leaves the data: old or zero either way).
 */
function vhostOutcomes(f: TargetFacts, v: VhostFacts, r: RequestShape): Outcome[] {
  const fail = (ret: number, msg?: RegExp): Outcome[] => [{ ret, msg, effect: "none", early: "maybe" }];
  const writes = r.op !== "read" && r.op !== "readv" && r.op !== "flush";
  if (r.op === "flush") return v.queueSize < 2 ? fail(EINVAL, queueSizeMsg(v.queueSize)) : [ok("none")];
  // libblkio's order: the start, and a write zeroes' or discard's end, before the read-only flag;
  // a write's length after it.
  const a = f.alignment, ranged = r.op === "writeZeroes" || r.op === "discard";
  const misaligned = fail(EINVAL, /is not a multiple of request-alignment/);
  if (r.start % a !== 0 || (ranged && r.len % a !== 0)) return misaligned;
  if (writes && f.readOnly) return fail(EBADF, /read-only/);
  if (r.len % a !== 0) return misaligned;
  const pastEnd = r.start + r.len > f.size;
  if (r.op === "writeZeroes" || r.op === "discard") {
    if (v.queueSize < 3) return fail(EINVAL, queueSizeMsg(v.queueSize));
    if (r.len === 0) return [{ ret: 0, msg: null, effect: "none", early: "maybe" }];
    if (pastEnd) return [{ ret: EIO, effect: "none" }];
    // A bad sector: the chunk holding it fails, after the chunks past it were zeroed (a
    // zeroing goes in chunks of max-write-zeroes-len, from its end backwards); those below it
    // are never sent. The export has no discard=unmap: it completes discards before they reach
    // the bad sectors.
    if (touchesBad(f, r) && r.op === "writeZeroes") {
      const chunk = zeroesChunk(v.maxWriteZeroes, f.alignment);
      let at = r.start + r.len;
      while (
        !touchesBad(f, {
          ...r,
          start: Math.max(r.start, at - chunk),
          len: at - Math.max(r.start, at - chunk),
        })
      ) {
        at -= chunk;
      }
      const zeroed = r.start + r.len - at;
      return [{
        ret: EIO,
        effect: zeroed > 0 ? "zero" : "none",
        part: zeroed > 0 ? [at, zeroed] : undefined,
      }];
    }
    return [ok(r.op === "discard" ? "discard" : "zero")];
  }
  const outside: Outcome[] = v.buffers === "mapped" ? [] : fail(EINVAL, NO_REGION_MSG);
  if (v.buffers === "plain") return outside;
  // The buffer's region may be mapped by the time the request leaves the backlog; both may be
  // EINVAL (the buffers are checked first).
  const then = (o: Outcome[]): Outcome[] =>
    outside.length === 0
      ? o
      : o.map((x) =>
        x.ret === EINVAL ? { ...x, msg: new RegExp(`${NO_REGION_MSG.source}|${x.msg!.source}`) } : x
      ).concat(o.some((x) => x.ret === EINVAL) ? [] : outside);
  // max-segments is what the queue leaves beside a header and a status descriptor, at most.
  const maxSegments = Math.max(1, Math.min(v.maxSegments, v.queueSize - 2));
  if (r.pieces.length > maxSegments) return then(fail(EINVAL, /max-segments/));
  if (2 + r.pieces.length > v.queueSize) return then(fail(EINVAL, queueSizeMsg(v.queueSize)));
  const reads = r.op === "read" || r.op === "readv";
  if (r.len === 0) return then([{ ret: 0, msg: null, effect: reads ? "check" : "none", early: "maybe" }]);
  if (pastEnd) return then([{ ret: EIO, effect: "none" }]);
  if (touchesBad(f, r)) return then([{ ret: EIO, effect: "none" }]);
  return then([ok(reads ? "check" : "data")]);
}

/**
 * How long the virtio-blk driver's write zeroes requests are, for a device's max-write-zeroes-len
 * (bytes, 0: unspecified): below 2 GiB, in whole request-alignment units. Written from the
 * virtio spec's limit, not from the driver's code.
 */
function zeroesChunk(max: number, alignment: number): number {
  const bytes = Math.min(max > 0 ? max : 2 ** 31, 2 ** 31);
  return Math.max(alignment, bytes - bytes % alignment);
}

function ok(effect: Outcome["effect"]): Outcome {
  return { ret: 0, msg: null, effect };
}
