/**
 * One fuzz run of the Promise API, `BlockDevice`: a random sequence of actions (requests of every
 * kind made without waiting, bursts beyond the ring, aborts at every moment of a request's life,
 * bad arguments, buffers from `allocBuffer` and plain memory, waits of assorted kinds, `close()`
 * with requests in flight, reopening) against one target. Every promise is tracked; each must
 * settle once, as the model allows (`_fuzz_expect.ts`, the rules the synchronous run uses), and
 * none may be pending once `close()` has resolved. The target's expected contents are the same
 * model (`_fuzz_disk.ts`); at the end the whole target is read back through a fresh BlockDevice
 * and through node:fs. The first mismatch throws {@link FuzzFailure}.
 *
 * An aborted request that rejected with its abort reason may still be in the kernel (the library
 * cancels what it can, and keeps the buffers until the kernel lets go). Until `released()` has
 * resolved for its buffers or the device is closed, its range is treated as a write in flight:
 * each byte of an aborted write's range may hold its old value or the write's, later writes over
 * it race it, reads there are not checked, and its buffers are not used again. Once `released()`
 * resolves (at once after the abort, now and then, while the request is most likely in the
 * kernel or back-end still), its buffers are filled with a mark byte and kept out of use for a
 * few steps: a read landing late changes the mark, and a write sending its buffer late lands the
 * mark, which the model does not allow.
 *
 * The requests' completions arrive on the event loop, so a seed repeats the same choices but not
 * always the same interleaving: a failure that depends on timing may take a few replays.
 *
 * @module
 */
import { Blkio, BlkioError, BlockDevice, type BlockDeviceOpenOptions } from "../mod.ts";
import { bufferAddress } from "../src/buffers.ts";
import { requireNative } from "../src/native.ts";
import { BufferPool } from "./_fuzz_buffers.ts";
import { DiskModel } from "./_fuzz_disk.ts";
import { applyOutcome } from "./_fuzz_effect.ts";
import { FUA, NO_FALLBACK, NO_UNMAP, type TargetFacts, targetFacts } from "./_fuzz_expect.ts";
import { WriteHistory } from "./_fuzz_history.ts";
import { probeWrongRead } from "./_fuzz_probe.ts";
import { checkStop, errorMismatch, FuzzFailure, FuzzStopped, type ReplayLog } from "./_fuzz_log.ts";
import { BIG_REQUEST, pickRange } from "./_fuzz_range.ts";
import {
  expectOutcomes,
  fillBuffers,
  pickBuffers,
  pickCount,
  pickOp,
  piecesOf,
  scrambleIovecs,
} from "./_fuzz_shape.ts";
import { FuzzRequest, InFlight, type Op, type Outcome } from "./_fuzz_request.ts";
import { type Rng, stepRng } from "./_fuzz_rng.ts";
import type { RunOptions } from "./_fuzz_run.ts";
import { pauseBackEnd, readableSpans, readThroughFs } from "./_fuzz_target.ts";

/** What a BlockDevice run did. */
export interface BlockDeviceStats {
  steps: number;
  /** Request promises made (bad arguments not counted). */
  requests: number;
  /** Promises settled: all of them by the end. */
  settled: number;
  byOp: Record<Op, number>;
  /** Requests that rejected with their abort reason. */
  aborts: number;
  /** Requests whose signal was aborted after they had completed: they settled as usual. */
  lateAborts: number;
  /** Aborted reads and writes whose buffers released() gave back before close. */
  released: number;
  /** Requests that rejected with a BlkioError the model allowed. */
  failedRequests: number;
  /**
   * Writes that failed where they may have landed in part: out of room (ENOSPC on `tmpfs-full`),
   * across a bad range (EIO on `fuse-eio`), or zeroings that failed at a chunk after the chunks
   * above it (`vhost-eio`).
   */
  failedWrites: number;
  /** Requests that completed EIO as the model allows (bad ranges; past a vhost-user export's end). */
  eio: number;
  /** Calls with bad arguments (each rejected or threw as documented). */
  badInputs: number;
  opens: number;
  /** close() calls, and the requests they found in flight. */
  closes: number;
  closedInFlight: number;
  /** The most promises pending at once. */
  maxPending: number;
  allocBuffers: number;
  /** Bytes of successful reads, and bytes compared with what the model expected. */
  bytesRead: number;
  bytesCompared: number;
  /** Times the back-end was stopped (SIGSTOP, then SIGCONT; `pauses`). */
  pauses: number;
  /** Requests not made for want of a free buffer. */
  noBuffer: number;
  /** Flushes and FUA writes seen to sync the back-end (FuzzTarget.syncs). */
  syncsChecked: number;
}

/** When a request's signal is aborted. */
type AbortWhen =
  | "before" // already aborted when the request is made: it must reject at once, and do nothing
  | "same turn" // right after the call, before the library could submit it
  | "microtask"
  | "immediate"
  | "timer"
  | "timeout signal" // AbortSignal.timeout
  | "shared" // a controller many requests share, aborted by a later step
  | "never";

/** A request promise and what became of it. */
interface Tracked {
  r: FuzzRequest;
  /** Its buffers (a read's or a write's). */
  bufs: Uint8Array[];
  signal: AbortSignal | null;
  when: AbortWhen | null;
  /** Settles after the settlement was checked. */
  done: Promise<void>;
  /** How many times the promise settled. */
  settled: number;
}

/** An aborted request's buffers, given back by released() and filled with `mark` until `until`. */
interface Marked {
  t: Tracked;
  mark: number;
  /** The step after which they go back to the pool. */
  until: number;
}

/** The options a device was opened with. */
interface DeviceConfig {
  queues: number;
  /** num-entries (io_uring) or queue-size (virtio-blk-vhost-user). */
  numEntries: number;
  readOnly: boolean;
}

const KiB = 1024;
/** Past this many pending promises, the run waits for them all. */
const MAX_PENDING = 600;
/** How long a request may take before the run calls it lost. */
const LOST_MS = 30_000;
/** allocBuffer bytes one device may be given (its memory stays until close). */
const ALLOC_BUDGET = 12 * 1024 * KiB;
/** A write's outcome on a read-only device, and BlockDevice's reason for it (open's option). */
const EBADF_RET = -9;
const READ_ONLY_REASON = /^the device was opened with readOnly: true, so it takes only reads and flushes$/;
const OP_WORDS: Record<Op, string> = {
  read: "Read",
  write: "Write",
  readv: "Readv",
  writev: "Writev",
  writeZeroes: "Write zeroes",
  discard: "Discard",
  flush: "Flush",
};

