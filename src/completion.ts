/**
 * Completions and request flags.
 *
 * @module
 */

/**
 * The result of one request, filled in by `Queue.doIo`.
 *
 * @example Telling requests apart by their userData, and why one failed
 * ```ts
 * import { Blkio, type Completion } from "@blkio/blkio";
 * using b = Blkio.create("io_uring");
 * b.setStr("path", "/proc/self/exe");
 * b.setBool("read-only", true);
 * b.connect();
 * b.start();
 * const q = b.getQueue(0)!;
 * const header = { offset: 0, buf: new Uint8Array(4) };
 * q.read(header.offset, header.buf, header); // any value: it comes back as it was
 * q.write(0, new Uint8Array(4), "write"); // a read-only instance: fails
 * const out: Completion[] = [];
 * q.doIo(out, 2, 2);
 * const read = out.find((c) => c.userData === header)!, write = out.find((c) => c.userData === "write")!;
 * if (read.ret !== 0 || write.ret !== -9 || write.errorMsg === null) throw new Error("unexpected");
 * ```
 */
export interface Completion {
  /** The `userData` given with the request, unchanged (same identity). */
  userData: unknown;
  /** 0 on success, or a negative errno. */
  ret: number;
  /** Why the request failed, when the library knows more than the errno; null on success. */
  errorMsg: string | null;
}

/**
 * Creates an empty completion object (for preallocating `doIo` output arrays).
 *
 * @example An output array made once, reused by every doIo
 * ```ts
 * import { Blkio, newCompletion } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(65536));
 * using b = Blkio.create("io_uring");
 * b.setStr("path", path);
 * b.connect();
 * b.start();
 * const q = b.getQueue(0)!;
 * const out = Array.from({ length: 16 }, newCompletion); // doIo fills these in place
 * for (let i = 0; i < 16; i++) q.read(i * 4096, new Uint8Array(4096), i);
 * let done = 0;
 * while (done < 16) done += q.doIo(out, 1, 16 - done);
 * rmSync(dir, { recursive: true });
 * ```
 */
export function newCompletion(): Completion {
  return { userData: undefined, ret: 0, errorMsg: null };
}

/**
 * Request flags, as libblkio's `BLKIO_REQ_*`.
 *
 * - `FUA`: the write reaches stable storage before it completes (write, writev, writeZeroes).
 * - `NO_UNMAP`: writeZeroes keeps the range allocated.
 * - `NO_FALLBACK`: writeZeroes fails with ENOTSUP rather than writing zero buffers.
 *
 * A bit a request does not take comes back in its completion as `-EINVAL` with libblkio's message.
 *
 * @example A write that is durable when it completes, and zeroes that keep their blocks
 * ```ts
 * import { Blkio, type Completion, ReqFlags } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(65536));
 * using b = Blkio.create("io_uring");
 * b.setStr("path", path);
 * b.connect();
 * b.start();
 * const q = b.getQueue(0)!;
 * q.write(0, new Uint8Array(4096).fill(1), "fua", ReqFlags.FUA);
 * q.writeZeroes(8192, 4096, "zero", ReqFlags.NO_UNMAP);
 * q.read(0, new Uint8Array(4096), "bad", ReqFlags.FUA); // FUA is for writes
 * const out: Completion[] = [];
 * q.doIo(out, 3, 3);
 * const ret = (ud: string) => out.find((c) => c.userData === ud)!.ret;
 * // NO_UNMAP needs a file system that zeroes a range in place: tmpfs cannot (-95, EOPNOTSUPP).
 * const zeroed = ret("zero") === 0 || ret("zero") === -95;
 * if (ret("fua") !== 0 || !zeroed || ret("bad") !== -22) throw new Error("unexpected");
 * rmSync(dir, { recursive: true });
 * ```
 */
export const ReqFlags = { FUA: 1, NO_UNMAP: 2, NO_FALLBACK: 4 } as const;

/** Request kinds, the index used by flag checks and drivers. */
export const Op = {
  Read: 0,
  Write: 1,
  Readv: 2,
  Writev: 3,
  WriteZeroes: 4,
  Discard: 5,
  Flush: 6,
} as const;

/** One request kind. */
export type OpValue = typeof Op[keyof typeof Op];

const ALLOWED_FLAGS: readonly number[] = [
  0, // read
  ReqFlags.FUA, // write
  0, // readv
  ReqFlags.FUA, // writev
  ReqFlags.FUA | ReqFlags.NO_UNMAP | ReqFlags.NO_FALLBACK, // write zeroes
  0, // discard
  0, // flush
];
const ALL_FLAGS = ReqFlags.FUA | ReqFlags.NO_UNMAP | ReqFlags.NO_FALLBACK;

/** libblkio's message for a flag that is not valid for a request, or null when all are. */
export function flagsError(op: OpValue, flags: number): string | null {
  if ((flags & ~ALL_FLAGS) !== 0) return "unsupported bits in request flags";
  const bad = flags & ~ALLOWED_FLAGS[op];
  if (bad === 0) return null;
  if (bad & ReqFlags.FUA) return "BLKIO_REQ_FUA is invalid for this request type";
  if (bad & ReqFlags.NO_UNMAP) return "BLKIO_REQ_NO_UNMAP is invalid for this request type";
  return "BLKIO_REQ_NO_FALLBACK is invalid for this request type";
}
