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

  /**
   * Creates an instance of the driver called `driver`, in the created state.
   *
   * @param driver A driver name: `"io_uring"` or `"virtio-blk-vhost-user"` (see `DRIVER_NAMES`).
   * @returns The new instance; set its connection properties (`path`), then {@link connect}.
   * @throws {BlkioError} `ENOENT` for an unknown driver name, `EINVAL` for one that is not a
   * string, `ELIBACC` when liburing could not be loaded or Deno has no FFI permission.
   */
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

  /**
   * Opens the device (the `path` or `fd` property), after which device properties such as
   * `capacity` can be read and queue properties (`num-queues`) set. Idempotent while connected.
   *
   * @throws {BlkioError} `EBUSY` once started; `EINVAL` when neither or both of `path` and `fd`
   * are set, or the path is not a file or block device (the io_uring driver); the errno of the
   * open or of the back-end otherwise (`ENOENT`, `EACCES`, `EROFS`, `ECONNREFUSED`); `EBADF`
   * once destroyed.
   */
  connect(): void {
    const d = this.#live();
    if (this.#state === State.Connected) return;
    if (this.#state === State.Started) throw BlkioError.of("EBUSY", "Cannot connect in started state");
    d.connect();
    this.#state = State.Connected;
  }

  /**
   * Creates the queues (`num-queues` and `num-poll-queues` of them); {@link getQueue} then
   * returns them. Idempotent while started.
   *
   * @throws {BlkioError} `ENODEV` before {@link connect}; `EINVAL` for queue properties the
   * driver or device cannot take (`num-entries` above 32768, poll queues where
   * `supports-poll-queues` is false, more queues than `max-queues`); `EROFS` for a read-only
   * virtio-blk device unless `read-only` is true; `EBADF` once destroyed.
   */
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
   *
   * @throws {BlkioError} `EBUSY` from code that runs inside a `doIo` of one of its queues.
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

  /**
   * Reads a bool property.
   *
   * @param name The property's name, lower case with hyphens (`"read-only"`).
   * @returns Its value.
   * @throws {BlkioError} `ENOENT` for an unknown name; `ENOTTY` for a property of another type
   * (the message names the getter to use); `ENODEV` for a device property before
   * {@link connect}; `EBADF` once destroyed.
   */
  getBool(name: string): boolean {
    return this.#live().properties.get(this.#driver, this.#state, name, "bool");
  }

  /**
   * Reads an int property (a C `int`).
   *
   * @param name The property's name, lower case with hyphens (`"num-queues"`).
   * @returns Its value, an integer from -2^31 to 2^31 - 1.
   * @throws {BlkioError} As {@link getBool}: `ENOENT`, `ENOTTY` (`capacity` is a uint64: the
   * message says to use getUint64), `ENODEV`, `EBADF`.
   */
  getInt(name: string): number {
    return this.#live().properties.get(this.#driver, this.#state, name, "int");
  }

  /**
   * Reads a uint64 property.
   *
   * @param name The property's name, lower case with hyphens (`"capacity"`, in bytes).
   * @returns Its value, from 0 to 2^64 - 1 (`max-mem-regions` is 2^64 - 1 on io_uring).
   * @throws {BlkioError} As {@link getBool}: `ENOENT`, `ENOTTY`, `ENODEV`, `EBADF`.
   */
  getUint64(name: string): bigint {
    return this.#live().properties.get(this.#driver, this.#state, name, "uint64");
  }

  /**
   * Reads any property, whatever its type, as text.
   *
   * @param name The property's name, lower case with hyphens.
   * @returns `true` or `false` for a bool, a decimal number for an int or uint64, the string
   * itself for a str.
   * @throws {BlkioError} `ENOENT` for an unknown name; `ENODEV` for a device property before
   * {@link connect}; `EBADF` once destroyed.
   */
  getStr(name: string): string {
    return this.#live().properties.getStr(this.#driver, this.#state, name);
  }

  /**
   * Sets a bool property. Checked in libblkio's order: name, type, access and state, then the
   * value.
   *
   * @param name The property's name, lower case with hyphens (`"direct"`).
   * @param value The new value.
   * @throws {BlkioError} `ENOENT` for an unknown name; `ENOTTY` for a property of another type
   * (the message names the setter to use); `EACCES` for a read-only property; `ENODEV` for one
   * settable only once connected, before {@link connect}; `EBUSY` for one whose state is past
   * (`path` once connected, `num-queues` once started); `EINVAL` for a value that is not a
   * boolean; `EBADF` once destroyed.
   */
  setBool(name: string, value: boolean): void {
    const d = this.#live();
    d.properties.set(d, this.#state, name, "bool", value, checkBool);
  }

  /**
   * Sets an int property.
   *
   * @param name The property's name, lower case with hyphens (`"num-queues"`).
   * @param value An integer from -2^31 to 2^31 - 1 (a C `int`); the property may take less
   * (`num-entries` must be positive).
   * @throws {BlkioError} As {@link setBool}: `ENOENT`, `ENOTTY`, `EACCES`, `ENODEV`, `EBUSY`,
   * `EBADF`; `EINVAL` for a value out of range or not an integer, or one the property refuses.
   */
  setInt(name: string, value: number): void {
    const d = this.#live();
    d.properties.set(d, this.#state, name, "int", value, checkInt);
  }

  /**
   * Sets a uint64 property.
   *
   * @param name The property's name, lower case with hyphens.
   * @param value From 0 to 2^64 - 1: a bigint, or a number that is a safe integer.
   * @throws {BlkioError} As {@link setBool}: `ENOENT`, `ENOTTY`, `EACCES`, `ENODEV`, `EBUSY`,
   * `EBADF`; `EINVAL` for a value out of range.
   */
  setUint64(name: string, value: bigint | number): void {
    const d = this.#live();
    d.properties.set(d, this.#state, name, "uint64", value, checkUint64);
  }

  /**
   * Sets any property, whatever its type, from text, as command lines do (`blkio_info`'s
   * `name=value`).
   *
   * @param name The property's name, lower case with hyphens.
   * @param value `true` or `false` for a bool, a decimal integer for an int or uint64, any text
   * without NUL characters for a str.
   * @throws {BlkioError} `EINVAL` for text that is not a value of the property's type (checked
   * first, as libblkio parses before it sets); otherwise as {@link setBool}: `ENOENT`, `EACCES`,
   * `ENODEV`, `EBUSY`, `EBADF`.
   */
  setStr(name: string, value: string): void {
    const d = this.#live();
    d.properties.setStr(d, this.#state, name, value);
  }

  /**
   * Lists this driver's properties (libblkio has no such call).
   *
   * @returns One entry per property, sorted by name: its type (which getter and setter take
   * it), whether it is readable and writable in the current state, and the states it can be set
   * in. Fresh objects on every call.
   * @throws {BlkioError} `EBADF` once destroyed.
   */
  properties(): PropertyInfo[] {
    return this.#live().properties.describe(this.#state);
  }

  /**
   * Allocates a memory region (connected or started) at an address that is a multiple of
   * mem-region-alignment (also where that is larger than a page). It is not mapped yet: see
   * {@link mapMemRegion}.
   *
   * @param len Its length in bytes: a non-zero multiple of the `mem-region-alignment` property.
   * @returns The region; its `bytes` are zeroed memory backed by a memfd (`fd`).
   * @throws {BlkioError} `ENODEV` before {@link connect}; `EINVAL` for a length that is not a
   * positive integer multiple of `mem-region-alignment`; `ENOMEM` for one the system or a JS
   * ArrayBuffer cannot hold; `EMFILE` at the fd limit; `EBADF` once destroyed.
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
   *
   * @param region A region this instance allocated, as {@link allocMemRegion} returned it.
   * @throws {BlkioError} `EBUSY` as above; `EINVAL` for a region this instance did not allocate
   * (or its `bytes` instead of the region); `EBADF` once destroyed.
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
   *
   * @param region A region from {@link allocMemRegion}, or one the caller built over its own
   * memory (`fd` -1 unless the driver needs one: `needs-mem-region-fd`).
   * @throws {BlkioError} `EBUSY` before {@link start}; `EINVAL` for a region mapped already,
   * overlapping a mapped one, or whose address or length is not a multiple of
   * `mem-region-alignment`; the back-end's errno where it refuses the memory
   * (virtio-blk-vhost-user); `EBADF` once destroyed.
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
   *
   * @param region The region as it was mapped.
   * @throws {BlkioError} `EBUSY` as above; `EBADF` once destroyed.
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

  /**
   * Gets a regular queue (poll queues have indexes of their own: {@link getPollQueue}).
   *
   * @param index From 0 to `num-queues` - 1 (and the indexes {@link addQueue} returned).
   * @returns The queue, or null before {@link start}, for an index out of range or not an
   * integer, and for a removed queue.
   * @throws {BlkioError} `EBADF` once destroyed.
   */
  getQueue(index: number): Queue | null {
    this.#live();
    return Number.isInteger(index) && index >= 0 ? this.#queues[index] ?? null : null;
  }

  /**
   * Gets a poll queue: one that {@link Queue.doIo} polls for completions instead of sleeping.
   *
   * @param index From 0 to `num-poll-queues` - 1 (and the indexes {@link addPollQueue} returned).
   * @returns The queue, or null as for {@link getQueue}.
   * @throws {BlkioError} `EBADF` once destroyed.
   */
  getPollQueue(index: number): Queue | null {
    this.#live();
    return Number.isInteger(index) && index >= 0 ? this.#pollQueues[index] ?? null : null;
  }

  /**
   * Adds a regular queue (started only), at the lowest free index.
   *
   * @returns The new queue's index, for {@link getQueue} and {@link removeQueue}.
   * @throws {BlkioError} `ENOTSUP` on a driver that cannot add queues (`can-add-queues` is
   * false: virtio-blk-vhost-user); `EBUSY` before {@link start}; the errno of setting up the
   * ring (`ENOMEM`, `EMFILE`); `EBADF` once destroyed.
   */
  addQueue(): number {
    return this.#add(this.#queues, false);
  }

  /**
   * Adds a poll queue (started only), at the lowest free poll-queue index.
   *
   * @returns The new poll queue's index, for {@link getPollQueue} and {@link removePollQueue}.
   * @throws {BlkioError} As {@link addQueue}, and `EINVAL` where poll queues are not supported
   * (`supports-poll-queues` is false).
   */
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
   *
   * @param index The queue's index; the indexes of the other queues do not change.
   * @throws {BlkioError} `ENOENT` when there is no queue at `index`; `EBUSY` from code that runs
   * inside a `doIo` of that queue; `EBADF` once destroyed.
   */
  removeQueue(index: number): void {
    this.#remove(this.#queues, index);
  }

  /**
   * Removes poll queue `index`, as {@link removeQueue} does a regular one.
   *
   * @param index The poll queue's index.
   * @throws {BlkioError} `ENOENT` when there is no poll queue at `index`; `EBUSY` from code that
   * runs inside a `doIo` of that queue; `EBADF` once destroyed.
   */
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
