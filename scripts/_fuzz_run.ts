/**
 * One fuzz run: a random sequence of API actions against one target, each result checked
 * against the model (lifecycle state, properties, memory regions, queues, the requests in
 * flight and the target's contents). The first mismatch throws {@link FuzzFailure}.
 *
 * @module
 */
import { Blkio, BlkioError, type Completion, newCompletion, type Queue } from "../mod.ts";
import { requireNative } from "../src/native.ts";
import { BufferPool, type PoolEntry } from "./_fuzz_buffers.ts";
import { DiskModel, type Interval } from "./_fuzz_disk.ts";
import { applyOutcome } from "./_fuzz_effect.ts";
import {
  FUA,
  NO_FALLBACK,
  NO_UNMAP,
  type TargetFacts,
  targetFacts,
  type VhostFacts,
} from "./_fuzz_expect.ts";
import { WriteHistory } from "./_fuzz_history.ts";
import { probeWrongRead } from "./_fuzz_probe.ts";
import { checkStop, errorMismatch, FuzzFailure, FuzzStopped, type ReplayLog } from "./_fuzz_log.ts";
import {
  propertyRows,
  type PropRow,
  sampleValue,
  type State,
  STATE_ORDER,
  typedGet,
  typedSet,
} from "./_fuzz_props.ts";
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
import { FuzzRequest, InFlight, type Op, type Outcome, type SharedGroup } from "./_fuzz_request.ts";
import { type Rng, stepRng } from "./_fuzz_rng.ts";
import { type FuzzTarget, pauseBackEnd, readableSpans, readThroughFs } from "./_fuzz_target.ts";

/** What a run is asked to do. */
export interface RunOptions {
  target: FuzzTarget;
  /** The target's contents when it was made. */
  initial: Uint8Array;
  seed: number;
  steps: number;
  /** Stop early at this `performance.now()` (0: no limit). */
  deadline: number;
  log: ReplayLog;
  /** SIGSTOP the target's back-end now and then, for up to 400 ms (vhost-user). */
  pauses?: boolean;
  /** Once aborted, the run ends after its current step with FuzzStopped. */
  stop?: AbortSignal;
}

/** What a run did. */
export interface RunStats {
  steps: number;
  requests: number;
  completions: number;
  byOp: Record<Op, number>;
  doIo: number;
  /** doIo calls that ended with ETIME (short timeouts) or EINTR (interruptible). */
  timedOut: number;
  interrupted: number;
  instances: number;
  cancels: number;
  fdWaits: number;
  /** Bytes of successful reads. */
  bytesRead: number;
  /** Bytes reads were compared with what the model expected (the rest it did not know). */
  bytesCompared: number;
  /** Requests not made for want of a free buffer. */
  noBuffer: number;
  /** Requests with a result other than 0. */
  failedRequests: number;
  /**
   * Writes that failed where they may have landed in part: out of room (ENOSPC on `tmpfs-full`),
   * across a bad range (EIO on `fuse-eio`), or zeroings that failed at a chunk after the chunks
   * above it (`vhost-eio`).
   */
  failedWrites: number;
  /** Requests that completed EIO as the model allows (bad ranges; past a vhost-user export's end). */
  eio: number;
  /** Times the back-end was stopped (SIGSTOP, then SIGCONT). */
  pauses: number;
  /** Reads of a file at 4 GiB and more past its end, all zeroes. */
  farReads: number;
  /** Flushes and FUA writes seen to sync the back-end (FuzzTarget.syncs). */
  syncsChecked: number;
  /** Requests that shared their userData with others of their queue, and their groups checked. */
  shared: number;
  sharedGroups: number;
  /** cancel() calls of a shared userData (each must take the oldest). */
  sharedCancels: number;
  /**
   * Requests whose userData was an odd value (ODD_SHARED_USER_DATA, ODD_USER_DATA), and cancel()
   * calls that had to find nothing: of NaN (`===` matches no request) or of an object's copy.
   */
  oddUserData: number;
  missCancels: number;
}

/** The fuzzer's view of one queue. */
interface QueueModel {
  key: string;
  poll: boolean;
  index: number;
  q: Queue;
  /**
   * Requests queued and not yet settled, by userData; those that share theirs (`groups`) by
   * themselves. Some of a group's may have been delivered already (`delivered`).
   */
  outstanding: Map<unknown, FuzzRequest>;
  /** The requests that share a userData, by that value. */
  groups: Map<unknown, SharedGroup>;
  /** Completions delivered for groups that have not all come back: outstanding no more. */
  delivered: number;
  /** The completion fd once taken. */
  fd: number | null;
  fdEnabled: boolean;
  /** An `out` array kept across doIo calls (its Completion objects are reused). */
  out: Completion[];
}

interface Config {
  path: boolean;
  readOnly: boolean;
  sqpoll: boolean;
  numQueues: number;
  numPollQueues: number;
  numEntries: number;
}

/**
 * Odd userData values (any JS value is one, README) that several requests of a queue may carry:
 * each must come back as given (`Object.is`: -0 as -0, NaN as NaN). cancel() compares with `===`,
 * so 0 and -0 are one value to it (a group of their own), NaN is none (cancel(NaN) finds no
 * request), and a bigint made anew matches.
 */
const ODD_SHARED_USER_DATA: readonly unknown[] = [
  NaN,
  0,
  -0,
  Infinity,
  -Infinity,
  2 ** 64,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  0.1,
  2n ** 64n,
  -1n,
  "",
  false,
];

/**
 * userData values several requests of a queue carry at once (a caller that passes none shares
 * undefined): none is a value a request gets of its own.
 */
const SHARED_USER_DATA: readonly unknown[] = [
  undefined,
  null,
  "shared",
  -1,
  { shared: true },
  Symbol("shared"),
  ...ODD_SHARED_USER_DATA,
];

/**
 * Odd userData values of one request each (`id` is the request's, from 1): non-integers, numbers
 * past 2^53 and near the largest, bigints past 2^64 and below zero, and objects of unusual kinds.
 * None equals another's or a shared value.
 */
const ODD_USER_DATA: readonly ((id: number) => unknown)[] = [
  (id) => id + 0.5,
  (id) => -id - 0.25,
  (id) => 2 ** 60 + id * 256,
  (id) => id * 2 ** 1000,
  (id) => (1n << 64n) + BigInt(id),
  (id) => -BigInt(id) - 1n,
  (id) => Object.freeze({ id }),
  (id) => [id],
  (id) => Object.assign(() => id, { id }),
  (id) => Object.assign(Object.create(null), { id }),
  (id) => new Proxy({ id }, {}),
];

/**
 * A value `===` to `v`, made anew where it can be: a bigint from its digits, either zero for a
 * zero. cancel() compares with `===`, so it must find the same requests with it.
 */
function twin(v: unknown, rng: Rng): unknown {
  if (typeof v === "bigint") return BigInt(v.toString());
  if (v === 0) return rng.pick([0, -0]);
  return v;
}

/** Requests of `m` whose completion has not been delivered. */
function pending(m: QueueModel): number {
  return m.outstanding.size - m.delivered;
}

/** A timeout no healthy wait comes near: expiring means a completion was lost. */
const LONG_TIMEOUT_NS = 10_000_000_000n;
/** The most requests kept outstanding before the fuzzer drains. */
const MAX_OUTSTANDING = 256;
const MAX_REGIONS = 8;
const MAX_QUEUES = 4;
const KiB = 1024;
/** Targets this large get requests of up to BIG_REQUEST bytes too. */
const BIG_TARGET = 4096 * KiB;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/**
 * How often a run lets the event loop have a turn (ms): the steps are synchronous, and a signal's
 * handler runs only there.
 */
const TURN_MS = 50;

/** Runs `opts.steps` steps; resolves to the figures, or rejects with FuzzFailure (or FuzzStopped). */
export function runFuzz(opts: RunOptions): Promise<RunStats> {
  return new FuzzRun(opts).run();
}

class FuzzRun {
  readonly #t: FuzzTarget;
  readonly #seed: number;
  readonly #steps: number;
  readonly #deadline: number;
  readonly #log: ReplayLog;
  readonly #pauses: boolean;
  readonly #stop: AbortSignal | undefined;
  readonly #disk: DiskModel;
  readonly #inflight = new InFlight();
  readonly #pool = new BufferPool();
  readonly #stats: RunStats;
  #rng: Rng;
  #step = 0;
  #nextId = 1;

  /** Recent writes, to say whose bytes a wrong read found. */
  readonly #history = new WriteHistory();

  #b: Blkio | null = null;
  #state: State = "none";
  /** During a burst whose requests get no shared userData. */
  #ownUserData = false;
  #cfg: Config = FuzzRun.#freshConfig();
  #supportsPoll = false;
  /** request-alignment of the instance (1 without O_DIRECT). */
  #alignment = 1;
  /** virtio-blk-vhost-user: max-segments as connect found it. */
  #maxSegments = 0;
  #maxWriteZeroes = 0;
  readonly #queues = new Map<string, QueueModel>();
  /** Queues of removed queues and destroyed instances, for calls that must fail with EBADF. */
  #deadQueues: { q: Queue; why: RegExp }[] = [];
  #deadInstance: Blkio | null = null;

  constructor(opts: RunOptions) {
    this.#t = opts.target;
    this.#seed = opts.seed;
    this.#steps = opts.steps;
    this.#deadline = opts.deadline;
    this.#log = opts.log;
    this.#pauses = (opts.pauses ?? false) && opts.target.pid !== null;
    this.#stop = opts.stop;
    const t = opts.target;
    // A file may grow: room for 256 KiB past its end, which requests never go beyond.
    const limit = t.isBlockDevice ? t.size : t.size + 256 * KiB;
    this.#disk = new DiskModel(opts.initial, limit, !t.isBlockDevice);
    this.#rng = stepRng(opts.seed, 0);
    for (let i = 0; i < 8; i++) this.#pool.addPlain();
    // Room for the requests larger than one bio (256 pages) a large target gets now and then.
    if (t.size >= BIG_TARGET) { for (let i = 0; i < 2; i++) this.#pool.addPlain(BIG_REQUEST + 64 * KiB); }
    const byOp = { read: 0, write: 0, readv: 0, writev: 0, writeZeroes: 0, discard: 0, flush: 0 };
    this.#stats = {
      steps: 0,
      requests: 0,
      completions: 0,
      byOp,
      doIo: 0,
      timedOut: 0,
      interrupted: 0,
      instances: 0,
      cancels: 0,
      fdWaits: 0,
      bytesRead: 0,
      bytesCompared: 0,
      noBuffer: 0,
      failedRequests: 0,
      failedWrites: 0,
      eio: 0,
      pauses: 0,
      syncsChecked: 0,
      farReads: 0,
      shared: 0,
      sharedGroups: 0,
      sharedCancels: 0,
      oddUserData: 0,
      missCancels: 0,
    };
  }

