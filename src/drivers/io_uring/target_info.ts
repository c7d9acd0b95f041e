/**
 * What the io_uring driver needs to know about its target: regular file or block device,
 * alignment and limits from sysfs queue attributes (partitions included) or statfs.
 *
 * @module
 */
import type { Native } from "../../../ffi/types.ts";
import { BlkioError } from "../../errors.ts";
import {
  closeFd,
  fileStatusFlags,
  fileTypeName,
  fsStat,
  fstat,
  FUSE_SUPER_MAGIC,
  isShortage,
  NETWORK_FS_MAGICS,
  O_ACCMODE,
  O_RDONLY,
  oDirectFor,
  pageSize,
  readText,
  S_IFBLK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  TMPFS_MAGIC,
} from "../../sys.ts";

/**
 * The error for target `name` (a quoted path, or "fd N") of file type `type` (st_mode & S_IFMT),
 * which is neither a regular file nor a block device: libblkio's text, and what the target is.
 */
export function notFileOrDevice(name: string, type: number): BlkioError {
  const kind = type === S_IFSOCK
    ? "a socket (a vhost-user-blk export is opened with the virtio-blk-vhost-user driver)"
    : fileTypeName(type) ?? "of another type";
  return BlkioError.of("EINVAL", `The file must be a block device or a regular file: ${name} is ${kind}`);
}

/** Linux block device queue limits. */
export interface BlockLimits {
  logicalBlockSize: number;
  physicalBlockSize: number;
  optimalIoSize: number;
  writeZeroesMaxBytes: number;
  /** sysfs queue/discard_max_bytes: 0 when the device has no discard. */
  discardMaxBytes: number;
  discardAlignment: number;
  discardAlignmentOffset: number;
  supportsFuaNatively: boolean;
  writeCacheWriteBack: boolean;
  /** sysfs queue/io_poll: whether the device has poll queues (null: no such attribute). */
  ioPoll: boolean | null;
  /** queue/dma_alignment + 1: each O_DIRECT memory segment's address and length alignment. */
  dmaAlignment: number;
}

/** Facts about a target file or device, from its fd. */
export interface TargetInfo {
  isBlockDevice: boolean;
  direct: boolean;
  readOnly: boolean;
  /** A regular file on tmpfs: its data lives in memory, with no device behind it. */
  onTmpfs: boolean;
  /**
   * Driven from an event loop, requests go to io-wq at once (IOSQE_ASYNC) rather than being
   * tried inside io_uring_enter: a FUSE file's inline attempt can wait for the daemon, even for
   * non-blocking I/O. On a slow daemon (20 IOPS) the 16th read of a burst held the submitting
   * call, and the event loop, 450 ms; with IOSQE_ASYNC 2-6 ms. Sending only requests beyond 8 in
   * use that way was not enough: after other FUSE tests in the same process, 9 inline reads
   * still held it 450 ms, one reply each.
   */
  submitAsync: boolean;
  /**
   * Reading the size (lseek SEEK_END) may wait for another party: a FUSE daemon, or the server of
   * a network file system, asked once the cached attributes expire (1 s by default on FUSE). On
   * a FUSE daemon answering in 3 s, `BlockDevice.capacity` held the event loop 3 s (fault hunt).
   */
  sizeMayWait: boolean;
  /**
   * A FUA write is the write and then an fdatasync. FUSE finishes O_DIRECT writes asynchronously
   * for io_uring (async_dio), and then never syncs for RWF_DSYNC: with the daemon failing every
   * flush, a FUA write completed 0 where write(2) with O_DSYNC failed EIO (Linux 6.18). Every
   * FUSE file, not only with O_DIRECT: a daemon may open the file direct_io (FOPEN_DIRECT_IO),
   * which takes the same path whatever the open flags, and a buffered FUA write then completed 0
   * without the daemon ever being asked for an fsync (fuzzer, fuse-short). On a file in the page
   * cache RWF_DSYNC cost the same fsync.
   */
  fuaByFlush: boolean;
  /**
   * Write zeroes that may unmap go as ZERO_RANGE (with KEEP_SIZE) first, PUNCH_HOLE only where
   * that is refused (then false from there on): qemu-storage-daemon's FUSE export (7.2) answers
   * PUNCH_HOLE with 0 and changes nothing unless its image was set up with discard=unmap, so a
   * write zeroes completed 0 and the old data read back (fault hunt). A FUSE file (virtiofs
   * included) only. The price: such zeroing keeps the range allocated rather than freeing it.
   */
  zeroByRange: boolean;
  requestAlignment: number;
  /**
   * Granularity fallocate needs for write zeroes and discard: a block device's logical block
   * size, 1 for a file (no requirement).
   */
  fallocateAlignment: number;
  optimalIoAlignment: number;
  optimalIoSize: number;
  /**
   * Whether a block device has write zeroes (sysfs write_zeroes_max_bytes > 0), as last known: at
   * connect, false once the kernel refused a zeroing without fallback, and read again by a queue
   * that discards without the discard command (Linux < 6.12), whose discards are such zeroings
   * (IoUringQueue#noHole). True for a file.
   */
  supportsWriteZeroesWithoutFallback: boolean;
  /**
   * Whether a block device has discard (sysfs discard_max_bytes > 0), as last read: at connect,
   * then by a queue that discards without the discard command (Linux < 6.12), which must refuse
   * a discard the device lacks before the kernel looks at its range (IoUringQueue#unsupported).
   * True for a file, whose refusal is the kernel's.
   */
  discards: boolean;
  discardAlignment: number;
  discardAlignmentOffset: number;
  supportsFuaNatively: boolean;
  canGrow: boolean;
  flushNeeded: boolean;
  /**
   * O_DIRECT on a file of a file system over a block device that says what O_DIRECT alignment it
   * needs (statx dio_offset_align): the kernel refuses misaligned offsets there, and a short
   * read ends only at the end of the file. Elsewhere (FUSE, NFS, tmpfs) any offset goes, and a
   * short read may end anywhere. False for block devices, which do not grow.
   */
  directFileAligned: boolean;
  /**
   * O_DIRECT to a block device, or to a regular file of a file system on one: the kernel checks
   * a write's alignment piece by piece (a file extent by extent, a device bio by bio), so a
   * misaligned write spanning several pieces (a hole, or more than one bio: 256 pages) is partly
   * written before it fails with EINVAL. The library refuses such writes before submitting them
   * (TargetInfo.directMemAlignment). False on a read-only instance: there the kernel fails every
   * write with EBADF before it looks at alignment, and so must the library.
   */
  directWritesTear: boolean;
  /**
   * What each memory segment (buffer, iovec) of an O_DIRECT write must have its address and
   * length a multiple of, where writes tear: the device's DMA alignment (statx's dio_mem_align
   * for a file), which can be finer than request-alignment (Linux 6.18 took 512-byte iovecs on a
   * 4096-byte-sector device, whole).
   */
  directMemAlignment: number;
  /**
   * Whether the device behind the target can complete polled I/O (sysfs queue/io_poll), null
   * when unknown (no block device behind st_dev, or no such attribute).
   */
  ioPoll: boolean | null;
  /** A block device's number (for its sysfs limits at the time they matter), or null. */
  blockDevice: { major: number; minor: number } | null;
}

