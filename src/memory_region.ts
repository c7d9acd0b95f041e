/**
 * Memory regions: memfd-backed memory the library allocates, and the registry of what is
 * allocated and mapped.
 *
 * @module
 */
import type { Native } from "../ffi/types.ts";
import { BlkioError } from "./errors.ts";
import { bufferAddress, bufferOf, byteLengthOf, checkBuffer } from "./buffers.ts";
import { closeFd, cString, errnoError, pageSize } from "./sys.ts";
import { isAbandoned, markOwnMapping } from "./abandoned.ts";
import { describe } from "./properties.ts";

/**
 * A range of memory usable for I/O buffers. Drivers that share memory with another process
 * (vhost-user) can only use mapped regions; io_uring can use any memory, and mapping is a
 * promise that the region stays valid while mapped.
 *
 * @example Read into a mapped region
 * ```ts
 * import { Blkio, type Completion, type MemoryRegion } from "@blkio/blkio";
 * using b = Blkio.create("io_uring");
 * b.setStr("path", "/proc/self/exe");
 * b.setBool("read-only", true);
 * b.connect();
 * b.start();
 * const region: MemoryRegion = b.allocMemRegion(1 << 20);
 * b.mapMemRegion(region); // io_uring registers it with the kernel: reads into it are faster
 * const q = b.getQueue(0)!, out: Completion[] = [];
 * q.read(0, region.bytes.subarray(0, 4096));
 * q.read(4096, region.bytes.subarray(4096, 8192));
 * q.doIo(out, 2, 2);
 * if (region.fd < 0 || region.len !== 1 << 20 || region.bytes[1] !== 0x45) throw new Error("unexpected");
 * b.unmapMemRegion(region);
 * b.freeMemRegion(region); // or leave both to destroy()
 * ```
 */
export interface MemoryRegion {
  /**
   * The whole region; subarray it for I/O buffers. Over a plain (unshared) ArrayBuffer, so it
   * can be handed to web APIs that take a `BufferSource` (`crypto.subtle`, `Blob`, `Response`).
   */
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** Length in bytes. */
  readonly len: number;
  /** The memfd backing the region, or -1 for a region the caller built. */
  readonly fd: number;
  /** Offset of `bytes` within `fd`. */
  readonly fdOffset: number;
}

const MFD_CLOEXEC = 1;
const MFD_ALLOW_SEALING = 2;
const F_ADD_SEALS = 1033;
const F_SEAL_SEAL = 0x1;
const F_SEAL_SHRINK = 0x2;
const PROT_READ_WRITE = 3;
const MAP_SHARED = 1;
const MAP_FIXED = 0x10;
const PROT_NONE = 0;
const MAP_NORESERVE = 0x4000;
const MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20;
const MAP_FAILED = 2 ** 64 - 1;

/**
 * A new close-on-exec memfd of `len` bytes mapped shared (memory another process or the kernel
 * can share) at a multiple of `alignment`; throws BlkioError and leaks nothing on failure.
 * Sealed against shrinking (and against further seals): whoever else gets the fd, a vhost-user
 * back-end say, could otherwise truncate it, and this process would die of SIGBUS at its next
 * access to the mapping.
 */
export function mapMemfd(
  n: Native,
  name: string,
  len: number,
  alignment = 1,
): { fd: number; addr: number } {
  const fd = n.libc.memfd_create(cString(n, name), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw errnoError(n.errno(), `memfd_create(${name}) failed`);
  const fail = (what: string): never => {
    const e = errnoError(n.errno(), what);
    closeFd(n, fd);
    throw e;
  };
  if (n.libc.ftruncate(fd, BigInt(len)) < 0) fail(`ftruncate(memfd, ${len}) failed`);
  if (n.libc.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) < 0) {
    fail(`Sealing the memfd (${name}) failed`);
  }
  const page = pageSize(n);
  if (alignment <= page) {
    const addr = n.libc.mmap(0, BigInt(len), PROT_READ_WRITE, MAP_SHARED, fd, 0n);
    if (addr === MAP_FAILED || addr === -1) fail(`mmap of ${len} bytes (${name}) failed`);
    return { fd, addr };
  }
  // mmap only promises page alignment, and a device whose logical block is larger than a page
  // (loop devices take 8 KiB and more) needs its O_DIRECT buffers at a multiple of it: reserve
  // enough address space to hold an aligned start, map the memfd over it there, and give the
  // slack on both sides back. (libblkio fails such an allocation with EOVERFLOW when mmap
  // happens to land unaligned, which made it fail at random.)
  const span = len + alignment - page;
  const base = n.libc.mmap(0, BigInt(span), PROT_NONE, MAP_PRIVATE_ANONYMOUS | MAP_NORESERVE, -1, 0n);
  if (base === MAP_FAILED || base === -1) fail(`mmap of ${span} bytes (${name}) failed`);
  const addr = Math.ceil(base / alignment) * alignment;
  const got = n.libc.mmap(addr, BigInt(len), PROT_READ_WRITE, MAP_SHARED | MAP_FIXED, fd, 0n);
  if (got !== addr) {
    const e = errnoError(n.errno(), `mmap of ${len} bytes (${name}) failed`);
    n.libc.munmap(base, BigInt(span));
    closeFd(n, fd);
    throw e;
  }
  if (addr > base) n.libc.munmap(base, BigInt(addr - base));
  const end = addr + len;
  if (base + span > end) n.libc.munmap(end, BigInt(base + span - end));
  return { fd, addr };
}

