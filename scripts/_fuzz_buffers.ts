/**
 * The fuzzer's I/O buffers: memory regions (mapped or not) and plain JS memory, handed out in
 * pieces that no two requests in flight share (a write's bytes must stay what the model
 * recorded, and a read's buffer must be written by that read only).
 *
 * @module
 */
import type { MemoryRegion } from "../mod.ts";
import { bufferAddress } from "../src/buffers.ts";
import { requireNative } from "../src/native.ts";
import type { Interval } from "./_fuzz_disk.ts";
import type { Chunk, FuzzRequest } from "./_fuzz_request.ts";
import type { Rng } from "./_fuzz_rng.ts";

/** Memory the pool hands out pieces of. */
export class PoolEntry {
  readonly bytes: Uint8Array;
  /** The region it is, or null for plain JS memory and BlockDevice buffers. */
  readonly region: MemoryRegion | null;
  /**
   * Whether it lies in a memory region of the instance: its own, or a buffer of
   * `BlockDevice.allocBuffer` (carved from regions the device mapped).
   */
  readonly inRegion: boolean;
  /** The native address of `bytes[0]` (for alignment). */
  readonly base: number;
  /** Pieces in use, and by which request. */
  readonly busy = new Map<Interval, FuzzRequest>();
  /** The last pieces handed back, newest last: who may have written a byte that changed. */
  readonly past: { piece: Interval; r: FuzzRequest; step: number }[] = [];
  /**
   * A request dropped by destroy() or removeQueue() may have been in the kernel with a piece of
   * this memory: it is never handed out again (a late write into it would fail a later check).
   */
  retired = false;
  mapped = false;
  freed = false;

  constructor(bytes: Uint8Array, region: MemoryRegion | null, inRegion = region !== null) {
    this.bytes = bytes;
    this.region = region;
    this.inRegion = inRegion;
    this.base = bufferAddress(requireNative(), bytes);
  }

  /** The requests using it. */
  users(): Set<FuzzRequest> {
    return new Set(this.busy.values());
  }
}

/** Plain JS buffers are this big: room for several requests of up to 64 KiB. */
const PLAIN_LEN = 1024 * 1024;

/** The buffers requests are taken from. */
export class BufferPool {
  readonly entries: PoolEntry[] = [];
  /** The run's step now (for the record of who had a piece when). */
  step = 0;

  /** Adds plain JS memory (a fresh ArrayBuffer: its backing store never moves). */
  addPlain(len = PLAIN_LEN): PoolEntry {
    const e = new PoolEntry(new Uint8Array(len), null);
    this.entries.push(e);
    return e;
  }

  /** Adds an allocated region. */
  addRegion(region: MemoryRegion): PoolEntry {
    const e = new PoolEntry(region.bytes, region);
    this.entries.push(e);
    return e;
  }

  /** Adds a buffer of `BlockDevice.allocBuffer` (mapped for as long as its device is open). */
  addDeviceBuffer(bytes: Uint8Array): PoolEntry {
    const e = new PoolEntry(bytes, null, true);
    e.mapped = true;
    this.entries.push(e);
    return e;
  }

  /** The entry of `region`, if the pool has it. */
  entryOf(region: MemoryRegion): PoolEntry | undefined {
    return this.entries.find((e) => e.region === region);
  }

  /** The entry `addr` lies in, if any. */
  entryAt(addr: number): PoolEntry | undefined {
    return this.entries.find((e) => addr >= e.base && addr < e.base + e.bytes.length);
  }

  /** Drops `entry` (its region was freed or its instance destroyed). */
  remove(entry: PoolEntry): void {
    const i = this.entries.indexOf(entry);
    if (i >= 0) this.entries.splice(i, 1);
  }

  /** Drops every region (their instance is gone); plain memory stays. */
  removeRegions(): void {
    for (let i = this.entries.length - 1; i >= 0; i--) if (this.entries[i].region) this.entries.splice(i, 1);
  }