/** Reads the queue limits of block device `dev` from /sys/dev/block, or null if absent. */
export function readBlockLimits(native: Native, major: number, minor: number): BlockLimits | null {
  const dir = `/sys/dev/block/${major}:${minor}`;
  // A partition has no queue directory of its own; its disk's is one level up.
  const queue = readText(native, `${dir}/partition`) !== null ? `${dir}/../queue` : `${dir}/queue`;
  const num = (path: string): number | null => {
    const t = readText(native, path);
    if (t === null) return null;
    const v = Number(t.trim());
    return Number.isFinite(v) ? v : null;
  };
  const logical = num(`${queue}/logical_block_size`);
  if (logical === null) return null;
  const granularity = num(`${queue}/discard_granularity`) ?? 0;
  const alignment = num(`${dir}/discard_alignment`) ?? 0;
  return {
    logicalBlockSize: logical,
    physicalBlockSize: num(`${queue}/physical_block_size`) ?? logical,
    optimalIoSize: num(`${queue}/optimal_io_size`) ?? 0,
    writeZeroesMaxBytes: num(`${queue}/write_zeroes_max_bytes`) ?? 0,
    discardMaxBytes: num(`${queue}/discard_max_bytes`) ?? 0,
    discardAlignment: granularity,
    // Several drivers report discard_alignment equal to the granularity when they mean 0
    // (seen up to Linux 5.17); libblkio corrects it the same way.
    discardAlignmentOffset: alignment === granularity ? 0 : alignment,
    supportsFuaNatively: (num(`${queue}/fua`) ?? 0) !== 0,
    writeCacheWriteBack: (readText(native, `${queue}/write_cache`) ?? "").trim() === "write back",
    ioPoll: ((p) => p === null ? null : p !== 0)(num(`${queue}/io_poll`)),
    // The attribute is a mask (511); absent before Linux 5.x: the logical block size then.
    dmaAlignment: ((m) => m === null ? logical : m + 1)(num(`${queue}/dma_alignment`)),
  };
}

/** Whether block device `major:minor` is read-only (its sysfs `ro`). */
export function deviceReadOnly(native: Native, major: number, minor: number): boolean {
  return (readText(native, `/sys/dev/block/${major}:${minor}/ro`) ?? "0").trim() === "1";
}

/**
 * `e`, or for a shortage (fds, memory) an error that says it came from inspecting target `name`:
 * the file that could not be opened is one the caller never named (sysfs, a probe ring), as in
 * "Cannot open /sys/dev/block/254:0/partition" (leak hunt).
 */
export function inspecting(name: string, e: unknown): unknown {
  if (!(e instanceof BlkioError) || !isShortage(e.errno)) return e;
  return new BlkioError(e.errno, `Cannot inspect ${name}: ${e.message}`, { cause: e });
}

