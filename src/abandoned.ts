/**
 * Memory the kernel may still write into after its queue was destroyed with requests in flight
 * (a device that did not finish within the drain timeout). It stays referenced, and mapped, for
 * the life of the process: freeing it could let the kernel write into memory reused for
 * something else. Off the main thread that is not enough for the thread's own heap, which is
 * freed when its isolate ends: there a queue's destroy waits for such requests instead.
 *
 * @module
 */

const ABANDONED = new Set<unknown>();
const BUFFERS = new Set<ArrayBufferLike>();
/** The views abandoned, each iovec included (BlockDevice.released asks about each). */
const VIEWS = new WeakSet<Uint8Array>();

/** Keeps `buf` (and the memory behind it) alive for good. */
export function abandon(buf: Uint8Array | null | undefined, ...more: unknown[]): void {
  if (buf) {
    ABANDONED.add(buf);
    BUFFERS.add(buf.buffer);
    VIEWS.add(buf);
  }
  for (const m of more) {
    if (m instanceof Uint8Array) {
      BUFFERS.add(m.buffer);
      VIEWS.add(m);
    }
    if (Array.isArray(m)) {
      for (const b of m) {
        if (b instanceof Uint8Array) {
          BUFFERS.add(b.buffer);
          VIEWS.add(b);
        }
      }
    }
    ABANDONED.add(m);
  }
}

/**
 * Whether a request's buffer (a Uint8Array, or an array of them) was abandoned: the device may
 * still read or write it although its request has completed or been dropped.
 */
export function usesAbandoned(arg: unknown): boolean {
  if (arg instanceof Uint8Array) return VIEWS.has(arg);
  if (Array.isArray(arg)) {
    for (const b of arg) if (b instanceof Uint8Array && VIEWS.has(b)) return true;
  }
  return false;
}

/**
 * ArrayBuffers over memory the library mapped itself (memory regions): it stays mapped while
 * the kernel may use it, whichever thread made it and whether or not that thread still runs.
 */
const OWN_MAPPINGS = new WeakSet<ArrayBufferLike>();

/** Records `buffer` as memory the library mapped (see {@link outlivesThread}). */
export function markOwnMapping(buffer: ArrayBufferLike): void {
  OWN_MAPPINGS.add(buffer);
}

/**
 * Whether the memory of `buffer` outlives the thread that uses it. A Worker's own heap (plain
 * ArrayBuffers, the caller's regions) is freed when the Worker ends, and keeping a reference in
 * {@link abandon} cannot stop that; memory the library mapped is only unmapped once unused.
 */
export function outlivesThread(buffer: ArrayBufferLike): boolean {
  return OWN_MAPPINGS.has(buffer);
}

/** Whether memory of `buffer` was abandoned to the kernel (never unmap it). */
export function isAbandoned(buffer: ArrayBufferLike): boolean {
  return BUFFERS.has(buffer);
}
