/**
 * The Blkio instance: one connection to a device through one driver, and its lifecycle.
 *
 * @module
 */
import type { Native } from "../ffi/types.ts";
import { isAbandoned } from "./abandoned.ts";
import { driverFactory } from "./drivers/mod.ts";
import type { Driver } from "./driver.ts";
import { BlkioError, mustBeConnected, mustBeStarted, noConstructor } from "./errors.ts";
import { type MemoryRegion, MemoryRegionRegistry } from "./memory_region.ts";
import { requireNative } from "./native.ts";
import { checkBool, checkInt, checkUint64, describe, type PropertyInfo } from "./properties.ts";
import { closeQueue, newQueue, type Queue, queueBusy, queueUsesBuffer } from "./queue.ts";
import { State, type StateName, stateName, type StateValue } from "./state.ts";

/**
 * EBUSY for a removeQueue or destroy from caller code running inside a doIo of the queue (a
 * setter of an `out` entry): the driver's reap is halfway through the ring it would unmap.
 */
function closeInsideDoIo(what: string): BlkioError {
  return BlkioError.of("EBUSY", `Cannot ${what} from code that runs inside doIo of the queue`);
}

/** The proof that Blkio.create makes the instance, not `new Blkio()` from JavaScript. */
const MADE_BY_CREATE = Symbol("Blkio");

/**
 * For BlockDevice: whether reading the instance's capacity may wait for another party
 * (Driver.capacityMayWait). Set in the class's static block, off the public class.
 */
export let capacityMayWait: (b: Blkio) => boolean;

/**
 * A block device opened through a libblkio driver: create, set connection properties,
 * connect, set queue properties, start, then do I/O on its queues.
 *
 * Thread-safety: an instance and its queues belong to the thread (main thread or Worker) that
 * created them; JS objects cannot be shared between threads, so they are never handed to
 * another one. libblkio's model is one queue per thread: here each Worker creates its own
 * instance on the same path (or opens its own `BlockDevice`) and gets its own queues, so the
 * Workers' requests run in parallel (see `examples/workers.ts` in the source repository).
 * Within a thread, a queue may be used from any callback, but one `doIo` at a time (it is
 * synchronous anyway). Memory of a
 * request in flight must not be transferred, detached or resized; SharedArrayBuffer memory is
 * refused as an I/O buffer.
 *
 * @example Read the capacity of a file
 * ```ts
 * import { Blkio } from "@blkio/blkio";
 * import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
 * import { tmpdir } from "node:os";
 * import { join } from "node:path";
 * const dir = mkdtempSync(join(tmpdir(), "blkio-"));
 * const path = join(dir, "disk.img");
 * writeFileSync(path, new Uint8Array(1 << 20));
 * const b = Blkio.create("io_uring");
 * b.setStr("path", path);
 * b.connect();
 * if (b.getUint64("capacity") !== 1048576n) throw new Error("wrong capacity");
 * b.destroy();
 * rmSync(dir, { recursive: true });
 * ```
 */
export class Blkio {
  readonly #native: Native;
  readonly #driver: Driver;
  #state: StateValue = State.Created;
  #destroyed = false;
  readonly #queues: (Queue | null)[] = [];
  readonly #pollQueues: (Queue | null)[] = [];
  readonly #regions: MemoryRegionRegistry;

  static {
    capacityMayWait = (b) => b.#live().capacityMayWait?.() ?? false;
  }

  private constructor(key: symbol, native: Native, driver: Driver) {
    if (key !== MADE_BY_CREATE) throw noConstructor("Blkio", "Blkio.create(driver)");
    this.#native = native;
    this.#driver = driver;
    this.#regions = new MemoryRegionRegistry(native, (buffer) => this.#inUse(buffer));
  }

  /** Creates an instance of the driver called `driver` (`"io_uring"`); unknown → ENOENT. */
  static create(driver: string): Blkio {
    if (typeof driver !== "string") {
      throw BlkioError.of("EINVAL", `Driver name must be a string: received ${describe(driver)}`);
    }
    const make = driverFactory(driver);
    const native = requireNative();
    return new Blkio(MADE_BY_CREATE, native, make(native));
  }

  #live(): Driver {
    if (this.#destroyed) throw BlkioError.of("EBADF", "The blkio instance has been destroyed");
    return this.#driver;
  }

  /** The driver name. */
  get driver(): string {
    return this.#driver.name;
  }

