/**
 * io_uring constants from <linux/io_uring.h> and <linux/fs.h>.
 *
 * @module
 */

/** Opcodes (IORING_OP_*). */
export const IORING_OP = {
  NOP: 0,
  READV: 1,
  WRITEV: 2,
  FSYNC: 3,
  POLL_ADD: 6,
  SYNC_FILE_RANGE: 8,
  READ_FIXED: 4,
  WRITE_FIXED: 5,
  TIMEOUT: 11,
  ASYNC_CANCEL: 14,
  FALLOCATE: 17,
  READ: 22,
  WRITE: 23,
  FADVISE: 24,
  URING_CMD: 46,
} as const;

/** posix_fadvise(2) advice: drop the range's clean pages from the page cache. */
export const POSIX_FADV_DONTNEED = 4;

/** sync_file_range(2) flags WAIT_BEFORE | WRITE | WAIT_AFTER: the range's dirty pages, written. */
export const SYNC_FILE_RANGE_WRITE_AND_WAIT = 1 | 2 | 4;

/** <linux/blkdev.h> (Linux 6.12): IORING_OP_URING_CMD command of a block device, _IO(0x12, 0). */
export const BLOCK_URING_CMD_DISCARD = 0x1200;

/** io_uring_setup flags. */
export const IORING_SETUP_IOPOLL = 1 << 0;
/** A kernel thread polls the SQ (unprivileged since Linux 5.11). */
export const IORING_SETUP_SQPOLL = 1 << 1;
/**
 * Linux 5.6: the ring shares the kernel workers of the ring whose fd is io_uring_params.wq_fd;
 * since 5.10 an SQPOLL ring also shares that ring's polling thread (5.6-5.9 give it its own).
 * Kernels before 5.6 refuse the unknown flag with EINVAL.
 */
export const IORING_SETUP_ATTACH_WQ = 1 << 5;
/** Linux 5.19: completion task work interrupts no one; it runs at the next kernel entry. */
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
/** Linux 5.19: IORING_SQ_TASKRUN in the sq flags tells that such work is waiting. */
export const IORING_SETUP_TASKRUN_FLAG = 1 << 9;
/** Linux 6.0: only the thread that made the ring submits to it (the kernel may skip locking). */
export const IORING_SETUP_SINGLE_ISSUER = 1 << 12;
/**
 * Linux 6.1 (needs SINGLE_ISSUER): completion task work waits until the issuer enters with
 * IORING_ENTER_GETEVENTS, instead of running at whatever kernel entry comes next.
 */
export const IORING_SETUP_DEFER_TASKRUN = 1 << 13;
/** sq ring flags: the SQPOLL thread sleeps and needs IORING_ENTER_SQ_WAKEUP. */
export const IORING_SQ_NEED_WAKEUP = 1 << 0;
/**
 * sq ring flags (Linux 5.8): the CQ was full when the kernel posted a completion, which it keeps
 * aside until an io_uring_enter with IORING_ENTER_GETEVENTS (Linux 5.5 and later; before, such a
 * completion was dropped).
 */
export const IORING_SQ_CQ_OVERFLOW = 1 << 1;
/** sq ring flags: completion task work waits for a kernel entry (IORING_SETUP_TASKRUN_FLAG). */
export const IORING_SQ_TASKRUN = 1 << 2;
/** sqe->flags: fd is an index into the registered files. */
export const IOSQE_FIXED_FILE = 1 << 0;
/**
 * sqe->flags (Linux 5.5): the next SQE starts once this one completed, whatever its result
 * (IOSQE_IO_LINK would cancel it after a failure).
 */
export const IOSQE_IO_HARDLINK = 1 << 3;
/** sqe->flags: go to an io-wq worker at once, without trying inside the submitting call. */
export const IOSQE_ASYNC = 1 << 4;
/** poll(2) event: readable. */
export const POLLIN = 0x1;
/** io_uring_enter flags. */
export const IORING_ENTER_GETEVENTS = 1 << 0;
export const IORING_ENTER_SQ_WAKEUP = 1 << 1;
export const IORING_ENTER_EXT_ARG = 1 << 3;
/** io_uring_enter's fd is an index into this thread's registered ring fds (Linux 5.18). */
export const IORING_ENTER_REGISTERED_RING = 1 << 4;
/** Features (params.features). */
export const IORING_FEAT_EXT_ARG = 1 << 8;
/** Linux 5.6, which also brought IORING_REGISTER_PROBE. */
export const IORING_FEAT_RW_CUR_POS = 1 << 3;
/** cq ring flags: suppress eventfd notifications. */
export const IORING_CQ_EVENTFD_DISABLED = 1 << 0;
/** fsync_flags. */
export const IORING_FSYNC_DATASYNC = 1 << 0;
/** Probe op flag. */
export const IO_URING_OP_SUPPORTED = 1 << 0;

/** rw_flags (RWF_*). */
export const RWF_HIPRI = 0x1;
export const RWF_DSYNC = 0x2;

/** fallocate modes. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_NO_HIDE_STALE = 0x04;
export const FALLOC_FL_ZERO_RANGE = 0x10;