/** Runs `opts.steps` steps of the BlockDevice API; returns the figures or throws FuzzFailure. */
export function runBlockDeviceFuzz(opts: RunOptions): Promise<BlockDeviceStats> {
  return new BlockDeviceRun(opts).run();
}

/** Resolves after one macrotask. */
function nextMacrotask(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Whether `err` is what a request rejects with when `signal` aborts it. */
function isAbortRejection(err: unknown, signal: AbortSignal): boolean {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return err === reason;
  return err instanceof Error && err.name === "AbortError";
}

function describeError(e: unknown): string {
  return e instanceof BlkioError ? `BlkioError ${e.code}: ${e.message}` : String(e);
}

class BlockDeviceRun {
  readonly #t: RunOptions["target"];
  readonly #seed: number;
  readonly #steps: number;
  readonly #deadline: number;
  readonly #stop: AbortSignal | undefined;
  readonly #log: ReplayLog;
  readonly #disk: DiskModel;
  readonly #inflight = new InFlight();
  readonly #pool = new BufferPool();
  readonly #history = new WriteHistory();
  readonly #stats: BlockDeviceStats;
  /** SIGSTOP the vhost-user back-end now and then (RunOptions.pauses). */
  readonly #pauses: boolean;
  #rng: Rng;
  #step = 0;
  #nextId = 1;

  #dev: BlockDevice | null = null;
  #cfg: DeviceConfig = { queues: 1, numEntries: 128, readOnly: false };
  /** request-alignment of the open device. */
  #alignment = 1;
  /** The device's capacity when it was opened (-1 while opening): see capacityFixedAtOpen. */
  #capacityAtOpen = -1;
  /** allocBuffer bytes given to the open device. */
  #allocated = 0;
  /** The last device closed, for calls that must fail with EBADF, and one of its buffers. */
  #closed: { dev: BlockDevice; closing: Promise<void>; buffer: Uint8Array | null } | null = null;
  /** virtio-blk-vhost-user: max-segments of the export. */
  #maxSegments = 0;
  #maxWriteZeroes = 0;

  /** Promises not settled yet. */
  readonly #pending = new Set<Tracked>();
  /** Requests aborted before they completed: they may be in the kernel until close. */
  #aborted: Tracked[] = [];
  /**
   * Aborted requests released() gave back: their buffers hold a mark byte and stay out of the
   * pool for some steps, so that a read landing in them late shows (a write sending them late
   * lands the mark, which the model does not allow).
   */
  #marked: Marked[] = [];
  /** A controller several requests share, aborted by a later step. */
  #shared: AbortController | null = null;
  /** The first mismatch found while a promise settled (they settle between steps). */
  #failure: string | null = null;

  constructor(opts: RunOptions) {
    this.#t = opts.target;
    this.#seed = opts.seed;
    this.#steps = opts.steps;
    this.#deadline = opts.deadline;
    this.#stop = opts.stop;
    this.#log = opts.log;
    const t = opts.target;
    // A file may grow: room for 256 KiB past its end, which requests never go beyond.
    const limit = t.isBlockDevice ? t.size : t.size + 256 * KiB;
    this.#disk = new DiskModel(opts.initial, limit, !t.isBlockDevice);
    this.#rng = stepRng(opts.seed, 0);
    for (let i = 0; i < 8; i++) this.#pool.addPlain();
    // Requests larger than one bio (256 pages) come now and then, up to BIG_REQUEST.
    this.#pool.addPlain(BIG_REQUEST + 64 * KiB);
    const byOp = { read: 0, write: 0, readv: 0, writev: 0, writeZeroes: 0, discard: 0, flush: 0 };
    this.#stats = {
      steps: 0,
      requests: 0,
      settled: 0,
      byOp,
      aborts: 0,
      lateAborts: 0,
      released: 0,
      failedRequests: 0,
      failedWrites: 0,
      eio: 0,
      badInputs: 0,
      opens: 0,
      closes: 0,
      closedInFlight: 0,
      maxPending: 0,
      allocBuffers: 0,
      bytesRead: 0,
      bytesCompared: 0,
      pauses: 0,
      noBuffer: 0,
      syncsChecked: 0,
    };
    this.#pauses = (opts.pauses ?? false) && t.pid !== null;
  }

  get #vhost(): boolean {
    return this.#t.driver === "virtio-blk-vhost-user";
  }

  async run(): Promise<BlockDeviceStats> {
    try {
      if (this.#vhost) [this.#maxSegments, this.#maxWriteZeroes] = this.#probeLimits();
      for (this.#step = 0; this.#step < this.#steps; this.#step++) {
        if (this.#deadline > 0 && performance.now() > this.#deadline) break;
        checkStop(this.#stop);
        this.#rng = stepRng(this.#seed, this.#step);
        this.#log.step = this.#step;
        this.#pool.step = this.#step;
        await this.#act();
        this.#stats.steps++;
        this.#checkMarked(false);
        this.#check();
      }
      this.#log.step = this.#step;
      await this.#finish();
      this.#check();
      this.#stats.bytesCompared = this.#disk.compared;
    } catch (e) {
      if (e instanceof FuzzFailure || e instanceof FuzzStopped) throw e;
      throw new FuzzFailure(`unexpected exception: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    } finally {
      if (this.#dev !== null) {
        // A failed or stopped run still lets its requests end before the target goes away (a
        // wait that ends, not the 30 s timer, which kept the process alive that long after).
        await this.#within(this.#dev.close(), LOST_MS, () => "close() at the end").catch(() => {});
      }
      // Abort timers (at most a few ms) must not outlive the run.
      await sleep(10);
    }
    return this.#stats;
  }

  /**
   * virtio-blk-vhost-user's max-segments and max-write-zeroes-len (BlockDevice shows neither):
   * one connect.
   */
  #probeLimits(): [number, number] {
    const b = Blkio.create(this.#t.driver);
    try {
      b.setStr("path", this.#t.path);
      b.connect();
      return [b.getInt("max-segments"), Number(b.getUint64("max-write-zeroes-len"))];
    } finally {
      b.destroy();
    }
  }

  // -------------------------------------------------------------------------------------------
  // Checks.

  #where(): string {
    const c = this.#cfg;
    return this.#dev === null
      ? "no device open"
      : `device open with ${c.queues} queues, ${this.#vhost ? "queue-size" : "num-entries"} ` +
        `${c.numEntries}${c.readOnly ? ", read-only" : ""}; ${this.#pending.size} pending`;
  }

  #fail(what: string): never {
    throw new FuzzFailure(`${what}\n  (${this.#where()})`);
  }

  /** Records a mismatch found while a promise settled; the step loop throws it. */
  #record(what: string): void {
    this.#log.add(`MISMATCH: ${what}`);
    this.#failure ??= `${what}\n  (${this.#where()})`;
  }

  #check(): void {
    if (this.#failure !== null) throw new FuzzFailure(this.#failure);
  }

  /** `p`, or a failure naming `what` after `ms`. */
  async #within<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new FuzzFailure(`${what()} after ${ms / 1000} s`)), ms);
    });
    try {
      return await Promise.race([p, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  #pendingList(): string {
    return [...this.#pending].slice(0, 8).map((t) => t.r.describe).join("; ");
  }

  /** Awaits `call()`'s promise, which must reject with BlkioError `code`; the call must not throw. */
  async #rejects(what: string, call: () => Promise<unknown>, code: string, msg?: RegExp): Promise<void> {
    let p: Promise<unknown>;
    try {
      p = call();
    } catch (e) {
      this.#fail(`${what} threw ${describeError(e)} instead of returning a rejected promise`);
    }
    if (!(p instanceof Promise)) this.#fail(`${what} returned ${String(p)}, not a promise`);
    const got = await this.#within(p.then(() => null, (e: unknown) => e ?? "undefined"), LOST_MS, () => what);
    if (got === null) this.#fail(`${what} resolved; expected a rejection with ${code}`);
    this.#expectError(what, got, code, msg);
  }

  #throws(what: string, call: () => unknown, code: string, msg?: RegExp): void {
    let got: unknown = null;
    try {
      call();
    } catch (e) {
      got = e ?? "undefined";
    }
    if (got === null) this.#fail(`${what} returned; expected BlkioError ${code}`);
    this.#expectError(what, got, code, msg);
  }

  #expectError(what: string, got: unknown, code: string, msg?: RegExp): void {
    const why = errorMismatch(what, got, code, msg);
    if (why !== null) this.#fail(why);
    this.#stats.badInputs++;
    this.#log.add(`${what} -> ${code} (as expected)`);
  }

  // -------------------------------------------------------------------------------------------
  // The step.

  #act(): Promise<void> | void {
    const rng = this.#rng;
    if (this.#dev === null) {
      return rng.weighted<() => Promise<void> | void>([
        [20, () => this.#open()],
        [2, () => this.#badOpen()],
        [this.#closed === null ? 0 : 2, () => this.#closedCalls()],
      ])();
    }
    if (this.#pending.size > MAX_PENDING) return this.#drain("pending cap");
    return rng.weighted<() => Promise<void> | void>([
      [40, () => void this.#io(rng.fork())],
      [4, () => this.#burst()],
      [6, () => this.#abortable()],
      [1, () => this.#abortShared()],
      [3, () => this.#released()],
      [25, () => this.#wait()],
      [4, () => this.#badCall()],
      [2, () => this.#allocBuffer()],
      [0.5, () => this.#badAllocBuffer()],
      [1, () => this.#capacity()],
      [1.2, () => this.#close("close action")],
      [this.#pauses ? 1 : 0, () => this.#pauseBackEnd()],
      [0.3, async () => {
        await this.#drain("before an idle close");
        await this.#close("idle close");
      }],
    ])();
  }

  /**
   * SIGSTOP of the vhost-user back-end for 20-400 ms: the requests it has must settle late, with
   * the right data, never with EIO, and nothing may wait on the event loop meanwhile.
   */
  #pauseBackEnd(): void {
    const failed = pauseBackEnd(this.#t.pid!, this.#rng, this.#log);
    if (failed !== null) this.#fail(failed);
    this.#stats.pauses++;
  }

  // -------------------------------------------------------------------------------------------
  // Opening and closing.

  async #open(): Promise<void> {
    const rng = this.#rng, t = this.#t;
    const cfg: DeviceConfig = {
      queues: this.#vhost ? rng.range(1, 2) : rng.weighted([[4, 1], [3, 2], [2, 3], [1, 4]]),
      numEntries: rng.pick(this.#vhost ? [256, 2, 4, 8, 8, 16, 16, 64] : [128, 1, 2, 4, 4, 8, 8, 16, 32]),
      readOnly: rng.chance(0.08),
    };
    const opts: BlockDeviceOpenOptions = {};
    if (this.#vhost) opts.driver = t.driver;
    else if (rng.chance(0.3)) opts.driver = "io_uring";
    if (!this.#vhost && (t.direct || rng.chance(0.5))) opts.direct = t.direct;
    if (cfg.readOnly || rng.chance(0.2)) opts.readOnly = cfg.readOnly;
    if (cfg.queues > 1 || rng.chance(0.5)) opts.queues = cfg.queues;
    const defaultEntries = this.#vhost ? 256 : 128;
    if (cfg.numEntries !== defaultEntries || rng.chance(0.5)) opts.numEntries = cfg.numEntries;
    const what = `BlockDevice.open(${JSON.stringify(opts)})`;
    let dev: BlockDevice;
    try {
      dev = await this.#within(BlockDevice.open(t.path, opts), LOST_MS, () => `${what} did not settle`);
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      this.#fail(`${what} rejected: ${describeError(e)}`);
    }
    this.#dev = dev;
    this.#cfg = cfg;
    this.#allocated = 0;
    this.#stats.opens++;
    this.#alignment = dev.requestAlignment;
    if (dev.readOnly !== cfg.readOnly) this.#fail(`readOnly ${dev.readOnly}, opened with ${cfg.readOnly}`);
    if (this.#vhost) {
      if (this.#alignment !== 512) this.#fail(`requestAlignment ${this.#alignment} on vhost-user`);
    } else if (!t.direct) {
      if (this.#alignment !== 1) this.#fail(`requestAlignment ${this.#alignment} without O_DIRECT`);
      if (dev.bufAlignment !== 1) this.#fail(`bufAlignment ${dev.bufAlignment} without O_DIRECT`);
    } else if (this.#alignment < 512 || (this.#alignment & (this.#alignment - 1)) !== 0) {
      this.#fail(`requestAlignment ${this.#alignment} with O_DIRECT`);
    }
    this.#capacityAtOpen = -1;
    this.#capacityCheck("capacity after open");
    this.#capacityAtOpen = Number(dev.capacity) - this.#t.base;
    this.#log.add(`${what}: alignment ${this.#alignment}`);
    // Buffers of assorted sizes, some larger than half a MiB (a region of their own).
    for (const len of [64 * KiB, 256 * KiB, rng.range(513, 1100) * KiB]) this.#allocBuffer(len);
    if (rng.chance(0.3)) this.#allocBuffer(BIG_REQUEST + 64 * KiB);
  }

  /** Options open() must refuse, with the documented code. */
  async #badOpen(): Promise<void> {
    const t = this.#t, rng = this.#rng;
    const base: Record<string, unknown> = this.#vhost ? { driver: t.driver } : { direct: t.direct };
    type BadOpen = [string, string, Record<string, unknown> | null, string, RegExp?];
    const cases: BadOpen[] = [
      ["misspelt readonly", t.path, { ...base, readonly: true }, "EINVAL", /Unknown option "readonly"/],
      ["queues 0", t.path, { ...base, queues: 0 }, "EINVAL", /queues must be an integer/],
      ["queues 1.5", t.path, { ...base, queues: 1.5 }, "EINVAL", /queues must be an integer/],
      ["numEntries 0", t.path, { ...base, numEntries: 0 }, "EINVAL", /numEntries must be an integer/],
      ["options null", t.path, null, "EINVAL", /Options must be an object/],
      ["driver bogus", t.path, { driver: "bogus" }, "ENOENT"],
      ["a path that does not exist", `${t.path}.missing`, base, "ENOENT"],
    ];
    if (this.#vhost) {
      cases.push([
        "direct on vhost-user",
        t.path,
        { driver: t.driver, direct: true },
        "EINVAL",
        /no "direct" option/,
      ]);
    }
    const c = rng.pick(cases);
    await this.#rejects(
      `BlockDevice.open with ${c[0]}`,
      () => BlockDevice.open(c[1], c[2] as BlockDeviceOpenOptions),
      c[3],
      c[4],
    );
  }

  /**
   * close(): with the requests in flight it finds (they all settle before it resolves, and none
   * is pending afterwards), requests made meanwhile rejecting with EBADF.
   */
  async #close(why: string): Promise<void> {
    const dev = this.#dev!, rng = this.#rng;
    const inFlight = this.#pending.size;
    this.#log.add(`close() (${why}) with ${inFlight} pending, ${this.#aborted.length} aborted in flight`);
    // allocBuffer's buffers are gone once it resolves: the last look at those marked.
    this.#checkMarked(false);
    const closing = rng.chance(0.2) ? dev[Symbol.asyncDispose]() : dev.close();
    if (dev.close() !== closing) this.#fail("a second close() returned another promise");
    if (rng.chance(0.5)) {
      // Made while it closes: refused at once, never queued.
      await this.#rejects("read while closing", () => dev.read(0, new Uint8Array(512)), "EBADF", /closed/);
      this.#throws("allocBuffer while closing", () => dev.allocBuffer(4096), "EBADF", /closed/);
    }
    try {
      await this.#within(
        closing,
        LOST_MS,
        () => `close() did not resolve: lost completions? ${this.#pendingList()}`,
      );
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      this.#fail(`close() rejected: ${describeError(e)}`);
    }
    this.#stats.closes++;
    this.#stats.closedInFlight += inFlight;
    // Settled before close() resolved: their reactions ran before this one.
    if (this.#pending.size > 0) {
      this.#fail(
        `${this.#pending.size} promises still pending after close() resolved: ${this.#pendingList()}`,
      );
    }
    this.#checkMarked(true);
    this.#check();
    // What was aborted is over now: its range keeps what the model allows, its buffers are free.
    for (const t of this.#aborted) {
      this.#inflight.remove(t.r);
      t.r.release();
    }
    this.#aborted = [];
    this.#shared = null;
    let buffer: Uint8Array | null = null;
    for (const e of [...this.#pool.entries]) {
      if (!e.inRegion || e.region !== null) continue;
      buffer = e.bytes;
      this.#pool.remove(e);
    }
    if (buffer !== null && buffer.length !== 0) {
      this.#fail(`a buffer of allocBuffer has ${buffer.length} bytes after close`);
    }
    this.#dev = null;
    this.#closed = { dev, closing, buffer };
    this.#log.add(`close() resolved; ${inFlight} requests settled`);
  }

  /** A closed device: requests reject with EBADF, allocBuffer throws it, close() is the same promise. */
  async #closedCalls(): Promise<void> {
    const { dev, closing } = this.#closed!, rng = this.#rng;
    const buf = new Uint8Array(4096);
    const call = rng.pick<[string, () => Promise<unknown>]>([
      ["read", () => dev.read(0, buf)],
      ["write", () => dev.write(0, buf, { fua: true })],
      ["readv", () => dev.readv(0, [buf])],
      ["writev", () => dev.writev(0, [buf])],
      ["writeZeroes", () => dev.writeZeroes(0, 4096)],
      ["discard", () => dev.discard(0, 4096)],
      ["flush", () => dev.flush()],
    ]);
    await this.#rejects(`${call[0]} on a closed device`, call[1], "EBADF", /closed/);
    if (rng.chance(0.3)) this.#throws("allocBuffer on a closed device", () => dev.allocBuffer(512), "EBADF");
    if (dev.close() !== closing) this.#fail("close() of a closed device returned another promise");
    if (typeof dev.capacity !== "bigint") this.#fail("capacity of a closed device is no bigint");
  }

  // -------------------------------------------------------------------------------------------
  // Buffers.

  /** An allocBuffer of `len` (random when not given), checked, and added to the pool. */
  #allocBuffer(want?: number): void {
    const dev = this.#dev!, rng = this.#rng;
    const len = want ?? rng.pick([1, 17, 512, 4096, 4096, 65536, 300 * KiB, 600 * KiB, 1024 * KiB + 4096]);
    if (this.#allocated + len > ALLOC_BUDGET) return;
    let buf: Uint8Array;
    try {
      buf = dev.allocBuffer(len);
    } catch (e) {
      this.#fail(`allocBuffer(${len}) threw ${describeError(e)}`);
    }
    this.#allocated += len;
    this.#stats.allocBuffers++;
    if (buf.length !== len) this.#fail(`allocBuffer(${len}) has ${buf.length} bytes`);
    const addr = bufferAddress(requireNative(), buf);
    // As documented: a page or more page-aligned (virtio-blk-vhost-user's were not), else 64.
    const align = Math.max(len >= 4096 ? 4096 : 64, dev.bufAlignment);
    if (addr % align !== 0) this.#fail(`allocBuffer(${len}) at ${addr}, not a multiple of ${align}`);
    for (let i = 0; i < len; i += 509) if (buf[i] !== 0) this.#fail(`allocBuffer(${len}) not zeroed at ${i}`);
    if (len >= 4096) this.#pool.addDeviceBuffer(buf);
    this.#log.add(`allocBuffer(${len}) at ${addr}`);
  }

  #badAllocBuffer(): void {
    const dev = this.#dev!;
    const [len, code] = this.#rng.pick<[unknown, string]>([
      [0, "EINVAL"],
      [-4096, "EINVAL"],
      [1.5, "EINVAL"],
      ["4096", "EINVAL"],
      [NaN, "EINVAL"],
      [2 ** 53, "EINVAL"],
      // Rounded up to its alignment it passes 2^53.
      [Number.MAX_SAFE_INTEGER, "ENOMEM"],
    ]);
    this.#throws(`allocBuffer(${String(len)})`, () => dev.allocBuffer(len as number), code);
  }

  /**
   * Buffers for a read or write of `len` bytes in `count` pieces (an empty one now and then), or
   * null when the pool has no room now.
   */
  #buffers(rng: Rng, r: FuzzRequest, len: number, count: number): Uint8Array[] | null {
    const pool = this.#pool, vhost = this.#vhost;
    return pickBuffers(rng, pool, r, len, count, this.#t.direct, (rng, n, align, skew) => {
      // Mostly allocBuffer memory; plain Uint8Arrays too (virtio-blk-vhost-user refuses them).
      const inRegionOnly = rng.chance(vhost ? 0.95 : 0.5);
      return pool.take(rng.fork(), r, n, align, skew, !inRegionOnly) ??
        pool.take(rng.fork(), r, n, align, skew);
    });
  }

  // -------------------------------------------------------------------------------------------
  // Requests.

  #facts(pieces: readonly { addr: number }[]): TargetFacts {
    const t = this.#t;
    let vhost: TargetFacts["vhost"] = null;
    if (this.#vhost) {
      const where = pieces.map((p) => this.#pool.entryAt(p.addr));
      const buffers = where.some((e) => e === undefined || !e.inRegion) ? "plain" : "mapped";
      vhost = {
        queueSize: this.#cfg.numEntries,
        maxSegments: this.#maxSegments,
        maxWriteZeroes: this.#maxWriteZeroes,
        buffers,
      };
    }
    return targetFacts(t, { readOnly: this.#cfg.readOnly, alignment: this.#alignment, poll: false, vhost });
  }

  /**
   * Request options for `flags`, with `signal`. Unset flags are now and then spelt out as false,
   * and so, as undefined or false, are flags the request does not take (one options object
   * shared by every request).
   */
  #options(
    rng: Rng,
    op: Op,
    flags: number,
    signal: AbortSignal | null,
  ): Record<string, unknown> | null | undefined {
    const o: Record<string, unknown> = {};
    const names: [string, number][] = op === "write" || op === "writev"
      ? [["fua", FUA]]
      : op === "writeZeroes"
      ? [["fua", FUA], ["noUnmap", NO_UNMAP], ["noFallback", NO_FALLBACK]]
      : [];
    for (const [name, bit] of names) {
      if ((flags & bit) !== 0) o[name] = true;
      else if (rng.chance(0.1)) o[name] = false;
    }
    for (const name of ["fua", "noUnmap", "noFallback"]) {
      if (!names.some(([n]) => n === name) && rng.chance(0.05)) {
        o[name] = rng.chance(0.5) ? false : undefined;
      }
    }
    if (signal !== null) o.signal = signal;
    if (Object.keys(o).length > 0) return o;
    return rng.weighted<Record<string, unknown> | null | undefined>([[8, undefined], [1, {}], [1, null]]);
  }

  /**
   * Makes one random request (of `opArg`, or a random kind) with `signal`, and tracks its
   * promise; null when no buffer was free.
   */
  #io(
    rng: Rng,
    opArg?: Op,
    signal: AbortSignal | null = null,
    when: AbortWhen | null = null,
  ): Tracked | null {
    const dev = this.#dev!, t = this.#t;
    const op: Op = opArg ?? pickOp(rng);
    const range = op === "flush" ? { start: 0, len: 0 } : pickRange(rng, op, {
      size: t.size,
      isBlockDevice: t.isBlockDevice,
      limit: this.#disk.limit,
      big: true,
      inflight: this.#inflight,
    });
    const flags = op === "write" || op === "writev"
      ? (rng.chance(0.15) ? FUA : 0)
      : op === "writeZeroes"
      ? rng.int(8)
      : 0;
    const isIo = op === "read" || op === "write" || op === "readv" || op === "writev";
    const vectored = op === "readv" || op === "writev";
    const tiny = !t.direct && !this.#vhost;
    const { count, start, len } = pickCount(rng, op, range.start, range.len, tiny, this.#disk.limit);
    const id = this.#nextId++;
    const r = new FuzzRequest(id, op, start, len, flags, this.#step, "dev");
    let bufs: Uint8Array[] = [];
    if (isIo) {
      const got = this.#buffers(rng, r, len, count);
      if (got === null) {
        r.release();
        this.#stats.noBuffer++;
        this.#log.add(`${op} skipped: no free buffer of ${len} bytes`);
        return null;
      }
      bufs = got;
      fillBuffers(rng, r, bufs, this.#history);
    }
    const pieces = piecesOf(bufs);
    const reaches = expectOutcomes(r, this.#facts(pieces), pieces, this.#disk.limit);
    const opts = this.#options(rng, op, flags, signal);
    // The target's base is added to the model's offsets (not to those past 2^53, which must stay
    // there).
    const at = start >= 2 ** 53 ? start : t.base + start;
    const off = rng.chance(0.2) ? BigInt(at) : at;
    const iovs = vectored
      ? `(${bufs.length <= 8 ? bufs.map((p) => p.length).join("+") : `${bufs.length} iov`})`
      : "";
    const where = pieces.some((p) => !this.#pool.entryAt(p.addr)?.inRegion) ? " plain" : "";
    r.describe = `#${id} ${op}${iovs}${where} [${start}, +${len}) flags ${flags}` +
      `${when !== null ? ` abort ${when}` : ""}${reaches ? "" : " (fails early)"}`;
    const syncs = op === "flush" || ((flags & FUA) !== 0 && len > 0 && r.writes);
    if (t.syncs !== null && syncs) r.syncMark = t.syncs();
    let p: Promise<void>;
    try {
      switch (op) {
        case "read":
          p = dev.read(off, bufs[0], opts as never);
          break;
        case "write":
          p = dev.write(off, bufs[0], opts as never);
          break;
        case "readv":
          p = dev.readv(off, bufs, opts as never);
          break;
        case "writev":
          p = dev.writev(off, bufs, opts as never);
          break;
        case "writeZeroes":
          p = dev.writeZeroes(off, rng.chance(0.2) ? BigInt(len) : len, opts as never);
          break;
        case "discard":
          p = dev.discard(off, len, opts as never);
          break;
        case "flush":
          p = dev.flush(opts as never);
          break;
      }
    } catch (e) {
      this.#fail(`${r.describe} threw ${describeError(e)} instead of returning a promise`);
    }
    const own = bufs.slice();
    if (vectored) r.describe += scrambleIovecs(rng, bufs);
    const tr: Tracked = { r, bufs: own, signal, when, done: Promise.resolve(), settled: 0 };
    tr.done = p.then(() => this.#onSettle(tr, true, undefined), (e: unknown) => this.#onSettle(tr, false, e));
    // An already aborted signal refuses the request before it is queued: it reaches nothing.
    if (when !== "before") this.#inflight.add(r);
    this.#pending.add(tr);
    this.#stats.maxPending = Math.max(this.#stats.maxPending, this.#pending.size);
    this.#stats.requests++;
    this.#stats.byOp[op]++;
    this.#log.add(`make ${r.describe}`);
    return tr;
  }

  /** Many requests in one turn, more than the ring holds (of every queue, with small numEntries). */
  #burst(): void {
    const rng = this.#rng;
    const n = Math.min(300, rng.range(this.#cfg.numEntries, 3 * this.#cfg.numEntries) + rng.int(64));
    this.#log.add(`burst of ${n}`);
    for (let i = 0; i < n; i++) this.#io(rng.fork());
  }

  /**
   * One to four requests sharing a signal, aborted at a random moment of their lives; now and
   * then released() on them as soon as they have settled, while the kernel or back-end most
   * likely has them still.
   */
  async #abortable(): Promise<void> {
    const rng = this.#rng;
    const when = rng.weighted<AbortWhen>([
      [2, "before"],
      [3, "same turn"],
      [2, "microtask"],
      [3, "immediate"],
      [4, "timer"],
      [2, "timeout signal"],
      [3, "shared"],
      [1, "never"],
    ]);
    // An Error reason comes back as it is; anything else as a DOMException AbortError.
    const reason = rng.pick<unknown>([new Error(`fuzz abort at step ${this.#step}`), undefined, "stop"]);
    let ac: AbortController | null = new AbortController();
    let signal = ac.signal;
    if (when === "shared") {
      this.#shared ??= new AbortController();
      ac = null;
      signal = this.#shared.signal;
    } else if (when === "timeout signal") {
      ac = null;
      signal = AbortSignal.timeout(rng.range(0, 3));
    }
    const abort = () => ac!.abort(reason);
    if (when === "before") abort();
    const n = rng.range(1, 4);
    const made: Tracked[] = [];
    for (let i = 0; i < n; i++) {
      const t = this.#io(rng.fork(), undefined, signal, when);
      if (t !== null) made.push(t);
    }
    // Added after the library's listener (made with the first request), so it runs after the
    // rejections: what settled by then was too late to abort.
    if (when !== "before") signal.addEventListener("abort", () => this.#countLate(made), { once: true });
    switch (when) {
      case "same turn":
        abort();
        break;
      case "microtask":
        queueMicrotask(abort);
        break;
      case "immediate":
        setImmediate(abort);
        break;
      case "timer":
        setTimeout(abort, rng.range(0, 3));
        break;
    }
    if ((when === "immediate" || when === "timer") && made.length > 0 && rng.chance(0.5)) {
      await this.#within(
        Promise.all(made.map((t) => t.done)),
        LOST_MS,
        () => `aborted requests did not settle`,
      );
      for (const t of made) await this.#released(t);
    }
  }

  /** Counts the requests of a signal just aborted that had settled before it was. */
  #countLate(made: readonly Tracked[]): void {
    for (const t of made) if (t.settled > 0 && !this.#aborted.includes(t)) this.#stats.lateAborts++;
  }

  /**
   * released() on the buffers of an aborted read or write: once it resolves, the request is over,
   * so its range no longer races later writes and its buffers go back to the pool. Released too
   * early, the request could still land over a later write, or fill a buffer reused since: the
   * final read-back would differ from the model.
   */
  async #released(which?: Tracked): Promise<void> {
    // The latest aborted: the most likely to be in the kernel or back-end still.
    const i = which === undefined
      ? this.#aborted.findLastIndex((t) => t.bufs.length > 0)
      : this.#aborted.indexOf(which);
    if (i < 0 || this.#aborted[i].bufs.length === 0) return;
    const t = this.#aborted[i], dev = this.#dev!;
    this.#aborted.splice(i, 1);
    const what = `released() for aborted ${t.r.describe}`;
    try {
      await this.#within(
        Promise.all(t.bufs.map((b) => dev.released(b))),
        LOST_MS,
        () => `${what} did not settle`,
      );
    } catch (e) {
      if (e instanceof FuzzFailure) throw e;
      this.#fail(`${what} rejected: ${describeError(e)}`);
    }
    this.#inflight.remove(t.r);
    // Marked at once, in the turn released() resolved in: the request must be over by now.
    const mark = 0x5a ^ (this.#step & 0xff);
    for (const b of t.bufs) b.fill(mark);
    this.#marked.push({ t, mark, until: this.#step + this.#rng.range(2, 24) });
    this.#stats.released++;
    this.#log.add(`${what} resolved; its buffers marked 0x${mark.toString(16)}`);
  }

  /**
   * Checks that the buffers released() gave back still hold their mark, and gives those whose
   * time is up (`all`: every one) back to the pool. Buffers of a closed device are gone (length 0).
   */
  #checkMarked(all: boolean): void {
    const keep: Marked[] = [];
    for (const m of this.#marked) {
      for (const b of m.t.bufs) {
        // A buffer of a closed device is detached: length 0 (findIndex would throw).
        let at = 0;
        while (at < b.length && b[at] === m.mark) at++;
        if (at < b.length) {
          this.#record(
            `the buffer of aborted ${m.t.r.describe} changed after released() resolved: byte ${at} is ` +
              `0x${b[at].toString(16)}, not the mark 0x${m.mark.toString(16)}`,
          );
        }
      }
      if (all || this.#step >= m.until) {
        const memory = m.t.r.buffersIntact(false);
        if (memory !== null) this.#record(`aborted ${memory}`);
        m.t.r.release();
      } else keep.push(m);
    }
    this.#marked = keep;
  }

  #abortShared(): void {
    const ac = this.#shared;
    if (ac === null) return;
    this.#shared = null;
    ac.abort(this.#rng.chance(0.5) ? new Error(`fuzz shared abort at step ${this.#step}`) : undefined);
    this.#log.add("shared controller aborted");
  }

  // -------------------------------------------------------------------------------------------
  // Settlement.

  #onSettle(t: Tracked, ok: boolean, err: unknown): void {
    try {
      if (++t.settled > 1) return this.#record(`${t.r.describe} settled a second time`);
      this.#pending.delete(t);
      this.#stats.settled++;
      this.#settle(t, ok, err);
    } catch (e) {
      this.#record(`checking ${t.r.describe} threw ${e instanceof Error ? e.stack : e}`);
    }
  }

  #settle(t: Tracked, ok: boolean, err: unknown): void {
    const r = t.r, d = this.#disk, growable = !this.#t.isBlockDevice;
    if (!ok && t.signal !== null && t.signal.aborted && isAbortRejection(err, t.signal)) {
      this.#stats.aborts++;
      this.#history.settle(r.id, `aborted, settled at step ${this.#step}`);
      this.#log.add(`  aborted ${r.describe}`);
      if (t.when === "before") return r.release();
      // It may be in the kernel until close: its write may land any time before then, in
      // whole or in part, but with its own bytes (a write that lands with the bytes of a buffer
      // reused since released() resolved is caught here).
      this.#aborted.push(t);
      if (r.writes && r.span !== null) {
        if (r.op === "discard") d.apply("discard", r.start, r.len, null, r.id, r.conflicts);
        else d.apply("either", r.start, r.len, r.op === "writeZeroes" ? null : r.data, r.id, r.conflicts);
        d.grow(r.span[1], false);
      }
      return;
    }
    // Completions are only taken in a macrotask: a request aborted before one ran (in its own
    // turn, or from a microtask) rejects with the reason, unless it was refused when made.
    const early = r.outcomes.every((o) => o.early === true);
    const strict = t.when === "same turn" || t.when === "microtask";
    if (t.when === "before" || (strict && !early)) {
      return this.#record(
        `${r.describe}, aborted ${
          t.when === "before" ? "before it was made" : `(${t.when}) before a macrotask`
        }, ` +
          `${ok ? "resolved" : `rejected with ${describeError(err)}`} instead of rejecting with its reason`,
      );
    }
    this.#inflight.remove(r);
    const allowed = r.outcomes.map((o) => o.ret).join(", ");
    let outcome: Outcome | undefined;
    if (ok) {
      outcome = r.outcomes.find((o) => o.ret === 0);
      if (outcome === undefined) return this.#record(`${r.describe} resolved; the model allows ${allowed}`);
    } else {
      const why = this.#rejection(r, err);
      if (typeof why === "string") return this.#record(`${r.describe} ${why}; the model allows ${allowed}`);
      outcome = why;
      this.#stats.failedRequests++;
    }
    this.#history.settle(r.id, `settled with ${outcome.ret} at step ${this.#step}`);
    if (ok && r.syncMark >= 0) {
      if (this.#t.syncs!() <= r.syncMark) {
        return this.#record(
          `${r.describe} resolved, but the back-end was asked for no sync since it was made ` +
            `(${r.op === "flush" ? "a flush not issued" : "FUA dropped"}?)`,
        );
      }
      this.#stats.syncsChecked++;
    }
    const why = applyOutcome(d, r, outcome.effect, growable, outcome.part);
    if (why !== null) {
      return this.#record(
        `${r.describe} read wrong data: ${why}` +
          this.#history.explain(d, r.start, r.dest ?? [], r.destLens, r.conflicts) +
          probeWrongRead(this.#t, why),
      );
    }
    if (outcome.effect === "check") this.#stats.bytesRead += r.len;
    else if (outcome.effect === "either" || outcome.part !== undefined) this.#stats.failedWrites++;
    if (outcome.ret === -5) this.#stats.eio++;
    const memory = r.buffersIntact();
    if (memory !== null) return this.#record(memory);
    r.release();
    this.#log.add(`  ${ok ? "resolved" : `rejected ${(err as BlkioError).code}`} ${r.describe}`);
  }

  /**
   * The outcome a rejection stands for, or why it is wrong: a BlkioError whose errno the model
   * allows, whose message names the request (`Write at offset 4096 failed: EINVAL (...)`) and
   * carries the libblkio message the outcome expects. A request refused before it was queued
   * (an offset of 2^53 or more) says only what was wrong.
   */
  #rejection(r: FuzzRequest, err: unknown): Outcome | string {
    if (!(err instanceof BlkioError)) return `rejected with ${String(err)}, not a BlkioError`;
    const outcome = r.outcomes.find((o) => o.ret === -err.errno);
    if (outcome === undefined) return `rejected with ${err.code} (${err.message})`;
    const head = `${
      r.op === "flush" ? "Flush" : `${OP_WORDS[r.op]} at offset ${this.#t.base + r.start}`
    } failed: ${err.code}`;
    let inner: string;
    if (err.message.startsWith(head)) {
      // After the queue's message, a buffer refused says what to use instead (requestError).
      const m = /^ \(([\s\S]*)\)(?:; allocBuffer\(\) returns buffers this device accepts)?$/.exec(
        err.message.slice(head.length),
      );
      inner = m === null ? "" : m[1];
    } else if (outcome.early === true) {
      inner = err.message.slice(err.message.indexOf(": ") + 2);
    } else {
      return `rejected with "${err.message}", which does not begin "${head}"`;
    }
    // A write on a device opened readOnly gives BlockDevice's reason, in terms of that option.
    const msg = outcome.ret === EBADF_RET && this.#cfg.readOnly ? READ_ONLY_REASON : outcome.msg;
    if (msg instanceof RegExp && !msg.test(inner)) {
      return `rejected with ${err.code}: "${err.message}" !~ ${msg}`;
    }
    return outcome;
  }

  // -------------------------------------------------------------------------------------------
  // Waiting.

  /** Lets the event loop run: one macrotask, a timer, one request or all of them. */
  async #wait(): Promise<void> {
    const rng = this.#rng;
    const how = rng.weighted([[4, "immediate"], [3, "timer"], [3, "one"], [2, "any"], [1, "all"]] as const);
    if (how === "immediate") return nextMacrotask();
    if (how === "timer") return sleep(rng.range(0, 2));
    if (how === "all") return this.#drain("wait for all");
    const list = [...this.#pending];
    if (list.length === 0) return nextMacrotask();
    const p = how === "one" ? rng.pick(list).done : Promise.race(list.map((t) => t.done));
    await this.#within(p, LOST_MS, () => `no request settled: lost completions? ${this.#pendingList()}`);
  }

  /** Waits until every promise has settled. */
  async #drain(why: string): Promise<void> {
    this.#log.add(`wait for all ${this.#pending.size} (${why})`);
    await this.#within(
      Promise.all([...this.#pending].map((t) => t.done)),
      LOST_MS,
      () => `requests did not settle: lost completions? ${this.#pendingList()}`,
    );
  }

  // -------------------------------------------------------------------------------------------
  // Bad arguments, capacity.

  /** Arguments the API refuses: each call returns a promise that rejects with EINVAL. */
  async #badCall(): Promise<void> {
    const dev = this.#dev!, rng = this.#rng;
    const buf = new Uint8Array(512);
    const detached = new Uint8Array(new ArrayBuffer(512));
    (detached.buffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer();
    const shared = new Uint8Array(new SharedArrayBuffer(512));
    const c = rng.pick<[string, () => Promise<unknown>, RegExp?]>([
      ["read at -1", () => dev.read(-1, buf), /offset must be a non-negative integer/],
      ["read at 1.5", () => dev.read(1.5, buf), /offset/],
      ['read at "0"', () => dev.read("0" as never, buf), /offset/],
      ["read at 2^64", () => dev.read(1n << 64n, buf), /below 2\^64/],
      ["write of an Array", () => dev.write(0, [1, 2, 3] as never), /Uint8Array/],
      ["read into a DataView", () => dev.read(0, new DataView(new ArrayBuffer(8)) as never), /Uint8Array/],
      ["write of a detached buffer", () => dev.write(0, detached), /detached/],
      ["write of SharedArrayBuffer memory", () => dev.write(0, shared), /SharedArrayBuffer/],
      ["readv of a Uint8Array", () => dev.readv(0, buf as never), /array/],
      ["writev with a string iovec", () => dev.writev(0, [buf, "x" as never])],
      ["write with { Fua: true }", () => dev.write(0, buf, { Fua: true } as never), /Unknown option "Fua"/],
      ["read with fua", () => dev.read(0, buf, { fua: true } as never), /Option fua is invalid for read/],
      ['write with fua "yes"', () => dev.write(0, buf, { fua: "yes" } as never), /must be a boolean/],
      ["write with options 5", () => dev.write(0, buf, 5 as never), /Options must be an object/],
      ["write with options []", () => dev.write(0, buf, [] as never), /Options must be an object/],
      ["discard with noUnmap", () => dev.discard(0, 512, { noUnmap: true } as never), /invalid for discard/],
      ["writeZeroes of NaN bytes", () => dev.writeZeroes(0, NaN), /len/],
      ["writeZeroes of -512 bytes", () => dev.writeZeroes(0, -512), /len/],
      [
        "read with signal {}",
        () => dev.read(0, buf, { signal: {} as never }),
        /signal must be an AbortSignal/,
      ],
      ["flush with fua", () => dev.flush({ fua: true } as never), /Option fua is invalid for flush/],
    ]);
    await this.#rejects(c[0], c[1], "EINVAL", c[2]);
  }

  /**
   * Checks capacity against the model when no write is in flight (a file's may grow). Where it
   * stays what it was at open (a FUSE file), it must be that.
   */
  #capacityCheck(what: string): void {
    // The model's size counts from the target's base.
    const cap = Number(this.#dev!.capacity) - this.#t.base;
    if (this.#t.capacityFixedAtOpen && this.#capacityAtOpen >= 0) {
      if (cap !== this.#capacityAtOpen) this.#fail(`${what} ${cap}, ${this.#capacityAtOpen} at open`);
      return this.#log.add(`${what} ${cap} (as at open)`);
    }
    if (this.#inflight.anyWrites()) return this.#log.add(`${what} ${cap} (writes in flight: not checked)`);
    const d = this.#disk;
    if (!d.sizeAllows(cap)) this.#fail(`${what} ${cap}, the model allows [${d.sizeLo}, ${d.sizeHi}]`);
    d.settleSize(cap);
    this.#log.add(`${what} ${cap}`);
  }

  #capacity(): void {
    this.#capacityCheck("capacity");
  }

  // -------------------------------------------------------------------------------------------
  // The end: close with whatever is in flight, then read the whole target back through a fresh
  // BlockDevice and through node:fs.

  async #finish(): Promise<void> {
    if (this.#dev !== null) await this.#close("end of run");
    const t = this.#t, d = this.#disk;
    const len = t.isBlockDevice ? t.size : d.limit;
    const opts: BlockDeviceOpenOptions = this.#vhost ? { driver: t.driver } : { direct: t.direct };
    let dev: BlockDevice;
    try {
      dev = await BlockDevice.open(t.path, opts);
    } catch (e) {
      this.#fail(`final open: ${describeError(e)}`);
    }
    try {
      const chunk = 64 * KiB;
      const bufs = [
        dev.allocBuffer(chunk),
        dev.allocBuffer(chunk),
        dev.allocBuffer(chunk),
        dev.allocBuffer(chunk),
      ];
      const spans = readableSpans(t, len, chunk);
      for (let i = 0; i < spans.length; i += bufs.length) {
        const parts = spans.slice(i, i + bufs.length).map(([at, n], k) => ({
          at,
          buf: bufs[k].subarray(0, n),
        }));
        const at = parts[0].at;
        try {
          await this.#within(
            Promise.all(parts.map((p) => dev.read(t.base + p.at, p.buf))),
            LOST_MS,
            () => `final read at ${at} did not settle`,
          );
        } catch (e) {
          if (e instanceof FuzzFailure) throw e;
          this.#fail(`final read at ${at}: ${describeError(e)}`);
        }
        for (const p of parts) {
          const why = d.check(p.at, [p.buf], []);
          if (why !== null) this.#fail(`final read through a fresh BlockDevice: ${why}`);
        }
      }
      if (!t.isBlockDevice && !d.sizeAllows(Number(dev.capacity) - t.base)) {
        this.#fail(`capacity at the end ${dev.capacity}, the model allows [${d.sizeLo}, ${d.sizeHi}]`);
      }
    } finally {
      await dev.close();
    }
    const why = d.check(0, [readThroughFs(t.image, len, t.base)], []);
    if (why !== null) this.#fail(`final read through node:fs: ${why}`);
    this.#log.add(`end: ${len} bytes verified through a fresh BlockDevice and node:fs`);
  }
}
