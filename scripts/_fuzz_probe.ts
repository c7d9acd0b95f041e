/**
 * Where the bytes of a wrong read came from, on a block device: its own blocks (read with
 * O_DIRECT) and its page cache (a buffered read, what a buffered instance and the fuzzer's
 * node:fs cross-check read). A mismatch that only the cache shows is the kernel's cache or the
 * library's handling of it (write zeroes drops and zeroes cached pages before it tries); one the
 * device shows too landed on the device.
 *
 * @module
 */
import { closeSync, constants, openSync, readSync } from "node:fs";
import { bufferAddress } from "../src/buffers.ts";
import { requireNative } from "../src/native.ts";
import { oDirect } from "../src/sys.ts";
import type { FuzzTarget } from "./_fuzz_target.ts";

const BLOCK = 4096;
const SHOWN = 8;

/**
 * For a wrong read (`why`, from DiskModel.check) of a block device on io_uring: what the device
 * and its page cache hold at the first byte that differs. Empty for other targets.
 */
export function probeWrongRead(
  t: Pick<FuzzTarget, "path" | "isBlockDevice" | "driver" | "base">,
  why: string,
): string {
  const m = /first at offset (\d+)/.exec(why);
  if (m === null || !t.isBlockDevice || t.driver !== "io_uring") return "";
  return probeBlockDevice(t.path, t.base + Number(m[1]));
}

/** `; at <at> the device holds … (O_DIRECT), its page cache … (buffered)`, or why it could not tell. */
export function probeBlockDevice(path: string, at: number): string {
  const start = Math.floor(at / BLOCK) * BLOCK;
  const show = (b: Uint8Array) =>
    [...b.subarray(at - start, at - start + SHOWN)].map((v) => v.toString(16).padStart(2, "0")).join(" ");
  try {
    // The cache first: an O_DIRECT read of a block device writes its dirty cached pages back.
    const cache = readBlock(path, start, false), device = readBlock(path, start, true);
    const same = device.every((v, i) => v === cache[i]);
    return `; at ${at} the device holds ${show(device)} (O_DIRECT), its page cache ` +
      `${same ? "the same" : `${show(cache)} (buffered)`}`;
  } catch (e) {
    return `; the device could not be read at ${at}: ${e instanceof Error ? e.message : e}`;
  }
}

/** The block at `start`, through O_DIRECT (`direct`: an aligned buffer) or the page cache. */
function readBlock(path: string, start: number, direct: boolean): Uint8Array {
  const native = requireNative();
  const room = new Uint8Array(2 * BLOCK);
  const skew = (BLOCK - (bufferAddress(native, room) % BLOCK)) % BLOCK;
  const buf = room.subarray(skew, skew + BLOCK);
  const fd = openSync(path, constants.O_RDONLY | (direct ? oDirect(native) : 0));
  try {
    readSync(fd, buf, 0, BLOCK, start);
  } finally {
    closeSync(fd);
  }
  return buf.slice();
}
