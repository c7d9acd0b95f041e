/**
 * Picks the adapter for the running runtime, once, at module load. Synchronously: with a
 * top-level await (a dynamic import of the adapter) every module importing the library loaded
 * asynchronously, and Bun dropped the messages posted to a Worker importing it before the Worker
 * had set its `onmessage`. Both adapters are imported; only the running runtime's is called.
 *
 * @module
 */
import type { Native } from "./types.ts";
import { LIBURING_SONAME } from "./symbols.ts";
import { loadBun } from "./bun.ts";
import { loadDeno } from "./deno.ts";

/** Why native code could not be loaded, or null when it was. */
export let loadError: Error | null = null;

function pick(): Native | null {
  try {
    if ("Bun" in globalThis) return loadBun();
    if ("Deno" in globalThis) return loadDeno();
    loadError = new Error("Unsupported runtime: blkio needs Deno (2.x) or Bun (1.x)");
  } catch (cause) {
    const text = String((cause as Error)?.message ?? cause);
    if (/permission|NotCapable|allow-ffi/i.test(text) || (cause as Error)?.name === "NotCapable") {
      loadError = new Error(`Loading native libraries needs FFI permission (run Deno with --allow-ffi)`, {
        cause,
      });
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