  static #freshConfig(): Config {
    return { path: false, readOnly: false, sqpoll: false, numQueues: 1, numPollQueues: 0, numEntries: 128 };
  }

  async run(): Promise<RunStats> {
    try {
      let turn = performance.now();
      for (this.#step = 0; this.#step < this.#steps; this.#step++) {
        if (this.#deadline > 0 && performance.now() > this.#deadline) break;
        if (performance.now() - turn > TURN_MS) {
          await new Promise((resolve) => setTimeout(resolve, 0));
          turn = performance.now();
        }
        checkStop(this.#stop);
        this.#rng = stepRng(this.#seed, this.#step);
        this.#log.step = this.#step;
        this.#pool.step = this.#step;
        this.#act();
        this.#stats.steps++;
      }
      this.#log.step = this.#step;
      this.#finish();
      this.#stats.bytesCompared = this.#disk.compared;
    } catch (e) {
      if (e instanceof FuzzFailure || e instanceof FuzzStopped) throw e;
      // Anything else thrown (a TypeError out of the library, say) is a failure of its own.
      throw new FuzzFailure(`unexpected exception: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    } finally {
      try {
        this.#b?.destroy();
      } catch {
        // the failure being reported matters more
      }
    }
    return this.#stats;
  }

  // -------------------------------------------------------------------------------------------
  // Checks.

  #fail(what: string): never {
    // The instance as it is configured: its start is often far back in the log.
    const c = this.#cfg, queues = [...this.#queues.keys()].join(" ");
    const instance = this.#state === "none"
      ? "no instance"
      : `instance ${this.#state}, num-entries ${c.numEntries}, ` +
        `queues [${queues}]${c.sqpoll ? ", sqpoll" : ""}${c.readOnly ? ", read-only" : ""}`;
    throw new FuzzFailure(`${what}\n  (${instance})`);
  }

  /** Runs `fn`, which must throw BlkioError `code` (message matching `msg`). */
  #throws(what: string, fn: () => unknown, code: string, msg?: RegExp): void {
    let caught: unknown = undefined, returned: unknown = undefined;
    try {
      returned = fn();
    } catch (e) {
      caught = e;
    }
    const why = errorMismatch(what, caught ?? `a return of ${String(returned)}`, code, msg);
    if (why !== null) this.#fail(why);
    this.#log.add(`${what} -> ${code} (as expected)`);
  }

  /** Runs `fn`, which must not throw. */
  #ok<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      this.#fail(`${what} threw ${e instanceof BlkioError ? `${e.code}: ${e.message}` : e}`);
    }
  }

  #expectEqual(what: string, got: unknown, want: unknown): void {
    if (got !== want) this.#fail(`${what}: got ${String(got)}, expected ${String(want)}`);
  }

  // -------------------------------------------------------------------------------------------
  // The step: one action, chosen by state.

  #act(): void {
    const rng = this.#rng;
    switch (this.#state) {
      case "none":
        return rng.weighted<() => void>([[20, () => this.#create()], [1, () => this.#createBad()]])();
      case "created":
        return rng.weighted<() => void>([
          [this.#cfg.path ? 2 : 30, () => this.#configure()],
          [6, () => this.#property()],
          [1, () => this.#introspect()],
          [4, () => this.#wrongState()],
          [this.#cfg.path ? 25 : 2, () => this.#connect()],
          [1, () => this.#destroy()],
          [1, () => this.#allocRegion()],
          [1, () => this.#deadCall()],
        ])();
      case "connected":
        return rng.weighted<() => void>([
          [8, () => this.#queueConfig()],
          [5, () => this.#property()],
          [1, () => this.#introspect()],
          [3, () => this.#wrongState()],
          [4, () => this.#allocRegion()],
          [1, () => this.#freeRegion()],
          [20, () => this.#start()],
          [1, () => this.#connect()],
          [1, () => this.#destroy()],
        ])();
      case "started": {
        if (this.#outstanding() > MAX_OUTSTANDING) return this.#drain("outstanding cap");
        if (this.#liveQueues().length === 0) {
          // virtio-blk-vhost-user cannot add queues: an instance without any is done with.
          return this.#vhost ? this.#destroy() : this.#addQueue(false);
        }
        return rng.weighted<() => void>([
          [40, () => this.#io()],
          [3, () => this.#burst()],
          [1.5, () => this.#sharedBurst()],
          [2, () => this.#badCall()],
          [30, () => this.#doIo()],
          [3, () => this.#cancel()],
          [3, () => this.#completionFd()],
          [1.5, () => this.#drain("drain action")],
          [2, () => this.#allocRegion()],
          [2, () => this.#mapRegion()],
          [2, () => this.#unmapRegion()],
          [2, () => this.#freeRegion()],
          [1, () => this.#addQueue(false)],
          [1, () => this.#removeQueue(false)],
          [0.4, () => this.#addQueue(true)],
          [0.4, () => this.#removeQueue(true)],
          [1, () => this.#getQueue()],
          [2, () => this.#property()],
          [0.3, () => this.#introspect()],
          [1, () => this.#wrongState()],
          [0.3, () => this.#connect()],
          [0.3, () => this.#start()],
          [0.6, () => this.#destroy()],
          [0.5, () => this.#deadCall()],
          [0.3, () => this.#capacity()],
          [this.#pauses ? 1 : 0, () => this.#pauseBackEnd()],
        ])();
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Lifecycle.

  #create(): void {
    const driver = this.#t.driver;
    this.#b = this.#ok("Blkio.create", () => Blkio.create(driver));
    this.#expectEqual("state after create", this.#b.state, "created");
    this.#expectEqual("driver", this.#b.driver, driver);
    this.#state = "created";
    this.#cfg = FuzzRun.#freshConfig();
    // virtio-blk-vhost-user's queue-size defaults to 256.
    if (this.#vhost) this.#cfg.numEntries = 256;
    this.#stats.instances++;
    this.#log.add("create");
  }

  #createBad(): void {
    const name = this.#rng.pick(["", "io_uring ", "IO_URING", "bogus", "toString"]);
    this.#throws(
      `Blkio.create(${JSON.stringify(name)})`,
      () => Blkio.create(name),
      "ENOENT",
      /Unknown driver name/,
    );
  }

  /** Path and direct first; then, rarely, read-only or sqpoll. */
  #configure(): void {
    const b = this.#b!, rng = this.#rng, t = this.#t;
    if (!this.#cfg.path && this.#vhost) {
      this.#ok("setStr path", () => b.setStr("path", t.path));
      this.#cfg.path = true;
      this.#log.add(`configure path=${t.path}`);
      return;
    }
    if (!this.#cfg.path) {
      this.#ok("setStr path", () => b.setStr("path", t.path));
      this.#ok(
        "setBool direct",
        () => rng.chance(0.5) ? b.setBool("direct", t.direct) : b.setStr("direct", String(t.direct)),
      );
      this.#cfg.path = true;
      this.#log.add(`configure path=${t.path} direct=${t.direct}`);
      return;
    }
    const r = rng.int(100);
    if (r < 6) {
      this.#ok("setBool read-only", () => b.setBool("read-only", true));
      this.#cfg.readOnly = true;
      this.#log.add("configure read-only=true");
    } else if (this.#vhost) {
      this.#throws("setBool direct", () => b.setBool("direct", true), "ENOENT", /Unknown property name/);
    } else if (r < 14) {
      this.#ok("setBool sqpoll", () => b.setBool("sqpoll", true));
      this.#cfg.sqpoll = true;
      this.#log.add("configure sqpoll=true");
    } else {
      this.#throws("setStr direct yes", () => b.setStr("direct", "yes"), "EINVAL", /"true" or "false"/);
    }
  }

  #connect(): void {
    const b = this.#b!;
    if (this.#state === "started") {
      return this.#throws("connect while started", () => b.connect(), "EBUSY", /started state/);
    }
    if (this.#state === "connected") {
      this.#ok("connect again", () => b.connect());
      return this.#log.add("connect again (idempotent)");
    }
    if (!this.#cfg.path) {
      return this.#throws(
        "connect without path",
        () => b.connect(),
        "EINVAL",
        /One of path and fd must be set/,
      );
    }
    this.#ok("connect", () => b.connect());
    this.#expectEqual("state after connect", b.state, "connected");
    this.#state = "connected";
    this.#supportsPoll = b.getBool("supports-poll-queues");
    this.#alignment = b.getInt("request-alignment");
    const t = this.#t;
    if (this.#vhost) {
      this.#maxSegments = b.getInt("max-segments");
      this.#maxWriteZeroes = Number(b.getUint64("max-write-zeroes-len"));
      this.#expectEqual("request-alignment", this.#alignment, 512);
      this.#expectEqual("can-grow", b.getBool("can-grow"), false);
      this.#expectEqual("capacity", b.getUint64("capacity"), BigInt(t.base + t.size));
      this.#expectEqual("read-only after connect", b.getBool("read-only"), this.#cfg.readOnly);
      this.#log.add(`connect (max-segments ${this.#maxSegments})`);
      return;
    }
    if (!t.direct) this.#expectEqual("request-alignment without O_DIRECT", this.#alignment, 1);
    if (t.direct && (this.#alignment < 512 || (this.#alignment & (this.#alignment - 1)) !== 0)) {
      this.#fail(`request-alignment ${this.#alignment} with O_DIRECT`);
    }
    if (!t.direct && this.#supportsPoll) this.#fail("supports-poll-queues true without O_DIRECT");
    this.#expectEqual("can-grow", b.getBool("can-grow"), !t.isBlockDevice);
    this.#expectEqual("read-only after connect", b.getBool("read-only"), this.#cfg.readOnly);
    this.#log.add(`connect (poll queues ${this.#supportsPoll}, alignment ${this.#alignment})`);
  }

  #queueConfig(): void {
    const b = this.#b!, rng = this.#rng, cfg = this.#cfg;
    const r = rng.int(100);
    if (r < 35) {
      const n = rng.pick([0, 1, 1, 1, 2, 3]);
      this.#ok(
        "num-queues",
        () => rng.chance(0.5) ? b.setInt("num-queues", n) : b.setStr("num-queues", String(n)),
      );
      cfg.numQueues = n;
      this.#log.add(`num-queues = ${n}`);
    } else if (r < 70) {
      const n = rng.pick([1, 2, 3, 4, 8, 16, 64, 128].filter((x) => !this.#vhost || (x & (x - 1)) === 0));
      const name = this.#entriesName;
      this.#ok(
        name,
        () => rng.chance(0.5) ? b.setInt(name, n) : b.setStr(name, String(n)),
      );
      cfg.numEntries = n;
      this.#log.add(`${name} = ${n}`);
    } else if (r < 80) {
      // Asking for a poll queue where there are none makes start() fail; it is set back there.
      const n = this.#supportsPoll ? rng.pick([0, 1, 2]) : rng.chance(0.3) ? 1 : 0;
      this.#ok("num-poll-queues", () => b.setInt("num-poll-queues", n));
      cfg.numPollQueues = n;
      this.#log.add(`num-poll-queues = ${n}`);
    } else if (r < 85 && !this.#vhost) {
      this.#ok("sqpoll", () => b.setBool("sqpoll", !cfg.sqpoll));
      cfg.sqpoll = !cfg.sqpoll;
      this.#log.add(`sqpoll = ${cfg.sqpoll}`);
    } else if (r < 90) {
      const name = this.#entriesName;
      this.#throws(
        `${name} 0`,
        () => b.setInt(name, 0),
        "EINVAL",
        this.#vhost ? /queue-size must be a power of two/ : /num-entries must be greater than 0/,
      );
      this.#expectEqual(`${name} kept`, b.getInt(name), cfg.numEntries);
    } else if (r < 95) {
      this.#throws(
        "num-queues -1",
        () => b.setStr("num-queues", "-1"),
        "EINVAL",
        /num-queues must be 0 or more/,
      );
      this.#expectEqual("num-queues kept", b.getInt("num-queues"), cfg.numQueues);
    } else {
      const name = this.#entriesName;
      this.#throws(`${name} 1.5`, () => b.setInt(name, 1.5), "EINVAL", /received 1\.5/);
    }
  }

  #start(): void {
    const b = this.#b!, cfg = this.#cfg;
    if (this.#state === "created") return this.#throws("start before connect", () => b.start(), "ENODEV");
    if (this.#state === "started") {
      this.#ok("start again", () => b.start());
      return this.#log.add("start again (idempotent)");
    }
    if (cfg.numPollQueues > 0 && !this.#supportsPoll) {
      this.#throws("start with poll queues", () => b.start(), "EINVAL", /Poll queues not supported/);
      this.#ok("num-poll-queues 0", () => b.setInt("num-poll-queues", 0));
      cfg.numPollQueues = 0;
      return;
    }
    const total = cfg.numQueues + cfg.numPollQueues;
    if (this.#vhost && (total === 0 || total > 2)) {
      // Queues are fixed at start, at most max-queues (the export's 2) of them.
      this.#throws(`start with ${total} queues`, () => b.start(), "EINVAL", /queue/);
      this.#ok("num-queues 1", () => b.setInt("num-queues", 1));
      this.#ok("num-poll-queues 0", () => b.setInt("num-poll-queues", 0));
      cfg.numQueues = 1;
      cfg.numPollQueues = 0;
      return;
    }
    this.#ok("start", () => b.start());
    this.#expectEqual("state after start", b.state, "started");
    this.#state = "started";
    for (let i = 0; i < cfg.numQueues; i++) this.#adopt(false, i);
    for (let i = 0; i < cfg.numPollQueues; i++) this.#adopt(true, i);
    this.#expectEqual("getQueue past the last", b.getQueue(cfg.numQueues), null);
    this.#expectEqual("getPollQueue past the last", b.getPollQueue(cfg.numPollQueues), null);
    this.#log.add(
      `start: ${cfg.numQueues} queues, ${cfg.numPollQueues} poll queues, num-entries ${cfg.numEntries}` +
        `${cfg.sqpoll ? ", sqpoll" : ""}${cfg.readOnly ? ", read-only" : ""}`,
    );
    if (this.#vhost) {
      // Buffers must lie in mapped regions: map what there is, or one region, to start with.
      while (this.#regionEntries().length < 4) this.#allocRegion(512 * KiB);
      // Room for the requests larger than one bio a large target gets now and then.
      if (this.#t.size >= BIG_TARGET && !this.#regionEntries().some((e) => e.bytes.length > BIG_REQUEST)) {
        this.#allocRegion(BIG_REQUEST + 64 * KiB);
      }
      for (const e of this.#regionEntries()) if (!e.mapped) this.#mapRegion(e);
    }
  }

  get #vhost(): boolean {
    return this.#t.driver === "virtio-blk-vhost-user";
  }

  /** The property of the queues' ring size. */
  get #entriesName(): string {
    return this.#vhost ? "queue-size" : "num-entries";
  }

  /**
   * SIGSTOP of the vhost-user back-end for a short time (a child sends SIGCONT): requests and
   * control messages meanwhile must complete late, with the right data, never with EIO.
   */
  #pauseBackEnd(): void {
    const failed = pauseBackEnd(this.#t.pid!, this.#rng, this.#log);
    if (failed !== null) this.#fail(failed);
    this.#stats.pauses++;
  }

  /** Records queue `index` of the instance (just made by start or add). */
  #adopt(poll: boolean, index: number): QueueModel {
    const q = poll ? this.#b!.getPollQueue(index) : this.#b!.getQueue(index);
    if (q === null) this.#fail(`${poll ? "getPollQueue" : "getQueue"}(${index}) is null after it was made`);
    this.#expectEqual("isPollQueue", q.isPollQueue, poll);
    const key = `${poll ? "p" : "q"}${index}`;
    const m: QueueModel = {
      key,
      poll,
      index,
      q,
      outstanding: new Map(),
      groups: new Map(),
      delivered: 0,
      fd: null,
      fdEnabled: true,
      out: Array.from({ length: 32 }, newCompletion),
    };
    this.#queues.set(key, m);
    return m;
  }

  #destroy(): void {
    const b = this.#b!;
    // Mostly after everything completed: a destroy with requests in flight makes their ranges
    // unknown, and too many of those leave little for reads to check.
    if (this.#state === "started" && this.#rng.chance(0.7)) this.#drain("before destroy");
    const dispose = this.#rng.chance(0.2);
    const what = `${dispose ? "[Symbol.dispose]()" : "destroy()"} in ${this.#state} state`;
    this.#ok(what, () => dispose ? b[Symbol.dispose]() : b.destroy());
    this.#expectEqual("destroyed", b.destroyed, true);
    this.#ok("destroy again", () => b.destroy());
    let dropped = 0;
    for (const m of this.#queues.values()) {
      dropped += pending(m);
      this.#dropQueue(m, /destroyed/);
    }
    this.#queues.clear();
    // Its regions are freed with it.
    this.#pool.removeRegions();
    this.#deadInstance = b;
    this.#b = null;
    this.#state = "none";
    this.#log.add(`${what}: ${dropped} requests outstanding dropped`);
  }

  /**
   * The queue is gone (removed, or its instance destroyed): its outstanding requests never
   * complete. Those no doIo ever handed over must not have reached the target (queues.test.ts
   * "destroy and removeQueue drop requests never handed to the kernel"); those that may have
   * reached it make their range unknown.
   */
  #dropQueue(m: QueueModel, why: RegExp): void {
    for (const r of m.outstanding.values()) {
      r.ended = `dropped${r.maybeSubmitted ? "" : ", never submitted"}`;
      this.#inflight.remove(r);
      this.#history.settle(
        r.id,
        `dropped at step ${this.#step}${r.maybeSubmitted ? "" : ", never submitted"}`,
      );
      if (r.maybeSubmitted && r.span !== null) {
        if (r.writes) {
          this.#disk.apply("forget", r.span[0], r.span[1] - r.span[0], null, r.id, []);
          this.#disk.grow(r.span[1], false);
        }
        // The kernel may still hold its buffers for a moment (destroy waits a second at most).
        for (const e of r.entries) this.#pool.retire(e);
      }
      r.release();
    }
    m.outstanding.clear();
    m.groups.clear();
    m.delivered = 0;
    this.#deadQueues.push({ q: m.q, why });
    if (this.#deadQueues.length > 8) this.#deadQueues.shift();
  }

  /** Calls on removed queues and destroyed instances fail with EBADF. */
  #deadCall(): void {
    const rng = this.#rng;
    if (this.#deadQueues.length > 0 && rng.chance(0.6)) {
      const { q, why } = rng.pick(this.#deadQueues);
      const call = rng.pick<[string, () => unknown]>([
        ["read", () => q.read(0, new Uint8Array(512))],
        ["writeZeroes", () => q.writeZeroes(0, 512)],
        ["doIo", () => q.doIo([], 0)],
        ["completionFd", () => q.completionFd],
        ["cancel", () => q.cancel(1)],
        ["flush", () => q.flush()],
      ]);
      return this.#throws(`dead queue ${call[0]}`, call[1], "EBADF", why);
    }
    const b = this.#deadInstance;
    if (b === null) return;
    const call = rng.pick<[string, () => unknown]>([
      ["getInt", () => b.getInt("num-queues")],
      ["connect", () => b.connect()],
      ["start", () => b.start()],
      ["allocMemRegion", () => b.allocMemRegion(4096)],
      ["getQueue", () => b.getQueue(0)],
      ["properties", () => b.properties()],
      ["setStr", () => b.setStr("path", this.#t.path)],
    ]);
    this.#throws(`destroyed instance ${call[0]}`, call[1], "EBADF", /destroyed/);
  }

  /** A call the state does not allow. */
  #wrongState(): void {
    const b = this.#b!, rng = this.#rng;
    switch (this.#state) {
      case "created": {
        const c = rng.int(6);
        if (c === 0) {
          this.#throws(
            "capacity before connect",
            () => b.getUint64("capacity"),
            "ENODEV",
            /connected/,
          );
        } else if (c === 1) this.#throws("start before connect", () => b.start(), "ENODEV");
        else if (c === 2) this.#throws("alloc before connect", () => b.allocMemRegion(4096), "ENODEV");
        else if (c === 3) this.#addQueueBeforeStart();
        else if (c === 4) {
          this.#throws("num-queues before connect", () => b.setInt("num-queues", 1), "ENODEV");
        } else this.#expectEqual("getQueue before start", b.getQueue(0), null);
        return;
      }
      case "connected": {
        const c = rng.int(5);
        if (c === 0) this.#throws("path after connect", () => b.setStr("path", this.#t.path), "EBUSY");
        else if (c === 1) this.#addQueueBeforeStart();
        else if (c === 2) this.#throws("removeQueue before start", () => b.removeQueue(0), "ENOENT");
        else if (c === 3) this.#expectEqual("getQueue before start", b.getQueue(0), null);
        else {
          const e = this.#regionEntries().find((x) => !x.freed);
          if (e) {
            this.#throws(
              "map before start",
              () => b.mapMemRegion(e.region!),
              "EBUSY",
              /must be started/,
            );
          }
        }
        return;
      }
      case "started": {
        // virtio-blk-vhost-user has no direct, and its fd cannot be set in any state.
        const c = this.#vhost ? rng.pick([0, 2]) : rng.int(4);
        if (c === 0) {
          this.#throws(
            `${this.#entriesName} after start`,
            () => b.setInt(this.#entriesName, 4),
            "EBUSY",
            /started/,
          );
        } else if (c === 1) this.#throws("direct after start", () => b.setBool("direct", true), "EBUSY");
        else if (c === 2) {
          this.#throws("read-only after start", () => b.setStr("read-only", "false"), "EBUSY");
        } else this.#throws("fd after start", () => b.setInt("fd", -1), "EBUSY");
        return;
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Properties.

  #props(): Record<string, PropRow> {
    return propertyRows({
      state: this.#state,
      path: this.#cfg.path ? this.#t.path : "",
      direct: this.#cfg.path && this.#t.direct,
      readOnly: this.#cfg.readOnly,
      sqpoll: this.#cfg.sqpoll,
      numQueues: this.#cfg.numQueues,
      numPollQueues: this.#cfg.numPollQueues,
      numEntries: this.#cfg.numEntries,
      alignment: this.#alignment,
      isBlockDevice: this.#t.isBlockDevice,
      supportsPoll: this.#supportsPoll,
      vhost: this.#vhost,
    });
  }

  /** A random property read, or a set that the state or the property refuses. */
  #property(): void {
    const b = this.#b!, rng = this.#rng, state = this.#state;
    const rows = this.#props();
    const names = Object.keys(rows);
    const r = rng.int(100);
    if (r < 5) {
      this.#throws("unknown property", () => b.getInt("no-such-property"), "ENOENT", /Unknown property name/);
      return;
    }
    const name = rng.pick(names);
    const row = rows[name];
    if (r < 60) {
      // A read: typed, as text, or with the wrong type.
      const readable = STATE_ORDER[state] >= STATE_ORDER[row.readable];
      const how = rng.int(3);
      if (how === 2) {
        const wrong = row.type === "bool" ? "int" : "bool";
        const fn = () => wrong === "int" ? b.getInt(name) : b.getBool(name);
        return this.#throws(`get${wrong} "${name}" (a ${row.type})`, fn, "ENOTTY");
      }
      const get = () => how === 1 ? b.getStr(name) : typedGet(b, name, row.type);
      if (!readable) return this.#throws(`get "${name}" in ${state} state`, get, "ENODEV", /connected/);
      const got = this.#ok(`get "${name}"`, get);
      if (row.value !== undefined) {
        const want = row.value();
        this.#expectEqual(
          `property "${name}" (${how === 1 ? "str" : row.type})`,
          got,
          how === 1 ? String(want) : want,
        );
      }
      this.#log.add(`get "${name}" = ${String(got)}`);
      return;
    }
    // A set that must fail: read-only (EACCES), or not in this state (ENODEV/EBUSY). Sets that
    // are allowed are made by #configure and #queueConfig.
    if (row.settable.length === 0) {
      const v = sampleValue(row.type);
      return this.#throws(`set read-only "${name}"`, () => typedSet(b, name, row.type, v), "EACCES");
    }
    if (row.settable.includes(state)) {
      // The wrong type instead.
      const wrong = row.type === "bool" ? "int" : "bool";
      return this.#throws(
        `set${wrong} "${name}" (a ${row.type})`,
        () => typedSet(b, name, wrong, sampleValue(wrong)),
        "ENOTTY",
      );
    }
    const code = STATE_ORDER[state] < STATE_ORDER[row.settable[0]] ? "ENODEV" : "EBUSY";
    const v = name === "path" ? this.#t.path : sampleValue(row.type);
    this.#throws(`set "${name}" in ${state} state`, () => typedSet(b, name, row.type, v), code);
  }

  /** properties(): every row the model knows, with its type and access in this state. */
  #introspect(): void {
    const b = this.#b!, state = this.#state;
    const list = this.#ok("properties()", () => b.properties());
    const rows = this.#props();
    for (const [name, row] of Object.entries(rows)) {
      const p = list.find((x) => x.name === name);
      if (!p) this.#fail(`properties() lacks "${name}"`);
      this.#expectEqual(`properties() type of "${name}"`, p.type, row.type);
      this.#expectEqual(
        `properties() readable of "${name}"`,
        p.readable,
        STATE_ORDER[state] >= STATE_ORDER[row.readable],
      );
      this.#expectEqual(`properties() writable of "${name}"`, p.writable, row.settable.includes(state));
    }
    this.#log.add(`properties(): ${list.length} rows agree`);
  }

  /** capacity: a block device's never changes; a file's is what the completed writes made it. */
  #capacity(): void {
    const b = this.#b!;
    // The model's size counts from the target's base.
    const cap = Number(this.#ok("capacity", () => b.getUint64("capacity"))) - this.#t.base;
    if (this.#inflight.anyWrites()) return this.#log.add(`capacity ${cap} (writes in flight: not checked)`);
    const d = this.#disk;
    if (!d.sizeAllows(cap)) this.#fail(`capacity ${cap}, the model allows [${d.sizeLo}, ${d.sizeHi}]`);
    d.settleSize(cap);
    this.#log.add(`capacity ${cap}`);
  }

  // -------------------------------------------------------------------------------------------
  // Memory regions.

  #regionEntries(): PoolEntry[] {
    return this.#pool.entries.filter((e) => e.region !== null);
  }

  #allocRegion(want?: number): void {
    const b = this.#b!, rng = this.#rng;
    if (this.#state === "created") {
      return this.#throws("allocMemRegion in created state", () => b.allocMemRegion(4096), "ENODEV");
    }
    const bad = want === undefined && rng.chance(0.1);
    if (bad) {
      // mem-region-alignment: virtio-blk-vhost-user takes any length.
      const a = this.#vhost ? 1 : this.#alignment;
      const len = rng.pick(a > 1 ? [0, -4096, 4096.5, a + 1] : [0, -4096, 4096.5]);
      return this.#throws(
        `allocMemRegion(${len})`,
        () => b.allocMemRegion(len),
        "EINVAL",
        /positive multiple of mem-region-alignment/,
      );
    }
    const live = this.#regionEntries();
    if (live.length >= MAX_REGIONS) return this.#freeRegion();
    const len = want ?? rng.pick([4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 512 * KiB]);
    const region = this.#ok(`allocMemRegion(${len})`, () => b.allocMemRegion(len));
    this.#expectEqual("region len", region.len, len);
    this.#expectEqual("region bytes", region.bytes.length, len);
    this.#expectEqual("region fdOffset", region.fdOffset, 0);
    if (region.fd < 0) this.#fail(`allocMemRegion gave fd ${region.fd}`);
    this.#pool.addRegion(region);
    this.#log.add(`allocMemRegion(${len}) fd ${region.fd}`);
  }

  #pickRegion(): PoolEntry | null {
    const live = this.#regionEntries();
    return live.length === 0 ? null : this.#rng.pick(live);
  }

  #mapRegion(which?: PoolEntry): void {
    const b = this.#b!, e = which ?? this.#pickRegion();
    if (e === null) return this.#allocRegion();
    const region = e.region!;
    if (e.mapped) {
      return this.#throws("mapMemRegion twice", () => b.mapMemRegion(region), "EINVAL", /already mapped/);
    }
    this.#ok("mapMemRegion", () => b.mapMemRegion(region));
    e.mapped = true;
    this.#log.add(`mapMemRegion fd ${region.fd}`);
  }

  #unmapRegion(): void {
    const b = this.#b!, e = this.#pickRegion();
    if (e === null) return;
    if (this.#vhost && e.mapped) {
      // The back-end reads and writes it for the requests queued or in flight (README), and
      // may for good for requests dropped with a removed queue.
      const { sure, maybe } = this.#holders(e);
      if (sure > 0) {
        return this.#throws(
          `unmapMemRegion with ${sure} requests using it`,
          () => b.unmapMemRegion(e.region!),
          "EBUSY",
          /in use by requests/,
        );
      }
      if (maybe > 0 || e.retired) {
        try {
          b.unmapMemRegion(e.region!);
        } catch (err) {
          if (err instanceof BlkioError && err.code === "EBUSY") {
            return this.#log.add("unmapMemRegion: EBUSY (held)");
          }
          throw err;
        }
        this.#log.add(`unmapMemRegion fd ${e.region!.fd} (maybe held)`);
        e.mapped = false;
        return;
      }
    }
    this.#ok("unmapMemRegion", () => b.unmapMemRegion(e.region!));
    if (e.mapped) {
      // Unmapping empties the region's fixed-buffer slot of every ring, which first hands the
      // kernel the SQEs already written (they may use it): a submission point for every queue.
      for (const m of this.#queues.values()) for (const r of m.outstanding.values()) r.maybeSubmitted = true;
    }
    this.#log.add(`unmapMemRegion fd ${e.region!.fd}${e.mapped ? "" : " (not mapped: no-op)"}`);
    e.mapped = false;
  }

  /** Requests whose buffers the library may still reference (in its ring or backlog). */
  #holders(e: PoolEntry): { sure: number; maybe: number } {
    let sure = 0, maybe = 0;
    for (const r of e.users()) {
      if (r.outcomes.every((o) => o.early === true)) continue;
      // Of a group some of whose completions came back: it may be one of those.
      if (r.group !== null && r.group.got.length > 0) {
        maybe++;
        continue;
      }
      // Reaped into the library's backlog, cancelled there, or refused by the driver's checks:
      // then nothing holds the buffer any more.
      if (r.mayBeReaped || r.cancelled || r.outcomes.some((o) => o.early === "maybe")) maybe++;
      else sure++;
    }
    return { sure, maybe };
  }

  #freeRegion(): void {
    const b = this.#b!, e = this.#pickRegion();
    if (e === null) return;
    const region = e.region!;
    if (e.mapped) {
      return this.#throws(
        "freeMemRegion while mapped",
        () => b.freeMemRegion(region),
        "EBUSY",
        /still mapped/,
      );
    }
    const { sure, maybe } = this.#holders(e);
    if (sure > 0) {
      return this.#throws(
        `freeMemRegion with ${sure} requests using it`,
        () => b.freeMemRegion(region),
        "EBUSY",
        /in use by requests/,
      );
    }
    if (maybe > 0) {
      // Their completions may already be reaped into the library's backlog (a doIo failed since):
      // then nothing holds the memory any more, and freeing it is fine.
      try {
        b.freeMemRegion(region);
      } catch (err) {
        if (err instanceof BlkioError && err.code === "EBUSY") {
          return this.#log.add("freeMemRegion: EBUSY (held)");
        }
        throw err;
      }
    } else {
      this.#ok("freeMemRegion", () => b.freeMemRegion(region));
    }
    this.#expectEqual("bytes of a freed region", region.bytes.length, 0);
    e.freed = true;
    this.#pool.remove(e);
    this.#log.add(`freeMemRegion fd ${region.fd}`);
    this.#throws("freeMemRegion twice", () => b.freeMemRegion(region), "EINVAL", /already freed/);
  }

  // -------------------------------------------------------------------------------------------
  // Queues.

  #liveQueues(): QueueModel[] {
    return [...this.#queues.values()];
  }

  #outstanding(): number {
    let n = 0;
    for (const m of this.#queues.values()) n += pending(m);
    return n;
  }

  /**
   * addQueue before start: EBUSY, but ENOTSUP in every state where the driver cannot add queues
   * at all (libblkio asks the driver first).
   */
  #addQueueBeforeStart(): void {
    const b = this.#b!;
    if (this.#vhost) {
      this.#throws(
        "addQueue before start",
        () => b.addQueue(),
        "ENOTSUP",
        /cannot add queues/,
      );
    } else this.#throws("addQueue before start", () => b.addQueue(), "EBUSY", /must be started/);
  }

  #addQueue(poll: boolean): void {
    const b = this.#b!;
    const what = poll ? "addPollQueue" : "addQueue";
    if (this.#vhost) {
      const call = () => poll ? b.addPollQueue() : b.addQueue();
      return this.#throws(`${what} (can-add-queues false)`, call, "ENOTSUP", /cannot add queues/);
    }
    if (poll && !this.#supportsPoll) {
      return this.#throws(
        `${what} without poll support`,
        () => b.addPollQueue(),
        "EINVAL",
        /Poll queues not supported/,
      );
    }
    const mine = this.#liveQueues().filter((m) => m.poll === poll);
    if (mine.length >= MAX_QUEUES) return this.#removeQueue(poll);
    let lowest = 0;
    while (this.#queues.has(`${poll ? "p" : "q"}${lowest}`)) lowest++;
    const index = this.#ok(what, () => poll ? b.addPollQueue() : b.addQueue());
    this.#expectEqual(`${what} index (the lowest free)`, index, lowest);
    this.#adopt(poll, index);
    this.#log.add(`${what} -> ${index}`);
  }

  #removeQueue(poll: boolean): void {
    const b = this.#b!, rng = this.#rng;
    const what = poll ? "removePollQueue" : "removeQueue";
    const index = rng.range(-1, 4);
    const m = this.#queues.get(`${poll ? "p" : "q"}${index}`);
    const call = () => poll ? b.removePollQueue(index) : b.removeQueue(index);
    if (!m) {
      return this.#throws(`${what}(${index}) with no such queue`, call, "ENOENT", /no queue with index/);
    }
    if (this.#rng.chance(0.6)) this.#drain("before removing a queue");
    const n = pending(m);
    this.#ok(`${what}(${index})`, call);
    this.#queues.delete(m.key);
    this.#dropQueue(m, /removed/);
    this.#expectEqual(
      `${poll ? "getPollQueue" : "getQueue"}(${index}) after removal`,
      poll ? b.getPollQueue(index) : b.getQueue(index),
      null,
    );
    this.#log.add(`${what}(${index}): ${n} outstanding dropped`);
  }

  #getQueue(): void {
    const b = this.#b!, rng = this.#rng;
    const index = rng.pick([-1, 0, 1, 2, 3, 5, 0.5, NaN]);
    const poll = rng.chance(0.25);
    const m = this.#queues.get(`${poll ? "p" : "q"}${index}`);
    const got = poll ? b.getPollQueue(index) : b.getQueue(index);
    this.#expectEqual(`${poll ? "getPollQueue" : "getQueue"}(${index})`, got, m ? m.q : null);
  }

  // -------------------------------------------------------------------------------------------
  // Requests.

  #facts(m: QueueModel, pieces: readonly { addr: number }[]): TargetFacts {
    const t = this.#t;
    let vhost: VhostFacts | null = null;
    if (this.#vhost) {
      const where = pieces.map((p) => this.#pool.entryAt(p.addr));
      const buffers = where.some((e) => e?.region == null)
        ? "plain"
        : where.some((e) => !e!.mapped)
        ? "unmapped"
        : "mapped";
      vhost = {
        queueSize: this.#cfg.numEntries,
        maxSegments: this.#maxSegments,
        maxWriteZeroes: this.#maxWriteZeroes,
        buffers,
      };
    }
    return targetFacts(t, { readOnly: this.#cfg.readOnly, alignment: this.#alignment, poll: m.poll, vhost });
  }

  #pickQueue(): QueueModel {
    return this.#rng.pick(this.#liveQueues());
  }

  /** A start and length for `op` (see pickRange). */
  #range(op: Op): { start: number; len: number } {
    const t = this.#t;
    return pickRange(this.#rng, op, {
      size: t.size,
      isBlockDevice: t.isBlockDevice,
      limit: this.#disk.limit,
      big: t.size >= BIG_TARGET,
      inflight: this.#inflight,
    });
  }

  #flags(op: Op): number {
    const rng = this.#rng;
    if (rng.chance(0.06)) {
      // Bits the request does not take: a completion with EINVAL and libblkio's message.
      return rng.pick([FUA, NO_UNMAP, NO_FALLBACK, 8, 0x80000000 | 0, -1, FUA | 16]);
    }
    if (op === "write" || op === "writev") return rng.chance(0.15) ? FUA : 0;
    if (op === "writeZeroes") return rng.int(8);
    return 0;
  }

  /**
   * A userData for request `r` on `m`: mostly its own, now and then one of SHARED_USER_DATA, which
   * other requests of the queue may carry too (a group takes no more once a completion of it came
   * back, so that each group comes back whole in the end).
   */
  #userData(m: QueueModel, r: FuzzRequest): unknown {
    const rng = this.#rng;
    if (!this.#ownUserData && rng.chance(0.15)) {
      const v = rng.pick(SHARED_USER_DATA);
      const g = m.groups.get(v);
      if (g === undefined || (g.got.length === 0 && g.members.length < 4)) {
        r.group = g ?? { userData: v, members: [], got: [] };
        if (ODD_SHARED_USER_DATA.includes(v)) this.#stats.oddUserData++;
        return v;
      }
    }
    const id = r.id;
    const k = rng.int(100);
    if (k < 50) return { id };
    if (k < 62) return id;
    if (k < 72) return `r${id}`;
    if (k < 78) return Symbol(`r${id}`);
    if (k < 82) return BigInt(id);
    this.#stats.oddUserData++;
    return rng.pick(ODD_USER_DATA)(id);
  }

  /**
   * Buffers for a read or write of `len` bytes in `count` pieces (some empty), or null when the
   * pool has no room now.
   */
  #buffers(r: FuzzRequest, len: number, count: number): Uint8Array[] | null {
    const pool = this.#pool, vhost = this.#vhost;
    return pickBuffers(this.#rng, pool, r, len, count, this.#t.direct, (rng, n, align, skew) =>
      // virtio-blk-vhost-user: mostly mapped regions, now and then any memory (EINVAL).
      vhost && rng.chance(0.95)
        ? pool.take(rng.fork(), r, n, align, skew, false, rng.chance(0.95))
        : pool.take(rng.fork(), r, n, align, skew));
  }

  /** Queues one random request on `m` (or a random queue). */
  #io(m: QueueModel = this.#pickQueue(), opArg?: Op, shared?: SharedGroup): FuzzRequest | null {
    // A stream of its own: how many numbers finding buffers takes (it depends on addresses and
    // on what is busy) must not change the next request of a burst.
    const rng = this.#rng.fork();
    const saved = this.#rng;
    this.#rng = rng;
    try {
      return this.#ioWith(m, rng, opArg, shared);
    } finally {
      this.#rng = saved;
    }
  }

  #ioWith(m: QueueModel, rng: Rng, opArg?: Op, shared?: SharedGroup): FuzzRequest | null {
    const op: Op = opArg ?? pickOp(rng);
    const range = op === "flush" ? { start: 0, len: 0 } : this.#range(op);
    const flags = this.#flags(op);
    const isIo = op === "read" || op === "write" || op === "readv" || op === "writev";
    const vectored = op === "readv" || op === "writev";
    const picked = pickCount(rng, op, range.start, range.len, !this.#t.direct, this.#disk.limit);
    const { count, len } = picked;
    let start = picked.start;
    // Now and then a read of a file far past its end (4 GiB, 1 TiB, 4 PiB on): zeroes, whatever
    // the file holds below. Every other request stays within the model's first MiBs, where a
    // driver that cut offsets to 32 bits (or lost high bits converting them) did no harm.
    const reads = op === "read" || op === "readv";
    if (reads && !this.#t.isBlockDevice && !this.#vhost && start < this.#disk.limit && rng.chance(0.03)) {
      start += rng.pick([2 ** 32, 2 ** 40, 2 ** 52]);
    }
    const id = this.#nextId++;
    const r = new FuzzRequest(id, op, start, len, flags, this.#step, m.key);
    let bufs: Uint8Array[] = [];
    if (isIo) {
      const got = this.#buffers(r, len, count);
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
    const reaches = expectOutcomes(r, this.#facts(m, pieces), pieces, this.#disk.limit);
    if (shared !== undefined) {
      r.group = shared;
      if (ODD_SHARED_USER_DATA.includes(shared.userData)) this.#stats.oddUserData++;
    }
    r.userData = shared !== undefined ? twin(shared.userData, rng) : this.#userData(m, r);
    // The target's base is added to the model's offsets (not to those past 2^53, which must stay
    // there).
    const at = r.start >= 2 ** 53 ? r.start : this.#t.base + r.start;
    const startArg = rng.chance(0.2) ? BigInt(at) : at;
    const flagsArg = flags === 0 && rng.chance(0.5) ? undefined : flags;
    const q = m.q, ud = r.userData;
    const iovs = vectored
      ? `(${bufs.length <= 8 ? bufs.map((p) => p.length).join("+") : `${bufs.length} iov`})`
      : "";
    r.describe = `#${id} ${op}${iovs} ` +
      `${m.key} [${r.start}, +${r.len}) flags ${flags}${reaches ? "" : " (fails early)"}` +
      `${r.group !== null ? ` userData ${show(ud)} (shared)` : ""}`;
    this.#ok(`${op} call`, () => {
      switch (op) {
        case "read":
          return q.read(startArg, bufs[0], ud, flagsArg);
        case "write":
          return q.write(startArg, bufs[0], ud, flagsArg);
        case "readv":
          return q.readv(startArg, bufs, ud, flagsArg);
        case "writev":
          return q.writev(startArg, bufs, ud, flagsArg);
        case "writeZeroes":
          return q.writeZeroes(startArg, rng.chance(0.2) ? BigInt(r.len) : r.len, ud, flagsArg);
        case "discard":
          return q.discard(startArg, r.len, ud, flagsArg);
        case "flush":
          return q.flush(ud, flagsArg);
      }
    });
    if (vectored) r.describe += scrambleIovecs(rng, bufs);
    const syncs = op === "flush" || ((flags & FUA) !== 0 && r.len > 0 && r.writes);
    if (this.#t.syncs !== null && syncs) r.syncMark = this.#t.syncs();
    if (r.group !== null) {
      this.#stats.shared++;
      r.group.members.push(r);
      m.groups.set(ud, r.group);
    }
    m.outstanding.set(r.group !== null ? r : ud, r);
    this.#inflight.add(r);
    this.#stats.requests++;
    this.#stats.byOp[op]++;
    this.#log.add(`queue ${r.describe}`);
    return r;
  }

  /** More requests at once than the ring holds: the rest waits in the backlog. */
  #burst(m = this.#pickQueue(), extra = 0, ownUserData = false): void {
    const rng = this.#rng;
    const n = Math.min(96, rng.range(this.#cfg.numEntries, 3 * this.#cfg.numEntries)) + extra;
    this.#log.add(`burst of ${n} on ${m.key}${ownUserData ? ", each with a userData of its own" : ""}`);
    this.#ownUserData = ownUserData;
    try {
      for (let i = 0; i < n; i++) this.#io(m);
    } finally {
      this.#ownUserData = false;
    }
  }

  /**
   * Two to four requests (or one) with one shared userData, now and then behind a burst that fills the
   * ring (they wait in the backlog), then mostly a cancel() of that value at once: it must take
   * the oldest (cancelled before submission there, that one does nothing; a read of the wrong
   * one is left unfilled, a write of the wrong one does not land).
   */
  #sharedBurst(): void {
    const m = this.#pickQueue(), rng = this.#rng, entries = this.#cfg.numEntries;
    // Now and then behind more than 64 waiting (where the backlog looks requests up by userData
    // in an index, which must keep the oldest of those sharing one). The index is given up while
    // two waiting requests share a value, so now and then the burst's values are all their own,
    // it leaves 70 more than the ring holds, and one request carries `v`, often NaN (which the
    // index, a Map, would find, and cancel() must not).
    const long = rng.chance(0.4), alone = long && entries <= 128 && rng.chance(0.4);
    const v = alone && rng.chance(0.5) ? NaN : rng.pick(SHARED_USER_DATA);
    if (long) this.#burst(m, alone ? entries + 70 : rng.chance(0.5) && entries <= 16 ? 70 : 0, alone);
    // The burst's requests may have started a group of it: the new ones join it while it is open.
    const g: SharedGroup = m.groups.get(v) ?? { userData: v, members: [], got: [] };
    if (g.got.length > 0) return this.#cancel();
    const n = alone ? 1 : rng.range(2, 4);
    this.#log.add(`${n} requests sharing userData ${show(v)} on ${m.key}`);
    for (let i = 0; i < n; i++) this.#io(m, undefined, g);
    if (g.members.length > 0 && rng.chance(0.8)) this.#cancelShared(m, g);
  }

  /** Calls that are unusable as such: they throw, and queue nothing. */
  #badCall(): void {
    const m = this.#pickQueue(), q = m.q, rng = this.#rng;
    const freed = new Uint8Array(new ArrayBuffer(4096));
    (freed.buffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer();
    const ud = { bad: true };
    const c = rng.pick<[string, () => void, RegExp]>([
      ["read at -1", () => q.read(-1, new Uint8Array(512), ud), /start must be a non-negative integer/],
      ["write of an Array", () => q.write(0, [1, 2, 3] as unknown as Uint8Array, ud), /must be a Uint8Array/],
      [
        "read into a DataView",
        () => q.read(0, new DataView(new ArrayBuffer(8)) as unknown as Uint8Array, ud),
        /Uint8Array/,
      ],
      ["write of a detached buffer", () => q.write(0, freed, ud), /detached/],
      [
        "readv of a non-array",
        () => q.readv(0, new Uint8Array(8) as unknown as Uint8Array[], ud),
        /must be an array/,
      ],
      ["flush with flags 1.5", () => q.flush(ud, 1.5), /flags must be a 32-bit integer/],
      ["writeZeroes len NaN", () => q.writeZeroes(0, NaN, ud), /len must be a non-negative integer/],
      ["discard at 2^64", () => q.discard(1n << 64n, 512, ud), /below 2\^64/],
    ]);
    this.#throws(`${m.key} ${c[0]}`, c[1], "EINVAL", c[2]);
  }

  #cancel(): void {
    const m = this.#pickQueue(), rng = this.#rng;
    if (pending(m) === 0 || rng.chance(0.15)) {
      // Nothing of this queue carries it (a value never used, or of a request delivered).
      this.#expectEqual(`${m.key} cancel of an unknown userData`, m.q.cancel({ never: true }), false);
      return;
    }
    const picked = rng.pick([...m.outstanding.values()]);
    if (picked.group !== null) return this.#cancelShared(m, picked.group);
    const r = picked;
    if (typeof r.userData === "object" && r.userData !== null && rng.chance(0.2)) {
      // A copy is another object: `===` tells them apart.
      const copy = Array.isArray(r.userData) ? [...r.userData] : { ...r.userData };
      this.#expectEqual(`${m.key} cancel of a copy of ${show(r.userData)}`, m.q.cancel(copy), false);
      this.#stats.missCancels++;
      return this.#log.add(`cancel of a copy of ${r.describe}'s userData -> false`);
    }
    const got = m.q.cancel(twin(r.userData, rng));
    if (r.cancelled) {
      // A second cancel of the same request: still not complete, or already being cancelled.
      this.#log.add(`cancel again ${r.describe} -> ${got}`);
      return;
    }
    // Found unless the library completed it itself (before submission, or reaped by a doIo that
    // failed afterwards: its completion then waits in the library's backlog).
    const early = r.outcomes.every((o) => o.early === true);
    const maybe = r.mayBeReaped || r.outcomes.some((o) => o.early === "maybe");
    if (early && got) this.#fail(`cancel() found ${r.describe}, which completed before submission`);
    if (!early && !maybe && !got) this.#fail(`cancel() did not find ${r.describe}, which has not completed`);
    if (got) {
      r.cancelled = true;
      this.#stats.cancels++;
    }
    this.#log.add(`cancel ${r.describe} -> ${got}`);
  }

  /**
   * cancel() of a userData several requests of `m` carry: it must take the oldest the library
   * still holds. Only asked where the model knows which that is: none of the group delivered,
   * none that the library may have completed itself meanwhile (reaped by a failed doIo, refused
   * by the driver's checks) before it, and that one not cancelled already (a second cancel
   * finds it again in the ring, but the next one in the backlog).
   */
  #cancelShared(m: QueueModel, g: SharedGroup): void {
    const held = g.members.filter((r) => !r.outcomes.every((o) => o.early === true));
    const what = `${m.key} cancel(${show(g.userData)}) of ${g.members.length} requests sharing it`;
    if (Number.isNaN(g.userData)) {
      // NaN !== NaN: no request carries it as far as `===` goes, whatever is outstanding.
      this.#expectEqual(`${what}: found one`, m.q.cancel(NaN), false);
      this.#stats.missCancels++;
      return this.#log.add(`${what}: none found (NaN !== NaN)`);
    }
    const target = held[0];
    const unsure = held.findIndex((r) => r.mayBeReaped || r.outcomes.some((o) => o.early === "maybe"));
    if (g.got.length > 0 || target === undefined || target.cancelled || unsure === 0) {
      return this.#log.add(`${what}: not asked (which one it would take is not known)`);
    }
    const got = m.q.cancel(twin(g.userData, this.#rng));
    if (!got) this.#fail(`${what}: cancel() found none, though ${target.describe} has not completed`);
    target.cancelled = true;
    this.#stats.cancels++;
    this.#stats.sharedCancels++;
    this.#log.add(`${what}: the oldest, ${target.describe}`);
  }

  // -------------------------------------------------------------------------------------------
  // Completions.

  /** Checks one completion against its request and applies it to the model. */
  #deliver(m: QueueModel, c: Completion): void {
    const { userData, ret, errorMsg } = c;
    const r = m.outstanding.get(userData);
    if (r === undefined) {
      const g = m.groups.get(userData);
      if (g !== undefined) return this.#deliverShared(m, g, userData, ret, errorMsg);
      for (const other of this.#queues.values()) {
        const x = other.outstanding.get(userData) ?? other.groups.get(userData)?.members[0];
        if (x) this.#fail(`completion of ${x.describe} came back on ${m.key}`);
      }
      this.#fail(
        `completion on ${m.key} (ret ${ret}) of no outstanding request: userData ${show(userData)}` +
          " (delivered twice, or never queued)",
      );
    }
    if (!Object.is(userData, r.userData)) {
      this.#fail(
        `completion of ${r.describe} came back with userData ${show(userData)}, not ${show(r.userData)}`,
      );
    }
    m.outstanding.delete(userData);
    this.#complete(r, ret, errorMsg);
  }

  /**
   * A completion of one of the requests of group `g`. Which one only shows once all have come
   * back: then each completion must go to a request that allows it (its ret and message, -125
   * for the one cancel() took, a read's bytes agreeing with the model), one each. A request that
   * gets the same completion in every such assignment is checked and applied as one of its own;
   * the others (two writes with different rets) leave their ranges unknown.
   */
  #deliverShared(
    m: QueueModel,
    g: SharedGroup,
    userData: unknown,
    ret: number,
    errorMsg: string | null,
  ): void {
    const what = `completion (ret ${ret}) with userData ${show(userData)} on ${m.key}`;
    if (g.got.length >= g.members.length) {
      this.#fail(`${what}: more than the ${g.members.length} requests carrying it (delivered twice?)`);
    }
    g.got.push({ ret, errorMsg, userData });
    m.delivered++;
    this.#log.add(`  ${what}: ${g.got.length} of ${g.members.length} back`);
    if (g.got.length < g.members.length) return;
    m.groups.delete(g.userData);
    m.delivered -= g.got.length;
    for (const r of g.members) m.outstanding.delete(r);
    const ways = this.#assignments(g);
    if (ways.length === 0) {
      const got = g.got.map((c) =>
        `${c.ret}${c.errorMsg ? ` "${c.errorMsg.slice(0, 60)}"` : ""}${
          Object.is(c.userData, g.userData) ? "" : ` (userData ${show(c.userData)})`
        }`
      ).join(", ");
      const each = g.members.map((r) => {
        const fits = g.got.filter((c) => this.#fits(r, c)).map((c) => c.ret);
        const bytes = r.dest !== null && g.got.some((c) => c.ret === 0) &&
            r.outcomes.some((o) => o.ret === 0) &&
            !fits.includes(0)
          ? ", its bytes differ from the model"
          : "";
        const own = Object.is(r.userData, g.userData) ? "" : ` (userData ${show(r.userData)})`;
        return `${r.describe}${own}${r.cancelled ? " (cancelled)" : ""}: takes [${fits.join(", ")}]${bytes}`;
      });
      this.#fail(
        `the completions with userData ${show(g.userData)} on ${m.key} (${got}) fit no assignment to ` +
          `the requests carrying it, one each:\n    ${each.join("\n    ")}` +
          `${g.members.some((r) => r.cancelled) ? "\n  (cancel() must take the oldest not completed)" : ""}`,
      );
    }
    this.#stats.sharedGroups++;
    g.members.forEach((r, i) => {
      const c = g.got[ways[0][i]];
      const same = ways.every((w) => g.got[w[i]].ret === c.ret && g.got[w[i]].errorMsg === c.errorMsg);
      if (same) return this.#complete(r, c.ret, c.errorMsg);
      // Which of two or more completions it had is not known.
      r.ended = "completed, with one of several completions";
      this.#inflight.remove(r);
      this.#stats.completions++;
      this.#history.settle(r.id, `completed at step ${this.#step}, with which completion unknown`);
      if (r.writes && r.span !== null) {
        this.#disk.apply("forget", r.span[0], r.span[1] - r.span[0], null, r.id, []);
        this.#disk.grow(r.span[1], false);
      }
      const memory = r.buffersIntact();
      if (memory !== null) this.#fail(memory);
      r.release();
    });
  }

  /** Every assignment of `g`'s completions to its requests that each request allows. */
  #assignments(g: SharedGroup): number[][] {
    const n = g.members.length;
    const ok = g.members.map((r) => g.got.map((c) => this.#fits(r, c)));
    const ways: number[][] = [];
    const used = new Array<boolean>(n).fill(false), way: number[] = [];
    const place = (i: number): void => {
      if (i === n) return void ways.push(way.slice());
      for (let k = 0; k < n; k++) {
        if (used[k] || !ok[i][k]) continue;
        used[k] = true;
        way.push(k);
        place(i + 1);
        way.pop();
        used[k] = false;
      }
    };
    place(0);
    return ways;
  }

  /** Whether completion `c` of a group may be request `r`'s: its own userData, and what it allows. */
  #fits(r: FuzzRequest, c: SharedGroup["got"][number]): boolean {
    return Object.is(r.userData, c.userData) && this.#allows(r, c.ret, c.errorMsg);
  }

  /** Whether request `r` may have completed with `ret` and `errorMsg` (the checks of #complete). */
  #allows(r: FuzzRequest, ret: number, errorMsg: string | null): boolean {
    const o = r.outcomes.find((o) => o.ret === ret);
    if (o === undefined) return r.cancelled && ret === -125;
    if (o.msg === null && errorMsg !== null) return false;
    if (o.msg instanceof RegExp && !o.msg.test(errorMsg ?? "")) return false;
    if (o.effect !== "check") return true;
    const dest = r.dest ?? [];
    if (r.start >= this.#disk.limit) {
      // Empty pieces too: one of a freed region is detached, and its methods throw.
      return dest.every((p, i) => p.length === 0 || p.length !== r.destLens[i] || p.every((x) => x === 0));
    }
    return this.#disk.agrees(r.start, dest, r.conflicts, r.destLens);
  }

  /** Checks the completion of `r` against the model, and applies it. */
  #complete(r: FuzzRequest, ret: number, errorMsg: string | null): void {
    r.ended = `ret ${ret}${errorMsg ? ` "${errorMsg}"` : ""}${r.cancelled ? ", cancelled" : ""}` +
      `${r.mayBeReaped ? ", maybe reaped" : ""}`;
    this.#inflight.remove(r);
    this.#stats.completions++;
    this.#history.settle(r.id, `completed with ${ret} at step ${this.#step}`);
    if (ret !== 0) this.#stats.failedRequests++;
    let outcome: Outcome | undefined = r.outcomes.find((o) => o.ret === ret);
    if (outcome === undefined && r.cancelled && ret === -125) {
      // A cancelled request never handed to the kernel did nothing; one cancelled there may
      // have been part-way (the rest of a short transfer).
      const before = errorMsg === "request cancelled before submission";
      outcome = { ret, effect: r.writes && !before ? "forget" : "none" };
    }
    const allowed = r.outcomes.map((o) => o.ret).join(", ");
    if (outcome === undefined) {
      this.#fail(
        `${r.describe} completed with ${ret} (${errorMsg}); the model allows ${allowed}` +
          `${r.cancelled ? " or -125 (cancelled)" : ""}`,
      );
    }
    if (ret === 0 && errorMsg !== null) this.#fail(`${r.describe} succeeded with errorMsg "${errorMsg}"`);
    if (errorMsg !== null && (typeof errorMsg !== "string" || errorMsg.length === 0)) {
      this.#fail(`${r.describe}: errorMsg ${JSON.stringify(errorMsg)} is not a message`);
    }
    if (outcome.msg === null && errorMsg !== null) {
      this.#fail(`${r.describe}: unexpected errorMsg "${errorMsg}"`);
    }
    if (outcome.msg instanceof RegExp && !outcome.msg.test(errorMsg ?? "")) {
      this.#fail(`${r.describe} (ret ${ret}): errorMsg ${JSON.stringify(errorMsg)} !~ ${outcome.msg}`);
    }
    if (ret === 0 && r.syncMark >= 0) this.#checkSynced(r);
    const d = this.#disk;
    const why = applyOutcome(d, r, outcome.effect, !this.#t.isBlockDevice, outcome.part);
    if (why !== null) {
      this.#fail(
        `${r.describe} read wrong data: ${why}; conflicts ${fmt(r.conflicts)}` +
          this.#history.explain(d, r.start, r.dest ?? [], r.destLens, r.conflicts) +
          probeWrongRead(this.#t, why),
      );
    }
    if (outcome.effect === "check" && r.start >= d.limit) this.#checkFarRead(r);
    if (outcome.effect === "check") this.#stats.bytesRead += r.len;
    else if (outcome.effect === "either" || outcome.part !== undefined) this.#stats.failedWrites++;
    if (outcome.ret === -5) this.#stats.eio++;
    const memory = r.buffersIntact();
    if (memory !== null) this.#fail(memory);
    r.release();
    this.#log.add(`  done ${r.describe}: ${ret}${errorMsg ? ` "${errorMsg}"` : ""}`);
  }

  /**
   * A flush or FUA write that succeeded synced the back-end (FuzzTarget.syncs): a driver that
   * dropped FUA on one path, or completed a flush without issuing it, left the data unsynced,
   * which nothing else here can see. Others in flight may have made the sync found, so a drop
   * shows when the request was the only one then.
   */
  #checkSynced(r: FuzzRequest): void {
    if (this.#t.syncs!() <= r.syncMark) {
      this.#fail(
        `${r.describe} succeeded, but the back-end was asked for no sync since it was queued ` +
          `(${r.op === "flush" ? "a flush not issued" : "FUA dropped"}?)`,
      );
    }
    this.#stats.syncsChecked++;
  }

  /** A read far past the end of the file (requests stay below the model's limit): all zeroes. */
  #checkFarRead(r: FuzzRequest): void {
    const dest = r.dest ?? [];
    for (let i = 0, at = 0; i < dest.length; at += r.destLens[i], i++) {
      const p = dest[i];
      // A piece detached meanwhile (its region freed) has nothing to check, nor an empty one
      // (detached too, whose findIndex would throw, when its region was freed).
      if (p.length === 0 || p.length !== r.destLens[i]) continue;
      const k = p.findIndex((x) => x !== 0);
      if (k >= 0) {
        this.#fail(
          `${r.describe}, far past the end of the file, read 0x${p[k].toString(16)} at byte ${at + k}, ` +
            `not zero (the offset cut short? offset ${r.start % 2 ** 32} holds 0x${
              this.#disk.byteAt(Math.min(this.#disk.limit - 1, r.start % 2 ** 32 + at + k)).value.toString(16)
            } in the model)`,
        );
      }
    }
    this.#stats.farReads++;
  }

  /** A random doIo / doIoInterruptible on a random queue, with its arguments' checks. */
  #doIo(m: QueueModel = this.#pickQueue()): void {
    const rng = this.#rng;
    const outstanding = pending(m);
    const intr = rng.chance(0.2);
    const kind = rng.weighted([[4, "empty"], [3, "prealloc"], [2, "reuse"], [1, "sealed"]] as const);
    let out: Completion[];
    if (kind === "empty") out = [];
    else if (kind === "reuse") out = m.out;
    else {
      out = Array.from({ length: rng.range(1, 48) }, newCompletion);
      if (kind === "sealed") Object.seal(out);
    }
    const before = out.slice();
    const mr = rng.int(100);
    const min = mr < 35
      ? 0
      : mr < 55
      ? Math.min(1, outstanding)
      : mr < 75
      ? rng.int(outstanding + 1)
      : mr < 95
      ? outstanding
      : outstanding + rng.range(1, 3);
    const xr = rng.int(100);
    let max: number | undefined;
    if (xr < 30) max = undefined;
    else if (xr < 33) max = 0;
    else if (xr < 36 && min > 0) max = min - 1;
    else max = min + rng.int(24);
    // A growable out array takes a larger max (doIo adds entries); the kept one stays as it is.
    if (kind === "reuse" && max !== undefined && max > out.length) max = out.length;
    if (kind === "sealed" && max !== undefined && max > out.length && rng.chance(0.7)) max = out.length;
    const tr = rng.int(100);
    let timeout: bigint | number | undefined;
    if (tr < 30 && min === 0) timeout = undefined;
    else if (tr < 45) timeout = 0;
    else if (tr < 55) timeout = 1;
    else if (tr < 65) timeout = 1_000_000;
    else timeout = rng.chance(0.5) ? LONG_TIMEOUT_NS : Number(LONG_TIMEOUT_NS);
    // A wait needs a timeout here: without one, a lost completion would hang the fuzzer.
    if (min > 0 && timeout === undefined) timeout = LONG_TIMEOUT_NS;
    const effMax = max === undefined ? (out.length === 0 && kind === "empty" ? Infinity : out.length) : max;
    const call = `${m.key} ${intr ? "doIoInterruptible" : "doIo"}(${kind}[${out.length}], min ${min}, max ` +
      `${max ?? "-"}, timeout ${timeout ?? "-"}) with ${outstanding} outstanding`;
    let expected: [string, RegExp] | null = null;
    if (kind === "sealed" && max !== undefined && max > out.length) {
      expected = ["EINVAL", /fixed-size out array/];
    } else if (min > effMax) expected = ["EINVAL", /must not exceed max/];
    else if (intr && m.poll) expected = ["ENOTSUP", /not supported on poll queues/];
    else if (min > outstanding) expected = ["EINVAL", /min_completions is larger than total outstanding/];
    // Whatever it does, it may hand everything queued so far to the kernel.
    for (const r of m.outstanding.values()) r.maybeSubmitted = true;
    this.#stats.doIo++;
    const fn = () => intr ? m.q.doIoInterruptible(out, min, max, timeout) : m.q.doIo(out, min, max, timeout);
    if (expected !== null) {
      this.#throws(call, fn, expected[0], expected[1]);
      // The outstanding check comes after a first reap, whose completions went back.
      if (expected[0] === "EINVAL" && min > outstanding) {
        for (const r of m.outstanding.values()) r.mayBeReaped = true;
      }
      return;
    }
    let n: number;
    try {
      n = fn();
    } catch (e) {
      const code = e instanceof BlkioError ? e.code : "";
      const short = timeout !== undefined && BigInt(timeout) < LONG_TIMEOUT_NS;
      if ((code === "ETIME" && short) || (code === "EINTR" && intr)) {
        if (code === "ETIME") this.#stats.timedOut++;
        else this.#stats.interrupted++;
        for (const r of m.outstanding.values()) r.mayBeReaped = true;
        this.#log.add(`${call} -> ${code}`);
        return;
      }
      if (code === "ETIME") {
        const left = [...m.outstanding.values()].slice(0, 8).map((r) => r.describe).join("; ");
        this.#fail(
          `${call} timed out after ${LONG_TIMEOUT_NS / 1_000_000_000n} s: lost completions? ${left}`,
        );
      }
      this.#fail(`${call} threw ${e instanceof BlkioError ? `${e.code}: ${e.message}` : e}`);
    }
    if (!Number.isInteger(n) || n < min || n > effMax || n > outstanding) {
      this.#fail(`${call} returned ${n}`);
    }
    for (let i = 0; i < Math.min(n, before.length); i++) {
      if (out[i] !== before[i]) this.#fail(`${call}: out[${i}] was replaced, not reused`);
    }
    this.#log.add(`${call} -> ${n}`);
    for (let i = 0; i < n; i++) this.#deliver(m, out[i]);
  }

  /** Reaps everything `m` can give now, without waiting. */
  #drainAvailable(m: QueueModel): void {
    const out = m.out;
    for (let rounds = 0; rounds < 1000; rounds++) {
      const n = this.#ok(`${m.key} doIo(0, ${out.length})`, () => m.q.doIo(out, 0, out.length));
      for (let i = 0; i < n; i++) this.#deliver(m, out[i]);
      if (n < out.length) return;
    }
  }

  /** Completes every outstanding request of every queue; nothing more may come back. */
  #drain(why: string): void {
    this.#log.add(`drain (${why})`);
    for (const m of this.#queues.values()) {
      for (const r of m.outstanding.values()) r.maybeSubmitted = true;
      const out: Completion[] = [];
      while (pending(m) > 0) {
        const want = Math.min(64, pending(m));
        let n = 0;
        try {
          n = m.q.doIo(out, 1, want, LONG_TIMEOUT_NS);
        } catch (e) {
          const left = [...m.outstanding.values()].slice(0, 8).map((r) => r.describe).join("; ");
          this.#fail(`${m.key} drain: doIo(1, ${want}) threw ${e}: lost completions? ${left}`);
        }
        for (let i = 0; i < n; i++) this.#deliver(m, out[i]);
      }
      const extra = this.#ok(`${m.key} doIo(0) after all completed`, () => m.q.doIo(out, 0, 16));
      if (extra !== 0) this.#fail(`${m.key}: ${extra} completions after every request had completed`);
      this.#throws(`${m.key} doIo(min 1) with nothing outstanding`, () => m.q.doIo(out, 1, 1), "EINVAL");
    }
  }

  /**
   * The completion fd: a number fixed for the queue's life (-1 on a poll queue), readable once
   * requests the kernel has complete, while enabled.
   */
  #completionFd(): void {
    const m = this.#pickQueue(), rng = this.#rng;
    const fd = this.#ok(`${m.key} completionFd`, () => m.q.completionFd);
    // io_uring signals every completion on the fd: nothing needs checking for by polling; a
    // dead vhost-user back-end signals nothing.
    this.#expectEqual(`${m.key} failureCheckMs`, m.q.failureCheckMs, this.#vhost ? 100 : 0);
    if (m.poll) return this.#expectEqual(`${m.key} completionFd of a poll queue`, fd, -1);
    if (fd < 0) this.#fail(`${m.key} completionFd ${fd}`);
    if (m.fd !== null) this.#expectEqual(`${m.key} completionFd again`, fd, m.fd);
    m.fd = fd;
    if (rng.chance(0.25)) {
      const on = rng.chance(0.6);
      this.#ok("setCompletionFdEnabled", () => m.q.setCompletionFdEnabled(on));
      m.fdEnabled = on;
      return this.#log.add(`${m.key} setCompletionFdEnabled(${on})`);
    }
    if (!m.fdEnabled) return;
    // Submit everything, take what is there, then wait on the fd for the rest.
    for (const r of m.outstanding.values()) r.maybeSubmitted = true;
    this.#ok(`${m.key} doIo(0, 0)`, () => m.q.doIo([], 0, 0));
    this.#drainAvailable(m);
    if (pending(m) === 0) return this.#log.add(`${m.key} completion fd ${fd}: nothing outstanding`);
    this.#stats.fdWaits++;
    const waited = waitEventfd(fd, 10_000);
    if (waited < 0) {
      this.#fail(
        `${m.key} completion fd ${fd} not readable after 10 s with ${pending(m)} requests ` +
          "outstanding (all submitted, none waiting to be reaped)",
      );
    }
    this.#log.add(`${m.key} completion fd ${fd} readable after ${waited.toFixed(1)} ms`);
    this.#drainAvailable(m);
  }

  // -------------------------------------------------------------------------------------------
  // The end: everything completes, then the target is read through a fresh instance and
  // through node:fs, and must hold what the model says.

  #finish(): void {
    if (this.#state === "started") this.#drain("end of run");
    if (this.#b !== null) this.#destroy();
    const t = this.#t, d = this.#disk;
    const len = t.isBlockDevice ? t.size : d.limit;
    const b = Blkio.create(t.driver);
    try {
      b.setStr("path", t.path);
      if (!this.#vhost) b.setBool("direct", t.direct);
      b.connect();
      b.start();
      const q = b.getQueue(0)!;
      const chunk = 64 * KiB;
      const region = b.allocMemRegion(chunk);
      if (this.#vhost) b.mapMemRegion(region);
      const out: Completion[] = [];
      for (const [at, n] of readableSpans(t, len, chunk)) {
        const buf = region.bytes.subarray(0, n);
        q.read(t.base + at, buf, at);
        if (q.doIo(out, 1, 1, LONG_TIMEOUT_NS) !== 1 || out[0].ret !== 0) {
          this.#fail(`final read at ${at}: ${out[0]?.ret} ${out[0]?.errorMsg}`);
        }
        const why = d.check(at, [buf], []);
        if (why !== null) this.#fail(`final read through a fresh instance: ${why}`);
      }
      if (!t.isBlockDevice) this.#capacityAtEnd(Number(b.getUint64("capacity")) - t.base);
    } finally {
      b.destroy();
    }
    const why = d.check(0, [readThroughFs(t.image, len, t.base)], []);
    if (why !== null) this.#fail(`final read through node:fs: ${why}`);
    this.#log.add(`end: ${len} bytes verified through a fresh instance and node:fs`);
  }

  #capacityAtEnd(cap: number): void {
    const d = this.#disk;
    if (!d.sizeAllows(cap)) {
      this.#fail(`capacity at the end ${cap}, the model allows [${d.sizeLo}, ${d.sizeHi}]`);
    }
  }
}

/** A userData for a message (objects as JSON: `{"id":12}`). */
function show(v: unknown): string {
  if (typeof v === "object" && v !== null) return JSON.stringify(v);
  if (typeof v === "function") return `a function (id ${(v as { id?: number }).id})`;
  if (typeof v === "string") return JSON.stringify(v);
  if (Object.is(v, -0)) return "-0";
  return typeof v === "bigint" ? `${v}n` : String(v);
}

function fmt(list: readonly Interval[]): string {
  return list.length === 0 ? "none" : list.map(([s, e]) => `[${s}, ${e})`).join(" ");
}

/**
 * Waits until eventfd `fd` (O_NONBLOCK) is readable, reading it; returns the milliseconds it
 * took, or -1 after `timeoutMs`. Through libc: Deno's node:fs takes no raw fds.
 */
function waitEventfd(fd: number, timeoutMs: number): number {
  const native = requireNative();
  const buf = native.alloc(8);
  const t0 = performance.now();
  for (let spins = 0;; spins++) {
    if (native.libc.read(fd, buf, 8n) === 8n) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) return -1;
    if (spins > 50) Atomics.wait(SLEEPER, 0, 0, 1);
  }
}
