/**
 * Memory the kernel may still write into after its queue was destroyed with requests in flight
 * (a device that did not finish within the drain timeout). It stays referenced, and mapped, for
 * the life of the process: freeing it could let the kernel write into memory reused for
 * something else.
 *
 * @module
 */

const ABANDONED = new Set<unknown>();
const BUFFERS = new Set<ArrayBufferLike>();

/** Keeps `buf` (and the memory behind it) alive for good. */
export function abandon(buf: Uint8Array | null | undefined, ...more: unknown[]): void {
  if (buf) {
    ABANDONED.add(buf);
    BUFFERS.add(buf.buffer);
  }
  for (const m of more) {
    if (m instanceof Uint8Array) BUFFERS.add(m.buffer);
    if (Array.isArray(m)) { for (const b of m) if (b instanceof Uint8Array) BUFFERS.add(b.buffer); }
    ABANDONED.add(m);
  }
}

/** Whether memory of `buffer` was abandoned to the kernel (never unmap it). */
export function isAbandoned(buffer: ArrayBufferLike): boolean {
  return BUFFERS.has(buffer);
}
