/**
 * What blkio_bench's main thread and its Workers share: the messages they exchange, the
 * statistics, and the properties the `--event` mode understands.
 *
 * @module
 */
import type { BlockDeviceOpenOptions } from "../mod.ts";

/** Access pattern, as libblkio's `--readwrite`. */
export type ReadWrite = "read" | "write" | "randread" | "randwrite";

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
  mode: WaitMode;
  /** Device capacity in bytes, as the main thread read it. */
  capacity: number;
  /** First sequential offset of this thread. */
  startOffset: number;
  /** Int32 [0] start flag, [1] stop flag; then one Float64 completion count per thread at byte 8. */
  shared: SharedArrayBuffer;
}

/** Per-thread results, as libblkio's `struct io_stats` (latencies in nanoseconds). */
export interface ThreadStats {
  count: number;
  runtimeSecs: number;
  minLatencyNs: number;
  maxLatencyNs: number;
  totalLatencyNs: number;
  calls: number;
  minCompletions: number;
  maxCompletions: number;
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

/** Empty statistics (minimums at +Infinity until the first completion). */
export function newStats(): ThreadStats {
  return {
    count: 0,
    runtimeSecs: 0,
    minLatencyNs: Infinity,
    maxLatencyNs: 0,
    totalLatencyNs: 0,
    calls: 0,
    minCompletions: Infinity,
    maxCompletions: 0,
  };
}
