/**
 * What a request that completed does to the fuzzer's model of the target, by the outcome the
 * model matched it to: a read's bytes are checked, a write's define the target. Shared by the
 * synchronous API's run and the BlockDevice run.
 *
 * @module
 */
import type { DiskModel } from "./_fuzz_disk.ts";
import { NO_UNMAP } from "./_fuzz_expect.ts";
import type { FuzzRequest, Outcome } from "./_fuzz_request.ts";

/**
 * Applies `effect` of request `r` to `disk` (`growable`: a file, whose size follows). Returns why
 * a read's bytes differ from the model, or null.
 */
export function applyOutcome(
  disk: DiskModel,
  r: FuzzRequest,
  effect: Outcome["effect"],
  growable: boolean,
  part?: Outcome["part"],
): string | null {
  if (part !== undefined) {
    // Only this part changed: a zeroing's chunks (no data, no growth: block devices only).
    disk.apply(effect === "zero" ? "zero" : "either", part[0], part[1], null, r.id, r.conflicts);
    return null;
  }
  switch (effect) {
    case "check":
      return disk.check(r.start, r.dest ?? [], r.conflicts, r.destLens);
    case "data":
      disk.apply("data", r.start, r.len, r.data, r.id, r.conflicts);
      if (growable) disk.grow(r.start + r.len, true);
      return null;
    case "zero":
      disk.apply("zero", r.start, r.len, null, r.id, r.conflicts);
      // Without KEEP_SIZE (NO_UNMAP: FALLOC_FL_ZERO_RANGE) a file may grow to its end.
      if (growable && (r.flags & NO_UNMAP) !== 0) disk.grow(r.start + r.len, false);
      return null;
    case "discard":
      disk.apply("discard", r.start, r.len, null, r.id, r.conflicts);
      return null;
    case "either":
      // A write or write zeroes that failed after landing in part (a full file system; a bad
      // sector met after other parts were written): a file may have grown as far as it got.
      disk.apply("either", r.start, r.len, r.op === "writeZeroes" ? null : r.data, r.id, r.conflicts);
      if (growable) disk.grow(r.start + r.len, false);
      return null;
    case "forget":
      disk.apply("forget", r.start, r.len, null, r.id, []);
      if (growable) disk.grow(r.start + r.len, false);
      return null;
    case "none":
      return null;
  }
}
