/**
 * Picks the adapter for the running runtime, once, at module load. Synchronously: with a
 * top-level await (a dynamic import of the adapter) every module importing the library loaded
 * asynchronously, and Bun dropped the messages posted to a Worker importing it before the Worker
 * had set its `onmessage`. Both adapters are imported; only the running runtime's is called.
 *
 * @module
 */
import type { Native } from "./types.ts";
import { LIBC_SONAME, LIBURING_SONAME } from "./symbols.ts";
import { loadBun } from "./bun.ts";
import { loadDeno } from "./deno.ts";

const UNSCOPED_FFI =
  "run Deno with --allow-ffi, without a list and without --deny-ffi (or answer A at its prompt)";
/** A system library's name opened as a path: `/some/dir/libc.so.6: cannot open ...`. */
const SONAME_AS_PATH = new RegExp(
  `/(${[LIBC_SONAME, LIBURING_SONAME].map((n) => n.replaceAll(".", "\\.")).join("|")}): cannot open`,
);

/** Why native code could not be loaded, or null when it was. */
export let loadError: Error | null = null;

function pick(): Native | null {
  try {
    if ("Bun" in globalThis) return loadBun();
    if ("Deno" in globalThis) return loadDeno();
    loadError = new Error("Unsupported runtime: blkio needs Deno (2.x) or Bun (1.x)");
  } catch (cause) {
    // Deno repeats its own prefix ("Could not open library: Could not open library: ...").
    const text = String((cause as Error)?.message ?? cause).replace(/^(Could not open library: )+/, "$1");
    if (/permission|NotCapable|allow-ffi/i.test(text) || (cause as Error)?.name === "NotCapable") {
      loadError = new Error(`Loading native libraries needs FFI permission: ${UNSCOPED_FFI}`, { cause });
    } else if ("Deno" in globalThis && SONAME_AS_PATH.test(text)) {
      // FFI permission flags that name libraries (--allow-ffi=libc.so.6, --deny-ffi=liburing.so.2,
      // or "y" at Deno's prompt) make Deno open each name as a path in the current directory,
      // where it is not. (Bun tries that path too when a library is missing, and says so.)
      loadError = new Error(
        `Deno looked for the system libraries in the current directory, as it does when an FFI ` +
          `permission flag names libraries: ${UNSCOPED_FFI} (${text})`,
        { cause },
      );
    } else if (/undefined symbol|not found in/i.test(text) && text.includes("io_uring")) {
      // Deno: "undefined symbol: io_uring_enter"; Bun: 'Symbol "io_uring_enter" not found in ...'.
      loadError = new Error(
        `${LIBURING_SONAME} is too old: blkio needs liburing 2.3 or later (io_uring_enter is missing; ` +
          `Debian 12's liburing2 is 2.3)`,
        { cause },
      );
    } else if (text.includes(LIBURING_SONAME)) {
      loadError = new Error(
        `${LIBURING_SONAME} could not be loaded: install the liburing2 package (apt-get install liburing2)`,
        { cause },
      );
    } else {
      loadError = new Error(`Native libraries could not be loaded: ${text}`, { cause });
    }
  }
  return null;
}

/** The loaded adapter, or null (see {@link loadError}). */
export const native: Native | null = pick();
