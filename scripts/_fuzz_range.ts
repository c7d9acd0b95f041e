/**
 * Where the fuzzer's requests go: a start and length near the start or the end of the target, or
 * anywhere, mostly clear of the requests in flight. Shared by the synchronous API's run and the
 * BlockDevice run, so both aim at the same places.
 *
 * @module
 */
import type { InFlight, Op } from "./_fuzz_request.ts";
import type { Rng } from "./_fuzz_rng.ts";

const KiB = 1024;
/** The largest request of the occasional "more than one bio" kind. */
export const BIG_REQUEST = 2048 * KiB;

/** What a range is chosen within. */
export interface RangeContext {
  /** The target's size when made. */
  size: number;
  isBlockDevice: boolean;
  /** Bytes modelled (a file's size plus room to grow). */
  limit: number;
  /** Now and then more than one bio's worth (256 pages): the kernel splits such a request. */
  big: boolean;
  inflight: InFlight;
}

/**
 * A start and length for `op`. Mostly clear of the requests in flight it would race with (a
 * write with anything, a read with writes): where writes overlap in flight the outcome is
 * unknown, and a target that is mostly unknown checks little. One in five may overlap, to
 * exercise requests racing each other.
 */
export function pickRange(rng: Rng, op: Op, c: RangeContext): { start: number; len: number } {
  const clear = rng.chance(0.8);
  const writes = op === "write" || op === "writev" || op === "writeZeroes" || op === "discard";
  let r = rangeOnce(rng, op, c);
  for (let tries = 0; clear && tries < 8; tries++) {
    if (r.len === 0 || r.start >= 2 ** 53 || !c.inflight.overlaps(r.start, r.start + r.len, !writes)) {
      break;
    }
    r = rangeOnce(rng, op, c);
  }
  return r;
}

function rangeOnce(rng: Rng, op: Op, c: RangeContext): { start: number; len: number } {
  const a = rng.weighted([[45, 4096], [35, 512], [20, 1]]);
  const lr = rng.int(100);
  let len = lr < 3
    ? 0
    : lr < 50
    ? rng.range(1, 8) * 512
    : lr < 85
    ? rng.range(1, 16) * 4096
    : rng.range(1, 64 * KiB);
  if (c.big && rng.chance(0.02)) len = rng.range(256 * KiB, BIG_REQUEST);
  // On a target larger than that, now and then a zeroing or discard of up to all of it: longer
  // than one request of the device takes (virtio-blk's max-write-zeroes-len and max-discard-len,
  // 16 MiB from qemu-storage-daemon), which the driver splits.
  const zeroing = op === "writeZeroes" || op === "discard";
  if (c.big && zeroing && c.size > BIG_REQUEST && rng.chance(0.02)) len = rng.range(BIG_REQUEST, c.size);
  if (a > 1 && len > 0) len = Math.ceil(len / a) * a;
  const where = rng.int(100);
  let start: number;
  let mayPassEnd = false;
  if (where < 25) start = rng.int(64 * KiB);
  else if (where < 40) {
    start = Math.max(0, c.size - 64 * KiB + rng.int(80 * KiB));
    mayPassEnd = true;
  } else start = rng.int(c.size);
  start = Math.floor(start / a) * a;
  // Requests stay inside the model: a file has room to grow up to its limit; a block device's
  // end is only crossed on purpose.
  const limit = c.isBlockDevice ? (mayPassEnd ? c.size + 64 * KiB : c.size) : c.limit;
  if (start + len > limit) start = Math.max(0, Math.floor((limit - len) / a) * a);
  if (start + len > limit) len = limit - start;
  // Rarely, past what a JS number holds exactly.
  if (rng.chance(0.01)) {
    if (op === "writeZeroes" || op === "discard") return { start, len: 2 ** 60 };
    return { start: 2 ** 53 + rng.int(1 << 20), len };
  }
  return { start, len };
}
