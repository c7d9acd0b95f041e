/**
 * The shape of a random request, the same in both run modes (the sync API and BlockDevice): its
 * kind, how many iovecs, how its buffers are cut and aligned, and the bytes they carry (a
 * write's data, or a read's poison).
 *
 * @module
 */
import { bufferAddress } from "../src/buffers.ts";
import { requireNative } from "../src/native.ts";
import type { BufferPool } from "./_fuzz_buffers.ts";
import { IOV_MAX, outcomesOf, type TargetFacts } from "./_fuzz_expect.ts";
import type { WriteHistory } from "./_fuzz_history.ts";
import type { FuzzRequest, Op } from "./_fuzz_request.ts";
import type { Rng } from "./_fuzz_rng.ts";

/** A random kind of request, reads and writes most often. */
export function pickOp(rng: Rng): Op {
  return rng.weighted<Op>([
    [25, "read"],
    [25, "write"],
    [10, "readv"],
    [10, "writev"],
    [10, "writeZeroes"],
    [6, "discard"],
    [4, "flush"],
  ]);
}

/**
 * How many iovecs a request of `op` at `start` has, and its length then: 1 to 6 for vectored
 * ones (one in twenty 7 to 64), and now and then (where no alignment applies: `tiny`) more than IOV_MAX of 4 bytes each,
 * which is EINVAL with a message naming max-segments.
 */
export function pickCount(
  rng: Rng,
  op: Op,
  start: number,
  len: number,
  tiny: boolean,
  limit: number,
): { count: number; start: number; len: number } {
  const vectored = op === "readv" || op === "writev";
  let count = vectored ? rng.range(1, 6) : 1;
  // Now and then many iovecs (up to 64: still within vhost-user's max-segments at the default
  // queue size, and more than 16, where a driver that caps them would drop data).
  if (vectored && rng.chance(0.05)) count = rng.range(7, 64);
  if (!vectored || !tiny || !rng.chance(0.02) || start >= 2 ** 53) return { count, start, len };
  const many = IOV_MAX + 1;
  return { count: many, start: start + many * 4 > limit ? 0 : start, len: many * 4 };
}

/** Takes one piece of `len` bytes aligned to `align` plus `skew` from the pool, or null. */
export type TakePiece = (rng: Rng, len: number, align: number, skew: number) => Uint8Array | null;

/**
 * Buffers for a read or write of `len` bytes in `count` pieces (some empty), or null when the
 * pool has no room now. `take` chooses the kind of memory (mapped regions or not).
 */
export function pickBuffers(
  rng: Rng,
  pool: BufferPool,
  r: FuzzRequest,
  len: number,
  count: number,
  direct: boolean,
  take: TakePiece,
): Uint8Array[] | null {
  if (count > IOV_MAX) {
    // Many tiny iovecs from one piece (only where no alignment applies).
    const one = pool.take(rng.fork(), r, len, 1, 0);
    if (one === null) return null;
    const each = len / count;
    return Array.from({ length: count }, (_, k) => one.subarray(k * each, (k + 1) * each));
  }
  // Lengths: on block boundaries when the total is, mostly.
  const blocky = len % 512 === 0 && rng.chance(0.85);
  const cuts = new Set<number>();
  for (let k = 1; k < count; k++) {
    cuts.add(blocky ? rng.int(len / 512 + 1) * 512 : rng.int(len + 1));
  }
  const bounds = [0, ...[...cuts].sort((x, y) => x - y), len];
  const pieces: Uint8Array[] = [];
  for (let k = 0; k + 1 < bounds.length; k++) {
    const n = bounds[k + 1] - bounds[k];
    // Misaligned addresses now and then (O_DIRECT: EINVAL), mostly page-aligned.
    const skew = direct
      ? (rng.chance(0.04) ? rng.pick([4, 100, 256]) : 0)
      : rng.chance(0.3)
      ? rng.int(4096)
      : 0;
    const align = rng.chance(0.7) ? 4096 : 512;
    const piece = take(rng, n, align, skew);
    if (piece === null) return null;
    pieces.push(piece);
  }
  if (count > 1 && rng.chance(0.1)) {
    // An empty iovec somewhere: libblkio passes it on, this port leaves it out.
    pieces.splice(rng.int(pieces.length + 1), 0, new Uint8Array(0));
  }
  return pieces;
}

