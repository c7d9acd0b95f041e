/**
 * Linux errno values by name, and the reverse lookup.
 *
 * @module
 */

/** The errno values the library reports (Linux x86_64 and arm64 share them). */
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
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
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

/** An errno name such as `"EINVAL"`. */
export type ErrnoName = keyof typeof ERRNO;

const NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(ERRNO)) NAMES.set(value, name);
// ENOTSUP and EOPNOTSUPP are one value on Linux; libblkio's texts say ENOTSUP.
NAMES.set(95, "ENOTSUP");

/** The name of a positive errno value, or `"E<n>"` for one this table does not know. */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `E${errno}`;
}