/**
 * Maps `len` bytes of private anonymous memory (no fd); returns the address. Memory the library
 * maps outlives the thread's heap; the caller unmaps it.
 */
export function mapAnonymous(n: Native, len: number, what: string): number {
  const addr = n.libc.mmap(0, BigInt(len), PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0n);
  if (addr === MAP_FAILED || addr === -1) {
    throw errnoError(n.errno(), `mmap of ${len} bytes (${what}) failed`);
  }
  return addr;
}

interface Allocation {
  native: Native;
  addr: number;
  len: number;
  fd: number;
  /**
   * The ArrayBuffer of the region's `bytes`, taken at alloc: `bytes` is the caller's to touch,
   * and an own `buffer` property on it would make `region.bytes.buffer` name other memory.
   */
  buffer: ArrayBuffer;
}

/** Whether memory of `buffer` is used by requests that have not completed (in flight or queued). */
export type InUse = (buffer: ArrayBufferLike) => boolean;

/**
 * The registries of every instance not destroyed. Memory one instance allocated may be mapped
 * by another (the kernel then holds its pages as a registered buffer, a vhost-user back-end maps
 * it) or used by another's requests: a free or a destroy asks them all first.
 */
const LIVE = new Set<WeakRef<MemoryRegionRegistry>>();

/**
 * The live registries. Held weakly: an instance its program dropped without `destroy()` must
 * not be kept forever by this list (its requests, if any, were the program's to finish).
 */
function* liveRegistries(): Generator<MemoryRegionRegistry> {
  for (const ref of LIVE) {
    const r = ref.deref();
    if (r === undefined) LIVE.delete(ref);
    else yield r;
  }
}

/**
 * Allocations of destroyed instances whose memory another instance still mapped or used then.
 * Released by the first {@link MemoryRegionRegistry} call that finds them unused: unmapping the
 * memory earlier could let the kernel or a back-end reach whatever is mapped there next.
 */
const DEFERRED = new Map<MemoryRegion, Allocation>();

/** Tracks allocated and mapped regions of one instance. */
export class MemoryRegionRegistry {
  readonly #native: Native;
  readonly #inUse: InUse;
  readonly #self = new WeakRef(this);
  readonly #allocated = new Map<MemoryRegion, Allocation>();
  readonly #mapped = new Map<MemoryRegion, { addr: number; len: number; buffer: ArrayBufferLike }>();
  /** Regions this instance freed, so that a second free says so. */
  readonly #freed = new WeakSet<MemoryRegion>();

  /** `inUse`: whether this instance's requests use memory of a buffer. */
  constructor(native: Native, inUse: InUse) {
    this.#native = native;
    this.#inUse = inUse;
    LIVE.add(this.#self);
  }

  /** Allocates `len` bytes from a new memfd (close-on-exec), mapped shared. */
  alloc(len: number, alignment: number): MemoryRegion {
    if (!Number.isSafeInteger(len) || len <= 0 || len % alignment !== 0) {
      throw BlkioError.of(
        "EINVAL",
        `Memory region length must be a positive multiple of mem-region-alignment (${alignment}): received ${
          describe(len)
        }`,
      );
    }
    const n = this.#native;
    sweepDeferred();
    const { fd, addr } = mapMemfd(n, "libblkio-buf", len, alignment);
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = new Uint8Array(n.view(addr, len));
    } catch (cause) {
      // The runtime caps ArrayBuffer sizes (Bun: RangeError "Out of memory" above a few GiB).
      n.libc.munmap(addr, BigInt(len));
      closeFd(n, fd);
      throw BlkioError.of("ENOMEM", `Memory region of ${len} bytes is too large for a JS ArrayBuffer`, {
        cause,
      });
    }
    const buffer = bufferOf(bytes) as ArrayBuffer;
    markOwnMapping(buffer);
    const region: MemoryRegion = Object.freeze({
      bytes,
      len,
      fd,
      fdOffset: 0,
    });
    this.#allocated.set(region, { native: n, addr, len, fd, buffer });
    return region;
  }

