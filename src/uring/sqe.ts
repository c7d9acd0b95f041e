/**
 * SQE writers: pure functions over a Uint32Array view of the SQE array, named after liburing's
 * header-only `io_uring_prep_*` helpers (liburing 2.3 exports none of them). They never touch
 * ring indices; `i` is the SQE slot.
 *
 * 64-bit fields are written as two 32-bit halves so no bigint is made per request; offsets and
 * addresses are numbers below 2^53.
 *
 * @module
 */
import {
  BLOCK_URING_CMD_DISCARD,
  IORING_FSYNC_DATASYNC,
  IORING_OP,
  SYNC_FILE_RANGE_WRITE_AND_WAIT,
} from "./constants.ts";

const TWO32 = 4294967296;

/** io_uring_prep_rw: clears the SQE and sets opcode, fd, addr, len and offset. */
export function prepRw(
  sqes: Uint32Array,
  i: number,
  op: number,
  fd: number,
  addr: number,
  len: number,
  offset: number,
): void {
  const b = i << 4;
  sqes[b] = op; // opcode, flags = 0, ioprio = 0
  sqes[b + 1] = fd;
  sqes[b + 2] = offset >>> 0;
  sqes[b + 3] = (offset / TWO32) >>> 0;
  sqes[b + 4] = addr >>> 0;
  sqes[b + 5] = (addr / TWO32) >>> 0;
  sqes[b + 6] = len;
  sqes[b + 7] = 0; // rw_flags
  sqes[b + 8] = 0; // user_data
  sqes[b + 9] = 0;
  sqes[b + 10] = 0; // buf_index, personality
  sqes[b + 11] = 0; // file_index
  sqes[b + 12] = 0; // addr3
  sqes[b + 13] = 0;
  sqes[b + 14] = 0; // __pad2
  sqes[b + 15] = 0;
}

/** io_uring_prep_nop: does nothing, and completes 0. */
export function prepNop(sqes: Uint32Array, i: number): void {
  prepRw(sqes, i, IORING_OP.NOP, -1, 0, 0, 0);
}

/**
 * io_uring_prep_timeout with no completion count: completes -ETIME once the relative time in the
 * struct __kernel_timespec at `tsAddr` has passed (the kernel copies it at submission).
 */
export function prepTimeout(sqes: Uint32Array, i: number, tsAddr: number): void {
  prepRw(sqes, i, IORING_OP.TIMEOUT, -1, tsAddr, 1, 0);
}

/** io_uring_prep_read. */
export function prepRead(
  sqes: Uint32Array,
  i: number,
  fd: number,
  addr: number,
  len: number,
  offset: number,
): void {
  prepRw(sqes, i, IORING_OP.READ, fd, addr, len, offset);
}

/** io_uring_prep_write. */
export function prepWrite(
  sqes: Uint32Array,
  i: number,
  fd: number,
  addr: number,
  len: number,
  offset: number,
): void {
  prepRw(sqes, i, IORING_OP.WRITE, fd, addr, len, offset);
}

/**
 * io_uring_prep_read_fixed: `[addr, addr + len)` must lie inside registered buffer `bufIndex`,
 * whose pages the kernel pinned once instead of per request.
 */
export function prepReadFixed(
  sqes: Uint32Array,
  i: number,
  fd: number,
  addr: number,
  len: number,
  offset: number,
  bufIndex: number,
): void {
  prepRw(sqes, i, IORING_OP.READ_FIXED, fd, addr, len, offset);
  sqes[(i << 4) + 10] = bufIndex & 0xffff; // buf_index (u16), personality 0
}

/** io_uring_prep_write_fixed. */
export function prepWriteFixed(
  sqes: Uint32Array,
  i: number,
  fd: number,
  addr: number,
  len: number,
  offset: number,
  bufIndex: number,
): void {
  prepRw(sqes, i, IORING_OP.WRITE_FIXED, fd, addr, len, offset);
  sqes[(i << 4) + 10] = bufIndex & 0xffff;
}

/** io_uring_prep_readv: `iov` is the address of `nr` struct iovec. */
export function prepReadv(
  sqes: Uint32Array,
  i: number,
  fd: number,
  iov: number,
  nr: number,
  offset: number,
): void {
  prepRw(sqes, i, IORING_OP.READV, fd, iov, nr, offset);
}

/** io_uring_prep_writev. */
export function prepWritev(
  sqes: Uint32Array,
  i: number,
  fd: number,
  iov: number,
  nr: number,
  offset: number,
): void {
  prepRw(sqes, i, IORING_OP.WRITEV, fd, iov, nr, offset);
}

