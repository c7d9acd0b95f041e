/**
 * What blkio_bench's main thread and its Workers share: the messages they exchange, the
 * statistics, and the properties the `--event` mode understands.
 *
 * @module
 */
import type { BlockDeviceOpenOptions } from "../mod.ts";

/** Access pattern, as libblkio's `--readwrite`. */
export type ReadWrite = "read" | "write" | "randread" | "randwrite";

/** Whether the workload only reads (blkio_bench then opens the device read-only, as libblkio). */
export function isReadWorkload(rw: ReadWrite): boolean {
  return rw === "read" || rw === "randread";
}

/** How a thread waits for completions. */
export type WaitMode = "wait" | "poll" | "event";

/** What the main thread sends each worker. */
export interface WorkerConfig {
  index: number;
  driver: string;
  /** `<property>=<value>` assignments from the command line, in order. */
  props: [string, string][];
  readwrite: ReadWrite;
  blocksize: number;
  iodepth: number;
  /** Submit as soon as this many requests are queued (iodepth: with the next wait). */
  iodepthBatch: number;
  mode: WaitMode;
  /** Device capacity in bytes, as the main thread read it. */
  capacity: number;
  /** First sequential offset of this thread. */
  startOffset: number;
  /** {@link SHARED_FLAGS} Int32 flags, then one Float64 completion count per thread. */
  shared: SharedArrayBuffer;
  /** Whether the run starts with a warm-up that ends when {@link Flag.Measure} is set. */
  ramp: boolean;
  /** Record a latency histogram (`--latency-percentiles`). */
  latencyPercentiles: boolean;
  /** Time one request in this many (`--latency-sample`; 1: every request, libblkio's way). */
  latencySample: number;
}

/** Per-thread results, as libblkio's `struct io_stats` (latencies in nanoseconds). */
export interface ThreadStats {
  count: number;
  /** Requests whose latency was recorded (all of them unless `--latency-sample` > 1). */
  timed: number;
  runtimeSecs: number;
  minLatencyNs: number;
  maxLatencyNs: number;
  totalLatencyNs: number;
  calls: number;
  minCompletions: number;
  maxCompletions: number;
  /** Latency histogram ({@link latencyBucket}), or null when not recorded. */
  histogram: Uint32Array | null;
}

/** What a worker posts back. */
export type WorkerMessage =
  | "ready"
  | { type: "init" }
  | { type: "error"; message: string }
  | { type: "stats"; stats: ThreadStats };

/** The properties `--event` can pass to `BlockDevice.open`, and how. */
export const EVENT_PROPERTIES: Readonly<Record<string, (o: BlockDeviceOpenOptions, v: string) => void>> = {
  "path": () => {},
  "direct": (o, v) => (o.direct = v === "true"),
  "read-only": (o, v) => (o.readOnly = v === "true"),
  "num-entries": (o, v) => (o.numEntries = Number(v)),
};

/** The Int32 flags at the start of {@link WorkerConfig.shared}, set by the main thread. */
export const Flag = {
  /** Go: the workers start their I/O. */
  Start: 0,
  /** Stop: the workers finish and report. */
  Stop: 1,
  /** The warm-up (`--ramp-time`) is over: the workers reset their statistics and measure. */
  Measure: 2,
} as const;

/** How many Int32 flags the shared buffer starts with (one spare keeps the counts aligned). */
export const SHARED_FLAGS = 4;

/** Byte offset of the Float64 completion counts (one per thread) in the shared buffer. */
export const SHARED_COUNTS = SHARED_FLAGS * 4;

/** Empty statistics (minimums at +Infinity until the first completion). */
export function newStats(): ThreadStats {
  return {
    count: 0,
    timed: 0,
    runtimeSecs: 0,
    minLatencyNs: Infinity,
    maxLatencyNs: 0,
    totalLatencyNs: 0,
    calls: 0,
    minCompletions: Infinity,
    maxCompletions: 0,
    histogram: null,
  };
}

/** Back to {@link newStats}' values, keeping (and emptying) the histogram: the warm-up's end. */
export function resetStats(stats: ThreadStats): void {
  const hist = stats.histogram;
  Object.assign(stats, newStats());
  stats.histogram = hist;
  hist?.fill(0);
}

/**
 * Buckets of the latency histogram: exact below 64 ns, then 32 per power of two (about 3%
 * wide), up to 2^31 ns. A fixed array, so recording allocates nothing.
 */
export const HISTOGRAM_BUCKETS = 27 * 32;

/** The histogram bucket of a latency in nanoseconds. */
export function latencyBucket(ns: number): number {
  const v = ns >= 2147483647 ? 2147483647 : ns < 0 ? 0 : ns | 0;
  if (v < 64) return v;
  const shift = 26 - Math.clz32(v); // log2(v) - 5: keeps the top 6 bits
  return (shift + 1) * 32 + (v >>> shift) - 32;
}

/** The middle of bucket `i`, in nanoseconds. */
function bucketMiddle(i: number): number {
  if (i < 64) return i;
  const shift = Math.floor(i / 32) - 1;
  const m = (i % 32) + 32;
  return (m + 0.5) * 2 ** shift;
}

/** The `p`-th percentile (0-100) of a histogram, in nanoseconds (0 when empty). */
export function histogramPercentile(hist: Uint32Array, p: number): number {
  let total = 0;
  for (let i = 0; i < hist.length; i++) total += hist[i];
  if (total === 0) return 0;
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i];
    if (seen >= rank) return bucketMiddle(i);
  }
  return bucketMiddle(hist.length - 1);
}