/**
 * Fills the buffers of `r` with random bytes: a write's data (recorded in `r` and `history`, to
 * say later whose bytes a read found), or a read's poison (a read that does not fill its buffer
 * shows), whose buffers become `r`'s destination.
 */
export function fillBuffers(rng: Rng, r: FuzzRequest, bufs: Uint8Array[], history: WriteHistory): void {
  for (const p of bufs) rng.fill(p);
  if (r.op === "write" || r.op === "writev") {
    const data = new Uint8Array(r.len);
    let at = 0;
    for (const p of bufs) {
      data.set(p, at);
      at += p.length;
    }
    r.data = data;
    // Copies: the caller's array may be changed after the call (scrambleIovecs).
    r.src = bufs.slice();
    r.srcLens = bufs.map((p) => p.length);
    history.add(r);
  } else {
    r.dest = bufs.slice();
    r.destLens = bufs.map((p) => p.length);
  }
}

/**
 * Now and then changes the iovec array of a vectored request just queued, as a caller may once
 * the call returned: its elements reversed or swapped, replaced by other memory of the same
 * lengths (holding random bytes), or the array emptied. The
 * library copies the array at the call (Queue.readv, BlockDevice.readv): the request must read
 * into and write from the buffers the array held then, which the model checks through the
 * request's own copy (`r.dest`, `r.src`). A driver that looked at the array again later (when a
 * request leaves the backlog for the ring, or resubmits the rest of a short transfer) would
 * write other bytes or leave the read's buffers unfilled. Returns what it did, for the log.
 */
export function scrambleIovecs(rng: Rng, bufs: Uint8Array[]): string {
  if (bufs.length === 0 || !rng.chance(0.3)) return "";
  switch (rng.int(4)) {
    case 0:
      bufs.reverse();
      return " (array reversed after the call)";
    case 1: {
      const i = rng.int(bufs.length), j = rng.int(bufs.length);
      [bufs[i], bufs[j]] = [bufs[j], bufs[i]];
      bufs.push(new Uint8Array(512));
      return ` (elements ${i} and ${j} swapped, one added, after the call)`;
    }
    case 2:
      for (let i = 0; i < bufs.length; i++) {
        const other = new Uint8Array(bufs[i].length);
        rng.fill(other);
        bufs[i] = other;
      }
      return " (elements replaced after the call)";
    default:
      bufs.length = 0;
      return " (array emptied after the call)";
  }
}

/** The address and length of each non-empty buffer: what the outcome rules look at. */
export function piecesOf(bufs: readonly Uint8Array[]): { addr: number; len: number }[] {
  const native = requireNative();
  return bufs.filter((p) => p.length > 0).map((p) => ({ addr: bufferAddress(native, p), len: p.length }));
}

/**
 * Sets what `r` may complete with on a target of `facts`, and the part of the target below
 * `limit` it may change meanwhile (its span); returns whether it reaches the target at all.
 */
export function expectOutcomes(
  r: FuzzRequest,
  facts: TargetFacts,
  pieces: readonly { addr: number; len: number }[],
  limit: number,
): boolean {
  r.outcomes = outcomesOf(facts, { op: r.op, start: r.start, len: r.len, flags: r.flags, pieces });
  const reaches = r.outcomes.some((o) => o.effect !== "none");
  if (reaches && r.len > 0 && r.start < limit) r.span = [r.start, Math.min(r.start + r.len, limit)];
  return reaches;
}
