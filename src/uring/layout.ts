/**
 * Struct layouts, declared once: the kernel UAPI structs (stable) and the few fields of
 * liburing 2.x's `struct io_uring` the ring reads (ABI-stable within soname .2; checked against
 * the kernel's own values when a ring is set up).
 *
 * @module
 */

/** sizeof and offsets of struct io_uring_sqe (64 bytes). */
export const SQE = {
  size: 64,
  opcode: 0,
  flags: 1,
  fd: 4,
  off: 8,
  addr: 16,
  len: 24,
  rwFlags: 28,
  userData: 32,
} as const;

/** struct io_uring_cqe (16 bytes). */
export const CQE = { size: 16, userData: 0, res: 8, flags: 12 } as const;

/** struct io_uring_params (120 bytes). */
export const PARAMS = { size: 120, sqEntries: 0, cqEntries: 4, flags: 8, features: 20, wqFd: 24 } as const;

/** struct iovec. */
export const IOVEC = { size: 16, base: 0, len: 8 } as const;

/** struct __kernel_timespec. */
export const TIMESPEC = { size: 16, sec: 0, nsec: 8 } as const;

/** struct io_uring_getevents_arg (used with IORING_ENTER_EXT_ARG). */
export const GETEVENTS_ARG = { size: 24, sigmask: 0, sigmaskSz: 8, ts: 16 } as const;

/** struct io_uring_probe header and its ops. */
export const PROBE = { header: 16, opsLen: 1, opSize: 8, opFlags: 2 } as const;

/** liburing 2.x struct io_uring (216 bytes): pointer fields into the ring mappings. */
export const LIBURING_RING = {
  size: 216,
  sqKhead: 0,
  sqKtail: 8,
  sqKringMask: 16,
  sqKringEntries: 24,
  sqKflags: 32,
  sqArray: 48,
  sqSqes: 56,
  cqKhead: 104,
  cqKtail: 112,
  cqKringMask: 120,
  cqKringEntries: 128,
  cqKflags: 136,
  cqCqes: 152,
  ringFd: 196,
  features: 200,
  /** What liburing passes to io_uring_enter: the ring fd, or its registered index. */
  enterRingFd: 204,
} as const;
