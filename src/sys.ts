/**
 * Small wrappers over the libc calls the core makes outside the hot path, each turning -1 and
 * errno into a BlkioError.
 *
 * @module
 */
import type { Native } from "../ffi/types.ts";
import { BlkioError } from "./errors.ts";
import { ERRNO, errnoName, errnoText } from "./errno.ts";

/** open(2) flags and friends (the same on x86_64 and arm64, except O_DIRECT: see {@link oDirect}). */
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_CLOEXEC = 0o2000000;
/**
 * O_DIRECT by architecture (`uname -m`). arm and arm64 swap it with O_DIRECTORY: x86_64's value
 * there would open directories only, and every file open would fail with ENOTDIR.
 */
// Only 64-bit little-endian machines: the structs this library reads (statx, statfs, liburing's
// struct io_uring) are laid out and read that way.
const O_DIRECT_BY_ARCH: Readonly<Record<string, number>> = {
  x86_64: 0o40000,
  aarch64: 0o200000,
  riscv64: 0o40000,
};

/** O_DIRECT's value on `arch`, or null when this library does not know it. */
export function oDirectFor(arch: string): number | null {
  return Object.hasOwn(O_DIRECT_BY_ARCH, arch) ? O_DIRECT_BY_ARCH[arch] : null;
}

/** O_DIRECT on this machine; ENOTSUP on an architecture whose value is not known here. */
export function oDirect(native: Native): number {
  const v = oDirectFor(native.arch);
  if (v === null) {
    throw BlkioError.of(
      "ENOTSUP",
      `direct=true is not supported on ${native.arch}: its O_DIRECT value is not known`,
    );
  }
  return v;
}
export const F_GETFL = 3;
export const F_GETFD = 1;
export const FD_CLOEXEC = 1;
export const S_IFMT = 0o170000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;
export const S_IFDIR = 0o040000;
export const S_IFSOCK = 0o140000;

/** "a regular file", "a directory", ... for a file type (st_mode & S_IFMT); null for another. */
export function fileTypeName(type: number): string | null {
  switch (type) {
    case S_IFREG:
      return "a regular file";
    case S_IFBLK:
      return "a block device";
    case S_IFCHR:
      return "a character device";
    case S_IFIFO:
      return "a FIFO";
    case S_IFDIR:
      return "a directory";
    case S_IFSOCK:
      return "a socket";
  }
  return null;
}
const EFD_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const SEEK_END = 2;
const SC_PAGESIZE = 30;
const SC_IOV_MAX = 60;

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

/** A BlkioError for a failed call: `what` then the errno name and text. */
export function errnoError(errno: number, what: string): BlkioError {
  const code = errnoName(errno);
  const text = errnoText(code);
  return new BlkioError(errno, `${what}: ${code}${text ? ` (${text})` : ""}`);
}

