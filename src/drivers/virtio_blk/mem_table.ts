/**
 * The driver's memory table: which address ranges the back-end can see (the virtqueue memory
 * and every mapped memory region), with a fast "is this buffer inside one" lookup for the
 * request path.
 *
 * @module
 */
import type { MemoryRegion } from "../../memory_region.ts";
import type { VhostMemRegion } from "./vhost_user.ts";

/** Mapped ranges, in map order. */
export class MemTable {
  readonly #entries = new Map<MemoryRegion, VhostMemRegion>();
  #starts: number[] = [];
  #ends: number[] = [];
  #buffers: ArrayBufferLike[] = [];
  #last = -1;

  /** How many regions are recorded. */
  get size(): number {
    return this.#entries.size;
  }

  /** Records `region` as described by `desc`. */
  add(region: MemoryRegion, desc: VhostMemRegion): void {
    this.#entries.set(region, desc);
    this.#rebuild();
  }

  /** Forgets `region`; returns what it was recorded as, or null. */
  remove(region: MemoryRegion): VhostMemRegion | null {
    const d = this.#entries.get(region) ?? null;
    if (d !== null) {
      this.#entries.delete(region);
      this.#rebuild();
    }
    return d;
  }

  /** Every recorded range. */
  all(): VhostMemRegion[] {
    return [...this.#entries.values()];
  }

  /**
   * Whether `[addr, addr + len)`, the memory of a view of `buffer`, lies inside one recorded
   * range and `buffer` is that region's own ArrayBuffer, not detached (transferred away while
   * mapped). Whether a region's memory is still in use is asked by ArrayBuffer (a request keeps
   * its views); a second ArrayBuffer over the same memory (two views a caller made of one
   * mapping) would escape that, and unmapping the region with requests through it in flight
   * lets the back-end write their data into whatever region is mapped next.
   */
  contains(buffer: ArrayBufferLike, addr: number, len: number): boolean {
    const end = addr + len;
    const l = this.#last;
    if (l >= 0 && addr >= this.#starts[l] && end <= this.#ends[l]) return this.#isOwn(l, buffer);
    for (let i = 0; i < this.#starts.length; i++) {
      if (addr >= this.#starts[i] && end <= this.#ends[i]) {
        this.#last = i;
        return this.#isOwn(i, buffer);
      }
    }
    return false;
  }

  #isOwn(i: number, buffer: ArrayBufferLike): boolean {
    return this.#buffers[i] === buffer && buffer.byteLength !== 0;
  }

  #rebuild(): void {
    const regions = [...this.#entries.keys()];
    const all = this.all();
    this.#starts = all.map((d) => d.addr);
    this.#ends = all.map((d) => d.addr + d.len);
    this.#buffers = regions.map((r) => r.bytes.buffer);
    this.#last = -1;
  }
}
