/**
 * One blkio_bench thread: a Worker with its own blkio instance and queue on the benchmark
 * target (JS objects cannot be shared between Workers, so each opens the target itself).
 *
 * Protocol: the worker posts `"ready"` once loaded; the main thread sends a {@link WorkerConfig};
 * the worker sets up and posts `{ type: "init" }` (or `{ type: "error" }`), waits on the shared
 * start flag, runs until the shared stop flag is set, then posts `{ type: "stats" }`.
 *
 * @module
 */
import {
  Blkio,
  BlockDevice,
  type BlockDeviceOpenOptions,
  type Completion,
  newCompletion,
  type Queue,
} from "../mod.ts";
import {
  EVENT_PROPERTIES,
  Flag,
  HISTOGRAM_BUCKETS,
  isReadWorkload,
  latencyBucket,
  newStats,
  resetStats,
  SHARED_COUNTS,
  SHARED_FLAGS,
  type ThreadStats,
  type WorkerConfig,
  type WorkerMessage,
} from "./_bench_shared.ts";
import { errnoAndMsg, errorMsg, retText, setPropertiesAndConnect } from "./_cli.ts";

const EBADF = 9;
/** The io_uring driver's reason for a write refused on a read-only instance (the wait modes print it). */
const READ_ONLY_MSG = "The instance is read-only (read-only=true): requests that write fail with EBADF";

interface WorkerScope {
  onmessage: ((e: MessageEvent<WorkerConfig>) => void) | null;
  postMessage(message: WorkerMessage): void;
}
const scope = globalThis as unknown as WorkerScope;

class SetupError extends Error {}

function step<T>(what: (e: unknown) => string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new SetupError(what(e));
  }
}

/** Offsets of one thread: sequential (wrapping before the end) or random, block aligned. */
class Offsets {
  readonly #random: boolean;
  readonly #blocksize: number;
  readonly #blocks: number;
  #next: number;
  /**
   * xorshift32 state, seeded per thread. Not Math.random(): on Deno (V8) every call of it
   * allocates a 16-byte heap number, which the allocation check then counted against the
   * library (libblkio's blkio-bench uses random_r, a PRNG of its own too).
   */
  #x = ((Math.random() * 4294967296) >>> 0) || 1;