/** io_uring_prep_fsync with IORING_FSYNC_DATASYNC (fdatasync). */
export function prepFdatasync(sqes: Uint32Array, i: number, fd: number): void {
  prepRw(sqes, i, IORING_OP.FSYNC, fd, 0, 0, 0);
  sqes[(i << 4) + 7] = IORING_FSYNC_DATASYNC;
}

/**
 * io_uring_prep_sync_file_range with WAIT_BEFORE | WRITE | WAIT_AFTER: writes back the dirty
 * pages of `[offset, offset + len)`. The length field has 32 bits: a longer range goes to the
 * end of the file (length 0), which covers it.
 */
export function prepSyncFileRange(
  sqes: Uint32Array,
  i: number,
  fd: number,
  offset: number,
  len: number,
): void {
  prepRange(sqes, i, IORING_OP.SYNC_FILE_RANGE, fd, offset, len, SYNC_FILE_RANGE_WRITE_AND_WAIT);
}

/**
 * An operation on `[offset, offset + len)` of a file with its own flags word (in rw_flags' place).
 * The length field has 32 bits: 0 (to the end of the file) stands for a longer range.
 */
function prepRange(
  sqes: Uint32Array,
  i: number,
  op: number,
  fd: number,
  offset: number,
  len: number,
  word: number,
): void {
  prepRw(sqes, i, op, fd, 0, len > 0xffffffff ? 0 : len, offset);
  sqes[(i << 4) + 7] = word;
}

/**
 * io_uring_prep_fadvise: `advice` for `[offset, offset + len)` (advice in the rw_flags word). The
 * length field has 32 bits: a longer range goes to the end of the file (length 0).
 */
export function prepFadvise(
  sqes: Uint32Array,
  i: number,
  fd: number,
  offset: number,
  len: number,
  advice: number,
): void {
  prepRange(sqes, i, IORING_OP.FADVISE, fd, offset, len, advice);
}

/** io_uring_prep_fallocate: the length travels in addr, the mode in len. */
export function prepFallocate(
  sqes: Uint32Array,
  i: number,
  fd: number,
  mode: number,
  offset: number,
  len: number,
): void {
  prepRw(sqes, i, IORING_OP.FALLOCATE, fd, len, mode, offset);
}

/**
 * io_uring_prep_cmd_discard (liburing 2.8): discard `[offset, offset + len)` of block device
 * `fd` (BLOCK_URING_CMD_DISCARD, Linux 6.12). The kernel wants every other field zero.
 */
export function prepCmdDiscard(sqes: Uint32Array, i: number, fd: number, offset: number, len: number): void {
  prepRw(sqes, i, IORING_OP.URING_CMD, fd, offset, 0, 0);
  const b = i << 4;
  sqes[b + 2] = BLOCK_URING_CMD_DISCARD; // cmd_op (the upper half, __pad1, stays 0)
  sqes[b + 12] = len >>> 0; // addr3
  sqes[b + 13] = (len / TWO32) >>> 0;
}

/** io_uring_prep_poll_add: completes once `fd` has one of `events` (one-shot). */
export function prepPollAdd(sqes: Uint32Array, i: number, fd: number, events: number): void {
  prepRw(sqes, i, IORING_OP.POLL_ADD, fd, 0, 0, 0);
  sqes[(i << 4) + 7] = events; // poll32_events (little-endian)
}

/** Sets sqe->off to -1: the file's own position (the only one a pipe has). */
export function setCurrentPosition(sqes: Uint32Array, i: number): void {
  const b = i << 4;
  sqes[b + 2] = 0xffffffff;
  sqes[b + 3] = 0xffffffff;
}

/** io_uring_prep_cancel64: cancels the request whose user_data is `target` (32-bit here). */
export function prepCancel(sqes: Uint32Array, i: number, target: number): void {
  prepRw(sqes, i, IORING_OP.ASYNC_CANCEL, -1, target, 0, 0);
}

/** io_uring_sqe_set_data64 for 32-bit values (slot indices). */
export function setUserData(sqes: Uint32Array, i: number, value: number): void {
  sqes[(i << 4) + 8] = value;
}

/** Sets sqe->rw_flags (RWF_*). */
export function setRwFlags(sqes: Uint32Array, i: number, flags: number): void {
  sqes[(i << 4) + 7] = flags;
}

/** io_uring_sqe_set_flags (IOSQE_*). */
export function setSqeFlags(sqes: Uint32Array, i: number, flags: number): void {
  const b = i << 4;
  sqes[b] = (sqes[b] & ~0xff00) | ((flags & 0xff) << 8);
}

/** Adds `flags` (IOSQE_*) to the flags of SQE `i`. */
export function addSqeFlags(sqes: Uint32Array, i: number, flags: number): void {
  sqes[i << 4] |= (flags & 0xff) << 8;
}
