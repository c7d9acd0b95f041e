/**
 * The loaded native adapter, or a BlkioError that says why there is none.
 *
 * @module
 */
import { loadError, native } from "../ffi/load.ts";
import type { Native } from "../ffi/types.ts";
import { BlkioError } from "./errors.ts";

/** The adapter; throws BlkioError ELIBACC (with the cause) when liburing or FFI is missing. */
export function requireNative(): Native {
  if (native) return native;
  throw BlkioError.of("ELIBACC", loadError?.message ?? "Native libraries are not loaded", {
    cause: loadError ?? undefined,
  });
}