  /** Retires `entry` (see PoolEntry.retired), replacing plain memory with fresh memory. */
  retire(entry: PoolEntry): void {
    if (entry.retired) return;
    entry.retired = true;
    if (entry.region === null) {
      this.remove(entry);
      this.addPlain(entry.bytes.length);
    }
  }

  /**
   * A piece of `len` bytes for `r`, at an address that is a multiple of `align` plus `skew`
   * (skew 0: aligned), or null when none was found in a few tries. `plainOk`: plain JS memory
   * may be used; `mappedOnly`: only regions mapped now.
   */
  take(
    rng: Rng,
    r: FuzzRequest,
    len: number,
    align: number,
    skew: number,
    plainOk = true,
    mappedOnly = false,
  ): Uint8Array | null {
    const usable = this.entries.filter((e) =>
      !e.retired && !e.freed && (plainOk || e.inRegion) && (!mappedOnly || e.mapped) &&
      e.bytes.length >= len + skew
    );
    if (usable.length === 0) return null;
    for (let tries = 0; tries < 8; tries++) {
      const e = rng.pick(usable);
      const room = e.bytes.length - len - skew;
      // Addresses aligned to `align` (regions are page-aligned, plain memory need not be).
      const lead = (align - (e.base % align)) % align;
      if (room < lead) continue;
      const slots = Math.floor((room - lead) / align);
      const off = lead + rng.int(slots + 1) * align + skew;
      const piece: Interval = [off, off + len];
      let free = true;
      for (const [s, end] of e.busy.keys()) {
        // Empty pieces share nothing, but keep them apart anyway: simpler to reason about.
        if (s < piece[1] + 1 && piece[0] < end + 1) {
          free = false;
          break;
        }
      }
      if (!free) continue;
      e.busy.set(piece, r);
      // The byte on each side: no other piece may take it while this one is busy.
      const bytes = e.bytes;
      const before = off > 0 ? bytes[off - 1] : -1;
      const after = off + len < bytes.length ? bytes[off + len] : -1;
      const chunk: Chunk = {
        release: () => {
          e.busy.delete(piece);
          e.past.push({ piece, r, step: this.step });
          if (e.past.length > 1024) e.past.shift();
        },
        guards: () => {
          // Detached (a freed region, a closed device's buffer): nothing to check.
          if (bytes.length === 0) return null;
          if (before >= 0 && bytes[off - 1] !== before) {
            return `the byte before its buffer (piece [${off}, ${off + len}) of ${bytes.length}) changed ` +
              `from 0x${before.toString(16)} to 0x${bytes[off - 1].toString(16)}${chunk.who(-1)}`;
          }
          if (after >= 0 && bytes[off + len] !== after) {
            return `the byte after its buffer (piece [${off}, ${off + len}) of ${bytes.length}) changed ` +
              `from 0x${after.toString(16)} to 0x${bytes[off + len].toString(16)}${chunk.who(len)}`;
          }
          return null;
        },
        view: bytes.subarray(off, off + len),
        who: (k) => {
          const at = off + k;
          const users = e.past.filter((u) => u.piece[0] <= at && at < u.piece[1]).map((u) =>
            `${u.r.describe}, given back at step ${u.step} (${u.r.ended})`
          );
          for (const [p, u] of e.busy) {
            if (u !== r && p[0] <= at && at < p[1]) users.push(`${u.describe} (busy)`);
          }
          return `; ${e.region ? "region" : e.inRegion ? "device buffer" : "plain memory"}` +
            `${e.retired ? " (retired)" : ""}, byte ${at}; earlier users of it: ` +
            `${users.length === 0 ? "none recorded" : users.slice(-6).join("; ")}`;
        },
      };
      r.chunks.push(chunk);
      r.entries.push(e);
      return e.bytes.subarray(off, off + len);
    }
    return null;
  }
}
