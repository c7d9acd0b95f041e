/**
 * Linux errno values by name, and the reverse lookup.
 *
 * @module
 */

/**
 * The errno values the library reports (Linux x86_64 and arm64 share them). A completion's
 * `ret` is the negated value; a thrown {@link BlkioError} has it as `errno`.
 *
 * @example Telling a failed completion apart
 * ```ts
 * import { Blkio, type Completion, ERRNO } from "@blkio/blkio";
 * using b = Blkio.create("io_uring");
 * b.setStr("path", "/proc/self/exe");
 * b.setBool("read-only", true);
 * b.connect();
 * b.start();
 * const q = b.getQueue(0)!, out: Completion[] = [];
 * q.write(0, new Uint8Array(512), "w"); // a write on a read-only instance
 * q.doIo(out, 1, 1);
 * if (out[0].ret !== -ERRNO.EBADF) throw new Error(`unexpected ret ${out[0].ret}`);
 * ```
 */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EPIPE: 32,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ELOOP: 40,
  ENODATA: 61,
  ETIME: 62,
  ENOLINK: 67,
  EOVERFLOW: 75,
  ELIBACC: 79,
  EILSEQ: 84,
  EOPNOTSUPP: 95,
  ENOTSUP: 95,
  ECONNABORTED: 103,
  ENOTCONN: 107,
  ECONNREFUSED: 111,
  ETIMEDOUT: 110,
  EREMOTEIO: 121,
  EDQUOT: 122,
  ENOMEDIUM: 123,
  ECANCELED: 125,
} as const;

/**
 * An errno name such as `"EINVAL"`.
 *
 * @example A BlkioError's code as a key of ERRNO
 * ```ts
 * import { Blkio, BlkioError, ERRNO, type ErrnoName } from "@blkio/blkio";
 * try {
 *   Blkio.create("no-such-driver");
 * } catch (e) {
 *   if (!(e instanceof BlkioError)) throw e;
 *   const code = e.code as ErrnoName; // an ERRNO name for every errno the library reports
 *   if (code !== "ENOENT" || ERRNO[code] !== e.errno) throw new Error("unexpected");
 * }
 * ```
 */
export type ErrnoName = keyof typeof ERRNO;

const NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(ERRNO)) NAMES.set(value, name);
// ENOTSUP and EOPNOTSUPP are one value on Linux; libblkio's texts say ENOTSUP.
NAMES.set(95, "ENOTSUP");

/**
 * The name of a positive errno value, or `"E<n>"` for one this table does not know.
 *
 * @example Naming a completion's result
 * ```ts
 * import { ERRNO, errnoName } from "@blkio/blkio";
 * const ret = -ERRNO.ENOSPC; // as a failed write's completion has it
 * if (errnoName(-ret) !== "ENOSPC" || errnoName(95) !== "ENOTSUP") throw new Error("unexpected");
 * ```
 */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `E${errno}`;
}

/** glibc's strerror() texts for the errno values the library and node:fs report. */
const TEXT: Record<string, string> = {
  EPERM: "Operation not permitted",
  ENOENT: "No such file or directory",
  EINTR: "Interrupted system call",
  EIO: "Input/output error",
  ENXIO: "No such device or address",
  E2BIG: "Argument list too long",
  EBADF: "Bad file descriptor",
  EAGAIN: "Resource temporarily unavailable",
  ENOMEM: "Cannot allocate memory",
  EACCES: "Permission denied",
  EFAULT: "Bad address",
  EBUSY: "Device or resource busy",
  EEXIST: "File exists",
  ENODEV: "No such device",
  ENOTDIR: "Not a directory",
  EISDIR: "Is a directory",
  EINVAL: "Invalid argument",
  ENFILE: "Too many open files in system",
  EMFILE: "Too many open files",
  ENOTTY: "Inappropriate ioctl for device",
  ETXTBSY: "Text file busy",
  EFBIG: "File too large",
  ENOSPC: "No space left on device",
  ESPIPE: "Illegal seek",
  EROFS: "Read-only file system",
  EPIPE: "Broken pipe",
  ERANGE: "Numerical result out of range",
  ENAMETOOLONG: "File name too long",
  ENOSYS: "Function not implemented",
  ELOOP: "Too many levels of symbolic links",
  ETIME: "Timer expired",
  ENOLINK: "Link has been severed",
  EOVERFLOW: "Value too large for defined data type",
  ELIBACC: "Can not access a needed shared library",
  EOPNOTSUPP: "Operation not supported",
  ENOTSUP: "Operation not supported",
  ENOTCONN: "Transport endpoint is not connected",
  ETIMEDOUT: "Connection timed out",
  ECANCELED: "Operation canceled",
  ENODATA: "No data available",
  EILSEQ: "Invalid or incomplete multibyte or wide character",
  ECONNABORTED: "Software caused connection abort",
  ECONNREFUSED: "Connection refused",
  EREMOTEIO: "Remote I/O error",
  EDQUOT: "Disk quota exceeded",
  ENOMEDIUM: "No medium found",
};

/**
 * glibc's `strerror()` text for an errno name such as `"EINVAL"` (a BlkioError's `code`, or a
 * node:fs error's), or for a positive errno value; null for one it does not know.
 *
 * @example
 * ```ts
 * import { errnoText } from "@blkio/blkio";
 * if (errnoText("EFBIG") !== "File too large") throw new Error("unexpected");
 * if (errnoText(28) !== "No space left on device") throw new Error("unexpected");
 * ```
 */
export function errnoText(code: string | number): string | null {
  const name = typeof code === "number" ? errnoName(code) : code;
  return Object.hasOwn(TEXT, name) ? TEXT[name] : null;
}