  /** Frees a region from {@link alloc}: unmaps it, closes its fd and detaches `bytes`. */
  free(region: MemoryRegion): void {
    const a = this.#allocated.get(region);
    if (!a) {
      if (ArrayBuffer.isView(region)) throw viewForRegion();
      const why = this.#freed.has(region) ? "was already freed" : "was not allocated by this instance";
      throw BlkioError.of("EINVAL", `Memory region ${why}`);
    }
    if (this.#mapped.has(region)) {
      throw BlkioError.of("EBUSY", "Memory region is still mapped: unmap it before freeing it");
    }
    if (mappedAnywhere(a)) {
      // Another region object over the same memory (a subarray of `bytes`, say), or another
      // instance: freed, the memory could be reallocated while still registered there.
      throw BlkioError.of(
        "EBUSY",
        "Memory region's memory is still mapped through another region or by another instance: unmap that first",
      );
    }
    if (usedAnywhere(a.buffer)) {
      throw BlkioError.of("EBUSY", "Memory region is in use by requests in flight");
    }
    this.#allocated.delete(region);
    this.#freed.add(region);
    release(a);
    sweepDeferred();
  }

  /** Whether `[addr, addr + len)` overlaps a region this instance has mapped. */
  overlapsMapped(addr: number, len: number): boolean {
    return this.#overlapping(addr, len) !== null;
  }

