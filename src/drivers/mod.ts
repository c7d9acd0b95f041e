/**
 * The driver registry: name → constructor.
 *
 * @module
 */
import type { Native } from "../../ffi/types.ts";
import type { Driver } from "../driver.ts";
import { BlkioError } from "../errors.ts";
import { IoUringDriver } from "./io_uring/driver.ts";
import { VirtioBlkVhostUserDriver } from "./virtio_blk/driver.ts";

const DRIVERS: Record<string, (native: Native) => Driver> = {
  "io_uring": (native) => new IoUringDriver(native),
  "virtio-blk-vhost-user": (native) => new VirtioBlkVhostUserDriver(native),
};

/**
 * The names `Blkio.create` accepts.
 *
 * @example
 * ```ts
 * import { DRIVER_NAMES } from "@blkio/blkio";
 * if (!DRIVER_NAMES.includes("io_uring")) throw new Error("no io_uring driver");
 * ```
 */
export const DRIVER_NAMES: readonly string[] = Object.keys(DRIVERS);

/**
 * The constructor of the driver called `name`; ENOENT for an unknown name (asked before the
 * native libraries are loaded, so a typo is reported as such wherever the code runs).
 */
export function driverFactory(name: string): (native: Native) => Driver {
  const make = Object.hasOwn(DRIVERS, name) ? DRIVERS[name] : undefined;
  if (!make) {
    throw BlkioError.of(
      "ENOENT",
      `Unknown driver name ${JSON.stringify(name)} (available: ${DRIVER_NAMES.join(", ")})`,
    );
  }
  return make;
}