  constructor(cfg: WorkerConfig) {
    this.#random = cfg.readwrite === "randread" || cfg.readwrite === "randwrite";
    this.#blocksize = cfg.blocksize;
    this.#blocks = Math.floor(cfg.capacity / cfg.blocksize);
    this.#next = Math.floor(cfg.startOffset / cfg.blocksize) * cfg.blocksize;
    // A thread whose share starts in the tail (past the last whole block) wraps at once: it read
    // and wrote past the capacity (EIO on a device, a grown file).
    if (this.#next + cfg.blocksize > this.#blocks * cfg.blocksize) this.#next = 0;
  }

  next(): number {
    if (this.#random) {
      let x = this.#x;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.#x = x;
      return Math.floor(((x >>> 0) / 4294967296) * this.#blocks) * this.#blocksize;
    }
    const off = this.#next;
    this.#next += this.#blocksize;
    if (this.#next + this.#blocksize > this.#blocks * this.#blocksize) this.#next = 0;
    return off;
  }
}

function openInstance(cfg: WorkerConfig): { b: Blkio; q: Queue; bufs: Uint8Array[] } {
  const b = step(
    (e) => `Failed to create blkio driver "${cfg.driver}": ${errorMsg(e)}`,
    () => Blkio.create(cfg.driver),
  );
  setPropertiesAndConnect(b, cfg.props, isReadWorkload(cfg.readwrite), (message) => {
    throw new SetupError(message);
  });
  step((e) => `Failed to set num-queues: ${errorMsg(e)}`, () => b.setInt("num-queues", 1));
  step((e) => `Unable to start: ${errorMsg(e)}`, () => b.start());
  const len = cfg.iodepth * cfg.blocksize;
  const align = Number(b.getUint64("mem-region-alignment"));
  const region = step(
    (e) => `Failed to allocate I/O buffer memory: ${errorMsg(e)}`,
    () => b.allocMemRegion(Math.ceil(len / align) * align),
  );
  step((e) => `Failed to map memory region: ${errorMsg(e)}`, () => b.mapMemRegion(region));
  const bufs: Uint8Array[] = [];
  for (let i = 0; i < cfg.iodepth; i++) {
    bufs.push(region.bytes.subarray(i * cfg.blocksize, (i + 1) * cfg.blocksize));
  }
  return { b, q: b.getQueue(0)!, bufs };
}

/**
 * The blocking loop of the `wait` and `poll` modes: a request's userData is its index, its
 * start time lives in `started` (-1: not timed, with `--latency-sample`).
 */
function runQueue(
  cfg: WorkerConfig,
  q: Queue,
  bufs: Uint8Array[],
  flags: Int32Array,
  counts: Float64Array,
): ThreadStats {
  const stats = newStats();
  const hist = cfg.latencyPercentiles ? new Uint32Array(HISTOGRAM_BUCKETS) : null;
  stats.histogram = hist;
  const offsets = new Offsets(cfg);
  const isRead = isReadWorkload(cfg.readwrite);
  const depth = cfg.iodepth;
  const poll = cfg.mode === "poll";
  const started = new Float64Array(depth);
  const out: Completion[] = Array.from({ length: depth }, newCompletion);
  Object.preventExtensions(out);
  const batch = cfg.iodepthBatch;
  const submitOnly: Completion[] = [];
  Object.preventExtensions(submitOnly);
  const sample = cfg.latencySample;
  let untilTimed = 0;
  const queue = (i: number): void => {
    if (isRead) q.read(offsets.next(), bufs[i], i);
    else q.write(offsets.next(), bufs[i], i);
  };
  // Every request timed: its latency starts at `now`, the clock read of the batch that freed
  // its slot, a little before it is really submitted (one clock read per batch instead of two,
  // and the error only ever adds to the latencies reported). One in `sample`: that one reads
  // the clock itself, the others not at all.
  const submit = sample === 1
    ? (i: number, now: number): void => {
      started[i] = now;
      queue(i);
    }
    : (i: number): void => {
      if (untilTimed === 0) {
        untilTimed = sample - 1;
        started[i] = performance.now();
      } else {
        untilTimed--;
        started[i] = -1;
      }
      queue(i);
    };
  // libblkio's --poll disables completion notifications: nobody reads the eventfd.
  if (poll) q.setCompletionFdEnabled(false);

  Atomics.wait(flags, Flag.Start, 0);
  let t0 = performance.now();
  let ramping = cfg.ramp;
  for (let i = 0; i < depth; i++) submit(i, t0);
  for (;;) {
    if (Atomics.load(flags, Flag.Stop) !== 0) break;
    if (ramping && Atomics.load(flags, Flag.Measure) !== 0) {
      // The warm-up is over: what was counted so far is dropped. Requests in flight keep
      // their start times, so their latencies stay whole.
      ramping = false;
      resetStats(stats);
      t0 = performance.now();
    }
    stats.calls++;
    const n = q.doIo(out, poll ? 0 : 1, depth);
    if (n === 0) continue;
    let now = sample === 1 ? performance.now() : -1;
    if (n < stats.minCompletions) stats.minCompletions = n;
    if (n > stats.maxCompletions) stats.maxCompletions = n;
    for (let k = 0; k < n; k++) {
      const c = out[k];
      const i = c.userData as number;
      if (c.ret !== 0) throw new Error(`I/O request failed: ${retText(c.ret, c.errorMsg)}`);
      const start = started[i];
      if (start < 0) continue;
      if (now < 0) now = performance.now();
      stats.timed++;
      const lat = now - start;
      if (lat < stats.minLatencyNs) stats.minLatencyNs = lat;
      if (lat > stats.maxLatencyNs) stats.maxLatencyNs = lat;
      stats.totalLatencyNs += lat;
      if (hist !== null) hist[latencyBucket(lat * 1e6)]++;
    }
    stats.count += n;
    counts[cfg.index] = stats.count;
    if (batch >= n) {
      for (let k = 0; k < n; k++) submit(out[k].userData as number, now);
    } else {
      // --iodepth-batch: hand each full batch to the kernel at once (doIo with max 0 only
      // submits); the rest goes with the next wait.
      for (let k = 0; k < n; k++) {
        submit(out[k].userData as number, now);
        if ((k + 1) % batch === 0) q.doIo(submitOnly, 0, 0);
      }
    }
  }
  const t1 = performance.now();
  // Every request is resubmitted as it completes, so `depth` are in flight: let them finish
  // before the instance goes away (not counted).
  let inFlight = depth;
  while (inFlight > 0) inFlight -= q.doIo(out, 1, depth);
  return finish(stats, t0, t1);
}

async function openDevice(cfg: WorkerConfig): Promise<{ dev: BlockDevice; bufs: Uint8Array[] }> {
  const opts: BlockDeviceOpenOptions = { driver: cfg.driver };
  let path = "";
  for (const [k, v] of cfg.props) {
    if (k === "path") path = v;
    else EVENT_PROPERTIES[k](opts, v);
  }
  if (isReadWorkload(cfg.readwrite)) opts.readOnly = true;
  let dev: BlockDevice;
  try {
    dev = await BlockDevice.open(path, opts);
  } catch (e) {
    throw new SetupError(`Unable to open with BlockDevice: ${errnoAndMsg(e)}`);
  }
  const bufs = step(
    (e) => `Failed to allocate I/O buffer memory: ${errorMsg(e)}`,
    () => Array.from({ length: cfg.iodepth }, () => dev.allocBuffer(cfg.blocksize)),
  );
  return { dev, bufs };
}

/**
 * The `event` mode: `iodepth` async loops, each awaiting one request at a time through the
 * promise layer. A "call" is one batch of completions delivered together (the continuations
 * resumed before the next macrotask or submission flush).
 */
async function runEvents(
  cfg: WorkerConfig,
  dev: BlockDevice,
  bufs: Uint8Array[],
  flags: Int32Array,
  counts: Float64Array,
): Promise<ThreadStats> {
  const stats = newStats();
  const hist = cfg.latencyPercentiles ? new Uint32Array(HISTOGRAM_BUCKETS) : null;
  stats.histogram = hist;
  const offsets = new Offsets(cfg);
  const isRead = isReadWorkload(cfg.readwrite);
  let batch = 0;
  let t0 = 0;
  let t1 = -1;
  let ramping = cfg.ramp;
  const closeBatch = (): void => {
    if (batch < stats.minCompletions) stats.minCompletions = batch;
    if (batch > stats.maxCompletions) stats.maxCompletions = batch;
    batch = 0;
  };
  const lane = async (buf: Uint8Array): Promise<void> => {
    // As in the wait mode, a request's latency starts when the previous one of its lane was
    // seen complete, a little before it is really submitted: one clock read per request.
    let t = performance.now();
    for (;;) {
      const off = offsets.next();
      await (isRead ? dev.read(off, buf) : dev.write(off, buf));
      const now = performance.now();
      if (Atomics.load(flags, Flag.Stop) !== 0) {
        if (t1 < 0) t1 = now;
        return;
      }
      if (ramping && Atomics.load(flags, Flag.Measure) !== 0) {
        // The warm-up is over (seen by the first lane to look): start counting from here.
        ramping = false;
        resetStats(stats);
        t0 = now;
      }
      if (batch === 0) {
        stats.calls++;
        queueMicrotask(closeBatch);
      }
      batch++;
      const lat = now - t;
      if (lat < stats.minLatencyNs) stats.minLatencyNs = lat;
      if (lat > stats.maxLatencyNs) stats.maxLatencyNs = lat;
      stats.totalLatencyNs += lat;
      if (hist !== null) hist[latencyBucket(lat * 1e6)]++;
      counts[cfg.index] = ++stats.count;
      stats.timed++;
      t = now;
    }
  };
  Atomics.wait(flags, Flag.Start, 0);
  t0 = performance.now();
  try {
    await Promise.all(bufs.map(lane));
  } catch (e) {
    const errno = (e as { errno?: number }).errno;
    // A write workload is read-only only by the read-only=true the user typed, which this tool
    // passes on as BlockDevice's readOnly option (EVENT_PROPERTIES): BlockDevice's reason named
    // that option, which the user never saw. The reason the other modes print names the property.
    const msg = errno === EBADF && !isRead && dev.readOnly ? READ_ONLY_MSG : errorMsg(e);
    throw new Error(`I/O request failed: ${errno === undefined ? msg : retText(-errno, msg)}`);
  }
  return finish(stats, t0, t1);
}

/** Converts the millisecond clock readings to libblkio's nanosecond statistics. */
function finish(stats: ThreadStats, t0: number, t1: number): ThreadStats {
  stats.runtimeSecs = (t1 - t0) / 1000;
  stats.minLatencyNs *= 1e6;
  stats.maxLatencyNs *= 1e6;
  stats.totalLatencyNs *= 1e6;
  return stats;
}

async function run(cfg: WorkerConfig): Promise<void> {
  const flags = new Int32Array(cfg.shared, 0, SHARED_FLAGS);
  const counts = new Float64Array(cfg.shared, SHARED_COUNTS);
  let stats: ThreadStats;
  let b: Blkio | null = null;
  let dev: BlockDevice | null = null;
  try {
    if (cfg.mode === "event") {
      const opened = await openDevice(cfg);
      dev = opened.dev;
      scope.postMessage({ type: "init" });
      stats = await runEvents(cfg, opened.dev, opened.bufs, flags, counts);
    } else {
      const opened = openInstance(cfg);
      b = opened.b;
      scope.postMessage({ type: "init" });
      stats = runQueue(cfg, opened.q, opened.bufs, flags, counts);
    }
  } catch (e) {
    scope.postMessage({ type: "error", message: e instanceof SetupError ? e.message : errorMsg(e) });
    return;
  } finally {
    b?.destroy();
    await dev?.close();
  }
  scope.postMessage({ type: "stats", stats });
}

scope.onmessage = (e) => void run(e.data);
scope.postMessage("ready");