/** `s` as a NUL-terminated C string in stable memory. */
export function cString(native: Native, s: string): Uint8Array {
  const bytes = ENCODER.encode(s);
  const out = native.alloc(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** open(2) with O_CLOEXEC; throws BlkioError naming the path. */
export function openPath(native: Native, path: string, flags: number): number {
  const fd = native.libc.open(cString(native, path), flags | O_CLOEXEC, 0);
  if (fd < 0) throw errnoError(native.errno(), `Failed to open ${JSON.stringify(path)}`);
  return fd;
}

/** close(2), ignoring errors (the fd is gone either way on Linux). */
export function closeFd(native: Native, fd: number): void {
  if (fd >= 0) native.libc.close(fd);
}

/** What the core needs of struct statx. */
export interface FileStat {
  mode: number;
  /** Device of the file system holding the file. */
  devMajor: number;
  devMinor: number;
  /** Device number of a block or character device. */
  rdevMajor: number;
  rdevMinor: number;
  size: number;
  /**
   * O_DIRECT's required file offset alignment (STATX_DIOALIGN, Linux 6.1): 0 where the file
   * takes no O_DIRECT of its own (ext4 data=journal, encrypted or inline files fall back to
   * buffered I/O), null where the kernel does not say.
   */
  dioOffsetAlign: number | null;
  /** O_DIRECT's required memory alignment (STATX_DIOALIGN), 0 or null as above. */
  dioMemAlign: number | null;
}

const AT_EMPTY_PATH = 0x1000;
const STATX_BASIC_STATS = 0x7ff;
const STATX_DIOALIGN = 0x2000;

const AT_FDCWD = -100;

/** statx(2) on an open fd (AT_EMPTY_PATH). */
export function fstat(native: Native, fd: number): FileStat {
  return statxAt(native, fd, "", AT_EMPTY_PATH, `statx(${fd})`);
}

/** statx(2) of `path`, following symlinks (as open(2) does). */
export function statPath(native: Native, path: string): FileStat {
  return statxAt(native, AT_FDCWD, path, 0, `statx(${JSON.stringify(path)})`);
}

function statxAt(native: Native, dirfd: number, path: string, flags: number, what: string): FileStat {
  const st = native.alloc(256);
  if (native.libc.statx(dirfd, cString(native, path), flags, STATX_BASIC_STATS | STATX_DIOALIGN, st) < 0) {
    throw errnoError(native.errno(), `${what} failed`);
  }
  const v = new DataView(st.buffer);
  // struct statx: stx_mask u32 @0, stx_mode u16 @28, stx_size u64 @40, stx_rdev_major/minor
  // @128/@132, stx_dev_major/minor @136/@140, stx_dio_mem_align u32 @152, stx_dio_offset_align
  // u32 @156.
  const dio = (v.getUint32(0, true) & STATX_DIOALIGN) !== 0;
  return {
    dioOffsetAlign: dio ? v.getUint32(156, true) : null,
    dioMemAlign: dio ? v.getUint32(152, true) : null,
    mode: v.getUint16(28, true),
    size: Number(v.getBigUint64(40, true)),
    rdevMajor: v.getUint32(128, true),
    rdevMinor: v.getUint32(132, true),
    devMajor: v.getUint32(136, true),
    devMinor: v.getUint32(140, true),
  };
}

/** f_type of a file on tmpfs (linux/magic.h). */
export const TMPFS_MAGIC = 0x01021994;
/** f_type of a file on FUSE (linux/magic.h), virtiofs included. */
export const FUSE_SUPER_MAGIC = 0x65735546;
/** f_type of the network file systems whose file sizes live on a server (linux/magic.h). */
export const NETWORK_FS_MAGICS: readonly number[] = [
  0x6969, // NFS_SUPER_MAGIC
  0xfe534d42, // SMB2_SUPER_MAGIC
  0xff534d42, // CIFS_SUPER_MAGIC
];

/**
 * The file system's type (f_type, a magic number such as {@link TMPFS_MAGIC}) and block size
 * (f_bsize) from fstatfs(2): struct statfs starts with these two longs on 64-bit Linux.
 */
export function fsStat(native: Native, fd: number): { type: number; blockSize: number } {
  const st = native.alloc(128);
  if (native.libc.fstatfs(fd, st) < 0) throw errnoError(native.errno(), `fstatfs(${fd}) failed`);
  const v = new DataView(st.buffer);
  return { type: Number(v.getBigInt64(0, true)), blockSize: Number(v.getBigInt64(8, true)) };
}

/** fcntl(F_GETFL). */
export function fileStatusFlags(native: Native, fd: number): number {
  const r = native.libc.fcntl(fd, F_GETFL, 0);
  if (r < 0) throw errnoError(native.errno(), `fcntl(${fd}, F_GETFL) failed`);
  return r;
}

/** Whether `fd` is an open file descriptor. */
export function isOpenFd(native: Native, fd: number): boolean {
  return native.libc.fcntl(fd, F_GETFD, 0) >= 0;
}

/** The size of the file or device behind `fd` (lseek to the end), exact at any size. */
export function seekEnd(native: Native, fd: number): bigint {
  const r = native.libc.lseek(fd, 0n, SEEK_END);
  if (r < 0n) throw errnoError(native.errno(), `lseek(${fd}) failed`);
  return r;
}

/** A new eventfd, close-on-exec and non-blocking. */
export function newEventfd(native: Native): number {
  const fd = native.libc.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw errnoError(native.errno(), "eventfd() failed");
  return fd;
}

/** The 8-byte counter value 1 that {@link signalEventfd} writes; made once. */
let eventfdOne: Uint8Array | null = null;

/**
 * Adds 1 to eventfd `fd`, waking whoever waits on it. Best effort: an eventfd write fails only
 * when the counter would overflow, and a waiter is then already awake.
 */
export function signalEventfd(native: Native, fd: number): void {
  if (eventfdOne === null) {
    eventfdOne = native.alloc(8);
    eventfdOne[0] = 1;
  }
  native.libc.write(fd, eventfdOne, 8n);
}

/** Reads a small text file (sysfs attributes) or returns null when it cannot be read. */
export function readText(native: Native, path: string): string | null {
  const fd = native.libc.open(cString(native, path), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    // Short of fds or memory the file may well be there: saying "absent" made connect at the fd
    // limit fail with EINVAL (no queue limits) or guess a file's O_DIRECT alignment.
    if (isShortage(native.errno())) throw errnoError(native.errno(), `Cannot open ${path}`);
    return null;
  }
  try {
    const buf = native.alloc(4096);
    const n = Number(native.libc.read(fd, buf, 4096n));
    if (n < 0) {
      // The same for the read: sysfs allocates its buffer in read(2), and an attribute taken
      // for absent under ENOMEM gave a connected instance other limits (request-alignment the
      // page size, flush-needed false on a device with a volatile write cache).
      const errno = native.errno();
      if (isShortage(errno)) throw errnoError(errno, `Cannot read ${path}`);
      return null;
    }
    return DECODER.decode(buf.subarray(0, n));
  } finally {
    native.libc.close(fd);
  }
}

/** CAP_IPC_LOCK's bit in /proc/self/status's CapEff. */
const CAP_IPC_LOCK = 14n;

/**
 * RLIMIT_MEMLOCK in bytes where it binds this process's io_uring rings: a finite soft limit in a
 * process without CAP_IPC_LOCK (the kernel then charges ring memory to it); else null, also when
 * /proc cannot be read.
 */
export function memlockLimit(native: Native): number | null {
  try {
    const caps = /^CapEff:\s+([0-9a-f]+)$/m.exec(readText(native, "/proc/self/status") ?? "")?.[1];
    if (caps === undefined || ((BigInt(`0x${caps}`) >> CAP_IPC_LOCK) & 1n) === 1n) return null;
    const soft = /^Max locked memory\s+(\S+)/m.exec(readText(native, "/proc/self/limits") ?? "")?.[1];
    return soft === undefined || soft === "unlimited" ? null : Number(soft);
  } catch {
    return null; // short of fds or memory: no hint then
  }
}

/** Whether `errno` says the process or system ran short (fds, memory), not what was asked. */
export function isShortage(errno: number): boolean {
  return errno === ERRNO.ENOMEM || errno === ERRNO.ENFILE || errno === ERRNO.EMFILE;
}

/**
 * Whether a failed io_uring_enter may pass if tried again: the kernel was short of memory or busy
 * (EAGAIN; EBUSY, its CQ full), or a signal cut the call short (EINTR). Any other errno stays
 * however often it is retried: EBADF (the ring fd closed under the library), EINVAL, EFAULT,
 * EOWNERDEAD (the SQPOLL thread died).
 */
export function enterMayPass(errno: number): boolean {
  return errno === ERRNO.EAGAIN || errno === ERRNO.EBUSY || errno === ERRNO.EINTR || errno === ERRNO.ENOMEM;
}

/** Something to sleep on (Atomics.wait). */
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/** Blocks this thread for `ms` milliseconds: between attempts at a call that may pass. */
export function pause(ms: number): void {
  Atomics.wait(SLEEPER, 0, 0, ms);
}

let mainThread: boolean | null = null;

/**
 * Whether this JavaScript thread is the process's main thread. Elsewhere (a Worker, a module of
 * `deno test`) the thread's heap is freed when its isolate ends, while the process, and the
 * kernel's requests into that memory, live on. Asked of the kernel: Deno runs each `deno test`
 * module in an isolate of its own on a thread of its own, where node:worker_threads still says
 * main thread. Each thread has its own copy of this module, so the answer is kept.
 */
export function onMainThread(native: Native): boolean {
  return mainThread ??= native.libc.gettid() === native.libc.getpid();
}

/** The page size. */
export function pageSize(native: Native): number {
  return Number(native.libc.sysconf(SC_PAGESIZE));
}

/** IOV_MAX. */
export function iovMax(native: Native): number {
  return Number(native.libc.sysconf(SC_IOV_MAX));
}