  /** The lifecycle state. */
  get state(): StateName {
    return stateName(this.#state);
  }

  /** Whether {@link destroy} has been called. */
  get destroyed(): boolean {
    return this.#destroyed;
  }

  /** Opens the device. Idempotent while connected; EBUSY once started. */
  connect(): void {
    const d = this.#live();
    if (this.#state === State.Connected) return;
    if (this.#state === State.Started) throw BlkioError.of("EBUSY", "Cannot connect in started state");
    d.connect();
    this.#state = State.Connected;
  }

  /** Creates the queues. Idempotent while started; ENODEV before connect. */
  start(): void {
    const d = this.#live();
    if (this.#state === State.Started) return;
    if (this.#state < State.Connected) throw mustBeConnected();
    const { queues, pollQueues } = d.start();
    for (const q of queues) this.#queues.push(newQueue(this.#native, q));
    for (const q of pollQueues) this.#pollQueues.push(newQueue(this.#native, q));
    this.#state = State.Started;
  }

  /**
   * Frees everything: queues, memory regions, the device. Idempotent. Requests queued but not
   * yet handed to the kernel by `doIo` are dropped, as in libblkio; requests in the kernel get
   * up to a second to finish, and memory they may still write to is kept for good. On any thread
   * but the process's main one (a Worker, a `deno test` module), io_uring requests into memory
   * the library did not map (plain `Uint8Array`s, regions the caller built) are waited for
   * however long they take: that thread's heap is freed when it ends, and the kernel would then
   * write into memory reused for something else. A region another instance
   * still maps or uses is freed when it no longer does (its unmap or destroy, or the next region
   * call of any instance after its requests completed). EBUSY from code that runs inside a `doIo`
   * of one of its queues (a setter of an `out` entry), as is `removeQueue` of that queue.
   */
  destroy(): void {
    if (this.#destroyed) return;
    for (const list of [this.#queues, this.#pollQueues]) {
      for (const q of list) if (q && queueBusy(q)) throw closeInsideDoIo("destroy the instance");
    }
    this.#destroyed = true;
    this.#driver.beginDestroy?.();
    for (const list of [this.#queues, this.#pollQueues]) {
      for (const q of list) if (q) closeQueue(q, "The blkio instance has been destroyed");
      list.length = 0;
    }
    this.#regions.destroy();
    this.#driver.destroy();
  }

  /** Same as {@link destroy}, for `using`. */
  [Symbol.dispose](): void {
    this.destroy();
  }

  /** Reads a bool property (ENOTTY for another type). */
  getBool(name: string): boolean {
    return this.#live().properties.get(this.#driver, this.#state, name, "bool");
  }

  /** Reads an int property. */
  getInt(name: string): number {
    return this.#live().properties.get(this.#driver, this.#state, name, "int");
  }

  /** Reads a uint64 property. */
  getUint64(name: string): bigint {
    return this.#live().properties.get(this.#driver, this.#state, name, "uint64");
  }

  /** Reads any property as text. */
  getStr(name: string): string {
    return this.#live().properties.getStr(this.#driver, this.#state, name);
  }

  /** Sets a bool property. */
  setBool(name: string, value: boolean): void {
    const d = this.#live();
    d.properties.set(d, this.#state, name, "bool", value, checkBool);
  }

  /** Sets an int property (C int range). */
  setInt(name: string, value: number): void {
    const d = this.#live();
    d.properties.set(d, this.#state, name, "int", value, checkInt);
  }

  /** Sets a uint64 property. */
  setUint64(name: string, value: bigint | number): void {
    const d = this.#live();
    d.properties.set(d, this.#state, name, "uint64", value, checkUint64);
  }

  /** Sets any property from text (`true`/`false`, decimal numbers). */
  setStr(name: string, value: string): void {
    const d = this.#live();
    d.properties.setStr(d, this.#state, name, value);
  }

  /** Every property of this driver, with its type and access in the current state. */
  properties(): PropertyInfo[] {
    return this.#live().properties.describe(this.#state);
  }

  /**
   * Allocates a memory region (connected or started) at an address that is a multiple of
   * mem-region-alignment (also where that is larger than a page); `len` a multiple of it too.
   */
  allocMemRegion(len: number): MemoryRegion {
    const d = this.#live();
    if (this.#state < State.Connected) throw mustBeConnected();
    return this.#regions.alloc(len, d.memRegionAlignment());
  }

  /**
   * Frees a region from {@link allocMemRegion}; its `bytes` become empty. EBUSY while it is
   * mapped, its memory is mapped through another region object or by another instance, or
   * requests of any instance use it: freed memory could be handed out again at the same
   * address while a ring or back-end still holds it.
   */
  freeMemRegion(region: MemoryRegion): void {
    this.#live();
    this.#regions.free(this.#regions.known(region, "allocated"));
  }

  #inUse(buffer: ArrayBufferLike): boolean {
    for (const list of [this.#queues, this.#pollQueues]) {
      for (const q of list) if (q && queueUsesBuffer(q, buffer)) return true;
    }
    return false;
  }

  /**
   * Makes a region usable for I/O (started only: EBUSY before); mapping it twice is EINVAL. As in
   * libblkio, mem-region-alignment is read and the region checked against it first: before
   * connect that is ENODEV where the alignment comes from the device (io_uring), and a
   * misaligned region is EINVAL in any state.
   */
  mapMemRegion(region: MemoryRegion): void {
    const d = this.#live();
    if (this.#state < State.Started) {
      const alignment = this.getUint64("mem-region-alignment");
      this.#regions.map(region, Number(alignment), false);
      throw mustBeStarted();
    }
    const addr = this.#regions.map(region, d.memRegionAlignment());
    try {
      d.mapMemRegion(region, addr);
    } catch (e) {
      this.#regions.unmap(region);
      throw e;
    }
  }

  /**
   * Undoes {@link mapMemRegion}; a region that is not mapped is ignored. EBUSY on a driver that
   * shares the memory with a back-end (virtio-blk-vhost-user) while requests in flight use it:
   * the back-end would write into whatever is mapped at that address next. (io_uring hands the
   * kernel what it prepared first, so there unmapping is always safe.)
   */
  unmapMemRegion(region: MemoryRegion): void {
    const d = this.#live();
    region = this.#regions.known(region, "mapped");
    if (!this.#regions.isMapped(region)) return;
    // The driver first: it may refuse (EBUSY), and the region then stays mapped. The buffer
    // recorded at map time: `region.bytes.buffer` is the caller's to redefine.
    const buffer = this.#regions.mappedBuffer(region)!;
    d.unmapMemRegion(region, this.#inUse(buffer) || isAbandoned(buffer));
    this.#regions.unmap(region);
  }

  /** Queue `index`, or null before start, for a bad index or a removed queue. */
  getQueue(index: number): Queue | null {
    this.#live();
    return Number.isInteger(index) && index >= 0 ? this.#queues[index] ?? null : null;
  }

  /** Poll queue `index`, or null. */
  getPollQueue(index: number): Queue | null {
    this.#live();
    return Number.isInteger(index) && index >= 0 ? this.#pollQueues[index] ?? null : null;
  }

  /** Adds a queue (started only) at the lowest free index, which it returns. */
  addQueue(): number {
    return this.#add(this.#queues, false);
  }

  /** Adds a poll queue (started only); EINVAL when poll queues are not supported. */
  addPollQueue(): number {
    return this.#add(this.#pollQueues, true);
  }

  #add(list: (Queue | null)[], poll: boolean): number {
    const d = this.#live();
    if (!d.canAddQueues) {
      throw BlkioError.of("ENOTSUP", `The ${d.name} driver cannot add queues (can-add-queues is false)`);
    }
    if (this.#state < State.Started) throw mustBeStarted();
    const q = newQueue(this.#native, d.addQueue(poll));
    const free = list.indexOf(null);
    if (free >= 0) {
      list[free] = q;
      return free;
    }
    list.push(q);
    return list.length - 1;
  }

  /**
   * Removes queue `index`; ENOENT when there is none. As with {@link destroy}, requests not yet
   * handed over by `doIo` are dropped, not carried out.
   */
  removeQueue(index: number): void {
    this.#remove(this.#queues, index);
  }

  /** Removes poll queue `index`; ENOENT when there is none. */
  removePollQueue(index: number): void {
    this.#remove(this.#pollQueues, index);
  }

  #remove(list: (Queue | null)[], index: number): void {
    this.#live();
    const q = Number.isInteger(index) && index >= 0 ? list[index] : undefined;
    if (!q) throw BlkioError.of("ENOENT", `no queue with index ${describe(index)}`);
    if (queueBusy(q)) throw closeInsideDoIo("remove the queue");
    list[index] = null;
    while (list.length > 0 && list[list.length - 1] === null) list.pop();
    closeQueue(q, "The queue has been removed");
  }
}