  /** The mapping of this instance that `[addr, addr + len)` overlaps, or null. */
  #overlapping(addr: number, len: number): { addr: number; len: number } | null {
    for (const m of this.#mapped.values()) {
      if (addr < m.addr + m.len && m.addr < addr + len) return m;
    }
    return null;
  }

  /** Whether this instance's requests use memory of `buffer`. */
  uses(buffer: ArrayBufferLike): boolean {
    return this.#inUse(buffer);
  }

  /**
   * Validates `region` for mapping and records it (unless `record` is false); returns its
   * address. `alignment` is mem-region-alignment.
   */
  map(region: MemoryRegion, alignment: number, record = true): number {
    if (region === null || typeof region !== "object") {
      throw BlkioError.of("EINVAL", "Memory region must be an object with bytes, len, fd and fdOffset");
    }
    if (ArrayBuffer.isView(region)) throw viewForRegion();
    const bytes = checkBuffer("Memory region bytes", region.bytes);
    if (FD_CLOSED.has(bufferOf(bytes))) {
      // Its fd number may belong to another file by now: a driver that passed it on would have
      // a back-end write device data there (review).
      throw BlkioError.of(
        "EBADF",
        "Memory region belongs to a destroyed instance that left it to requests the device never finished; its fd is closed",
      );
    }
    const len = region.len;
    if (len !== byteLengthOf(bytes)) {
      throw BlkioError.of(
        "EINVAL",
        `Memory region len (${describe(len)}) must equal bytes.byteLength (${byteLengthOf(bytes)})`,
      );
    }
    if (!Number.isInteger(region.fd) || region.fd < -1) {
      throw BlkioError.of(
        "EINVAL",
        `Memory region fd must be an integer >= -1: received ${describe(region.fd)}`,
      );
    }
    if (!Number.isSafeInteger(region.fdOffset) || region.fdOffset < 0) {
      throw BlkioError.of("EINVAL", `Memory region fdOffset must be a non-negative integer`);
    }
    if (len === 0) throw BlkioError.of("EINVAL", "Memory region must not be empty");
    const addr = bufferAddress(this.#native, bytes);
    if (addr % alignment !== 0 || len % alignment !== 0) {
      throw BlkioError.of(
        "EINVAL",
        `Memory region address and length must be multiples of mem-region-alignment (${alignment})`,
      );
    }
    if (this.#mapped.has(region)) throw BlkioError.of("EINVAL", "memory region already mapped");
    const m = this.#overlapping(addr, len);
    if (m !== null) {
      if (addr === m.addr && len === m.len) throw BlkioError.of("EINVAL", "memory region already mapped");
      throw BlkioError.of("EINVAL", "Memory region overlaps a mapped memory region");
    }
    if (record) this.#mapped.set(region, { addr, len, buffer: bufferOf(bytes) });
    return addr;
  }

  /**
   * The region object this instance has `among` its mapped (for unmap) or allocated (for free)
   * ones that `region` stands for: libblkio passes regions by value, so a copy (`{ ...region }`:
   * the same `bytes`, len, fd and fdOffset) names the same region. `region` itself when it is
   * known there or matches none. (Looked up among both at first, unmap(r) after map({ ...r })
   * found r allocated and did nothing: review.)
   */
  known(region: MemoryRegion, among: "mapped" | "allocated"): MemoryRegion {
    if (region === null || typeof region !== "object") return region;
    const known: ReadonlyMap<MemoryRegion, unknown> = among === "mapped" ? this.#mapped : this.#allocated;
    if (known.has(region)) return region;
    try {
      for (const r of known.keys()) {
        if (
          r.bytes === region.bytes && r.len === region.len && r.fd === region.fd &&
          r.fdOffset === region.fdOffset
        ) {
          return r;
        }
      }
    } catch {
      // A getter of the caller's object threw: it is no copy of a region of ours.
    }
    return region;
  }

  /** The ArrayBuffer `region` was mapped with (taken at map time), or null when not mapped. */
  mappedBuffer(region: MemoryRegion): ArrayBufferLike | null {
    return this.#mapped.get(region)?.buffer ?? null;
  }

  /** Whether `region` (this very object) is mapped. */
  isMapped(region: MemoryRegion): boolean {
    return this.#mapped.has(region);
  }

  /** Forgets a mapping; returns false when `region` was not mapped. */
  unmap(region: MemoryRegion): boolean {
    if (!this.#mapped.delete(region)) return false;
    sweepDeferred();
    return true;
  }

  /** The mapped region containing `[addr, addr+len)`, if any. */
  findMapped(addr: number, len: number): MemoryRegion | null {
    for (const [region, m] of this.#mapped) {
      if (addr >= m.addr && addr + len <= m.addr + m.len) return region;
    }
    return null;
  }

  /** Regions currently mapped. */
  mapped(): MemoryRegion[] {
    return [...this.#mapped.keys()];
  }

  /**
   * Unmaps and frees everything (instance destroy; call it after the queues are closed). Memory
   * another instance still maps or uses is freed once it no longer does.
   */
  destroy(): void {
    this.#mapped.clear();
    LIVE.delete(this.#self);
    for (const [region, a] of this.#allocated) {
      // A request the kernel never finished may still write here: leave it mapped for good. The
      // memfd goes: the mapping does not need it, and it cost an fd a destroy for good.
      if (isAbandoned(a.buffer)) {
        closeMemfd(a);
        continue;
      }
      if (mappedAnywhere(a) || usedAnywhere(a.buffer)) DEFERRED.set(region, a);
      else release(a);
    }
    this.#allocated.clear();
    sweepDeferred();
  }
}

/**
 * A Uint8Array passed where the region goes (`mapMemRegion(region.bytes)`, a buffer from it):
 * the messages named its missing `bytes`, or said it was not allocated by this instance.
 */
function viewForRegion(): BlkioError {
  return BlkioError.of(
    "EINVAL",
    "Memory region must be the object allocMemRegion returned ({ bytes, len, fd, fdOffset }), " +
      "not a Uint8Array of its memory: pass the region itself",
  );
}

function mappedAnywhere(a: Allocation): boolean {
  for (const r of liveRegistries()) if (r.overlapsMapped(a.addr, a.len)) return true;
  return false;
}

function usedAnywhere(buffer: ArrayBufferLike): boolean {
  if (isAbandoned(buffer)) return true;
  for (const r of liveRegistries()) if (r.uses(buffer)) return true;
  return false;
}

/**
 * Buffers of abandoned regions whose memfd was closed: the regions still name the fd number,
 * which the next open may reuse, so they can never be mapped again.
 */
const FD_CLOSED = new WeakSet<ArrayBufferLike>();

/** Closes the memfd of abandoned `region` (its mapping stays) and marks it unmappable. */
function closeMemfd(a: Allocation): void {
  FD_CLOSED.add(a.buffer);
  closeFd(a.native, a.fd);
}

/** Releases the deferred allocations nobody maps or uses any more. */
function sweepDeferred(): void {
  if (DEFERRED.size === 0) return;
  for (const [region, a] of DEFERRED) {
    if (isAbandoned(a.buffer)) {
      // Mapped for good, as in destroy(); only the fd goes.
      DEFERRED.delete(region);
      closeMemfd(a);
    } else if (!mappedAnywhere(a) && !usedAnywhere(a.buffer)) {
      DEFERRED.delete(region);
      release(a);
    }
  }
}

/**
 * Detaches the region's `bytes`, unmaps its memory and closes its memfd. A `bytes` someone else
 * already detached was most likely transferred (`buffer.transfer()`, `postMessage` with a
 * transfer list): the engines move such memory, not copy it, so another ArrayBuffer the library
 * cannot see still points at it, and unmapping would leave that buffer on nothing (a segfault on
 * its next access, on both runtimes). That mapping is kept for the life of the process.
 */
function release(a: Allocation): void {
  const n = a.native;
  const ab = a.buffer;
  if ((ab as { detached?: boolean }).detached) {
    closeFd(n, a.fd);
    return;
  }
  // Detach the JS view first, so later access sees an empty buffer instead of unmapped memory.
  ab.transfer(0);
  n.libc.munmap(a.addr, BigInt(a.len));
  closeFd(n, a.fd);
}
