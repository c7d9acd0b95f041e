/**
 * High-performance block device I/O for Deno and Bun: libblkio's API over io_uring, through
 * liburing and the runtimes' built-in FFI.
 *
 * Needs Linux with io_uring, liburing 2.3 or later (`apt-get install liburing2`) and, on Deno,
 * `--allow-ffi` (unscoped: the libraries are opened by name when this module is imported).
 *
 * Two APIs over the same drivers. Most programs want {@link BlockDevice}: every request returns
 * a promise, and no wait for a completion blocks the event loop. {@link Blkio} and {@link Queue}
 * are libblkio's own API (create, connect, start, queue requests, `doIo`), for code ported from
 * C or a Worker that does nothing but I/O: `doIo` blocks until its completions are there.
 *
 * @example Promises: write a block and read it back
 * ```ts
 * import { BlockDevice } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(1 << 20));
 * await using dev = await BlockDevice.open(path, { direct: true });
 * const buf = dev.allocBuffer(4096); // aligned, as O_DIRECT needs
 * buf.fill(0x42);
 * await dev.write(0, buf, { fua: true });
 * const back = dev.allocBuffer(4096);
 * await dev.read(0, back);
 * if (back[4095] !== 0x42) throw new Error("mismatch");
 * rmSync(dir, { recursive: true });
 * ```
 *
 * @example libblkio's API: write and read back a block
 * ```ts
 * import { Blkio, type Completion } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 *
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(1 << 20));
 * using b = Blkio.create("io_uring");
 * b.setStr("path", path);
 * b.connect();
 * b.start();
 * const q = b.getQueue(0)!;
 * const data = new TextEncoder().encode("hello, block device");
 * const out: Completion[] = [];
 * q.write(0, data);
 * q.doIo(out, 1, 1);
 * // A flush makes writes durable once they have completed: requests in flight have no order.
 * q.flush();
 * q.doIo(out, 1, 1);
 * const back = new Uint8Array(data.length);
 * q.read(0, back);
 * q.doIo(out, 1, 1);
 * if (new TextDecoder().decode(back) !== "hello, block device") throw new Error("mismatch");
 * rmSync(dir, { recursive: true });
 * ```
 *
 * @module
 */
export { Blkio } from "./src/blkio.ts";
export { Queue } from "./src/queue.ts";
export {
  BlockDevice,
  type BlockDeviceOpenOptions,
  type RequestOptions,
  type WriteOptions,
  type WriteZeroesOptions,
} from "./src/block_device.ts";
export { BlkioError } from "./src/errors.ts";
export { type Completion, newCompletion, ReqFlags } from "./src/completion.ts";
export type { MemoryRegion } from "./src/memory_region.ts";
export type { PropertyInfo, PropertyType } from "./src/properties.ts";
export type { StateName } from "./src/state.ts";
export { ERRNO, type ErrnoName, errnoName, errnoText } from "./src/errno.ts";
export { DRIVER_NAMES } from "./src/drivers/mod.ts";