/**
 * Closes `fd`, which connect opened for writing at `path`, and throws EROFS when it is a
 * read-only block device (losetup -r, blockdev --setro): Linux opens one for writing and then
 * fails every write with a bare EPERM. libblkio connects; a read-only mount and virtio-blk's
 * read-only export are refused the same way. A caller's own fd is left as it is (its writes'
 * EPERM says why).
 */
export function refuseReadOnlyDevice(native: Native, fd: number, path: string): void {
  let readOnly: boolean;
  try {
    const st = fstat(native, fd);
    readOnly = (st.mode & S_IFMT) === S_IFBLK && deviceReadOnly(native, st.rdevMajor, st.rdevMinor);
  } catch (e) {
    closeFd(native, fd); // sysfs unreadable at the fd limit
    throw inspecting(JSON.stringify(path), e);
  }
  if (!readOnly) return;
  closeFd(native, fd);
  throw BlkioError.of("EROFS", `${JSON.stringify(path)} is a read-only block device`);
}

/**
 * Inspects the open target `fd`; EINVAL unless it is a regular file or a block device. `name`
 * (a quoted path, or "fd N") says which in errors.
 */
export function targetInfo(native: Native, fd: number, name = `fd ${fd}`): TargetInfo {
  const st = fstat(native, fd);
  const type = st.mode & S_IFMT;
  const flags = fileStatusFlags(native, fd);
  // An unknown architecture cannot have opened `fd` with O_DIRECT through this library.
  const direct = (flags & (oDirectFor(native.arch) ?? 0)) !== 0;
  const readOnly = (flags & O_ACCMODE) === O_RDONLY;
  if (type === S_IFBLK) {
    const limits = readBlockLimits(native, st.rdevMajor, st.rdevMinor);
    if (!limits) {
      throw BlkioError.of("EINVAL", "Cannot read the block device's queue limits from sysfs");
    }
    return {
      isBlockDevice: true,
      direct,
      readOnly,
      onTmpfs: false,
      submitAsync: false,
      sizeMayWait: false,
      fuaByFlush: false,
      zeroByRange: false,
      requestAlignment: direct ? limits.logicalBlockSize : 1,
      fallocateAlignment: limits.logicalBlockSize,
      optimalIoAlignment: limits.physicalBlockSize,
      optimalIoSize: limits.optimalIoSize,
      supportsWriteZeroesWithoutFallback: limits.writeZeroesMaxBytes > 0,
      discards: limits.discardMaxBytes > 0,
      discardAlignment: limits.discardAlignment,
      discardAlignmentOffset: limits.discardAlignmentOffset,
      supportsFuaNatively: limits.supportsFuaNatively,
      canGrow: false,
      flushNeeded: limits.writeCacheWriteBack || !direct,
      directFileAligned: false,
      directWritesTear: direct && !readOnly,
      directMemAlignment: limits.dmaAlignment,
      ioPoll: limits.ioPoll,
      blockDevice: { major: st.rdevMajor, minor: st.rdevMinor },
    };
  }
  if (type !== S_IFREG) throw notFileOrDevice(name, type);
  // Files on tmpfs, overlay and the like have no block device behind st_dev.
  const limits = readBlockLimits(native, st.devMajor, st.devMinor);
  const requestAlignment = direct ? (limits?.logicalBlockSize ?? pageSize(native)) : 1;
  const fs = fsStat(native, fd);
  return {
    isBlockDevice: false,
    direct,
    readOnly,
    onTmpfs: fs.type === TMPFS_MAGIC,
    submitAsync: fs.type === FUSE_SUPER_MAGIC,
    sizeMayWait: fs.type === FUSE_SUPER_MAGIC || NETWORK_FS_MAGICS.includes(fs.type),
    fuaByFlush: fs.type === FUSE_SUPER_MAGIC,
    zeroByRange: fs.type === FUSE_SUPER_MAGIC,
    requestAlignment,
    fallocateAlignment: 1,
    optimalIoAlignment: Math.max(fs.blockSize, requestAlignment),
    optimalIoSize: 0,
    supportsWriteZeroesWithoutFallback: true,
    discards: true,
    // File systems put no alignment rule on fallocate, but discard-alignment must be a
    // multiple of request-alignment.
    discardAlignment: requestAlignment,
    discardAlignmentOffset: 0,
    supportsFuaNatively: limits?.supportsFuaNatively ?? false,
    canGrow: true,
    flushNeeded: true,
    // Not where the file takes no O_DIRECT of its own (statx says 0): the kernel then writes
    // through the page cache, where any alignment goes, whole.
    directFileAligned: direct && limits !== null && st.dioOffsetAlign !== 0,
    directWritesTear: direct && !readOnly && limits !== null && st.dioOffsetAlign !== 0,
    directMemAlignment: st.dioMemAlign || limits?.dmaAlignment || requestAlignment,
    ioPoll: limits?.ioPoll ?? null,
    blockDevice: null,
  };
}
