/**
 * blkio_bench — measure a block I/O workload, as libblkio's `blkio-bench`.
 *
 *   blkio_bench [--num-threads=<n>] [--iodepth=<n>] [--readwrite=read|write|randread|randwrite]
 *               [--blocksize=<bytes>] [--runtime=<seconds>] [--poll | --event]
 *               [--iodepth-batch=<n>] [--ramp-time=<seconds>] [--latency-sample=<n>]
 *               [--latency-percentiles] [--cpu-usage]
 *               <driver> <property>=<value> ...
 *
 * Each thread is a Worker with its own instance and queue on the target; it keeps `iodepth`
 * requests of `blocksize` bytes in flight for `runtime` seconds. Read workloads set
 * `read-only=true`, as libblkio does. Sequential offsets start at thread i's share of the
 * device and wrap before the end; random offsets are block-size aligned. The results are
 * libblkio's JSON: aggregate and per-thread `kiops`, `gips` (GiB/s), `min/mean/max_lat_us`,
 * `calls` (doIo calls, or event-loop wakeups with `--event`) and `min/mean/max_completions`
 * per call.
 *
 * Wait modes: by default a thread waits in `doIo(min=1)` (for a thread that does nothing else
 * this is the fastest correct wait: one io_uring_enter submits and sleeps until a completion).
 * `--poll` busy-polls `doIo(min=0)` as libblkio's `--poll` does. `--event` (added here) drives
 * the requests through the promise layer, `BlockDevice`, on the Worker's event loop, to show
 * what the event-driven path costs. On a terminal a progress line is shown on stderr.
 *
 * Submission (added here): by default, as in libblkio, the requests that replace completed ones
 * are queued and go to the kernel together with the next wait, one `io_uring_enter` per turn.
 * `--iodepth-batch=<n>` submits as soon as `n` are queued (`doIo(min=0, max=0)`), as fio's
 * `iodepth_batch_submit` does (fio's default is 1: each request is submitted when it is queued).
 * Smaller batches cost more system calls but feed the device sooner.
 *
 * Warm-up (added here, fio's `ramp_time`): `--ramp-time=<seconds>` (decimals allowed) runs the
 * workload that long before the measured `runtime` starts and discards what it did, so the
 * figures are the steady state's and not the JIT compiler's warm-up: on Deno the first 250 ms
 * of a 4 KiB page-cached read loop ran at 0.6x-0.85x of the speed that followed (2026-12-05).
 *
 * Clock reads (added here): by default every request is timed, one clock read per completion
 * batch as in libblkio. `--latency-sample=<n>` times one request in n (two clock reads each:
 * when it is queued and when its completion is seen) and only counts the others, as fio's
 * `gtod_reduce` spares clock calls: on Deno `performance.now()` cost 0.3-0.5 µs right after
 * a system call (2026-12-05), a tenth of a whole request at iodepth 1. The latency figures then
 * come from that sample; `kiops`, `calls` and the completions per call still count every
 * request. Not with `--event`.
 *
 * Two opt-in flags (added here; without them the JSON is exactly libblkio's) append fields:
 * `--latency-percentiles` records a latency histogram (about 3% resolution) and adds
 * `p50_lat_us` and `p99_lat_us` to the aggregate and to each thread; `--cpu-usage` adds
 * `cpu_usr_us` and `cpu_sys_us` to the aggregate: the CPU time of the whole process (every
 * thread) between the start and the end of the measurement, from `process.cpuUsage()`.
 *
 *   $ deno run -A examples/blkio_bench.ts --runtime=5 --iodepth=16 io_uring path=disk.img
 *
 * @module
 */
import process from "node:process";
import { Blkio } from "../mod.ts";
import {
  EVENT_PROPERTIES,
  Flag,
  HISTOGRAM_BUCKETS,
  histogramPercentile,
  isReadWorkload,
  newStats,
  type ReadWrite,
  SHARED_COUNTS,
  SHARED_FLAGS,
  type ThreadStats,
  type WaitMode,
  type WorkerConfig,
  type WorkerMessage,
} from "./_bench_shared.ts";
import {
  commandArgs,
  die,
  errorMsg,
  exit,
  fixed,
  formatDuration,
  getoptLong,
  printErr,
  printOut,
  Progress,
  setPropertiesAndConnect,
  strtoul,
} from "./_cli.ts";

const PROG = "blkio_bench";
const GIB = 2 ** 30;
const UINT_MAX = 4294967295;

interface Config {
  numThreads: number;
  iodepth: number;
  readwrite: ReadWrite;
  blocksize: number;
  runtimeSecs: number;
  mode: WaitMode;
  /** Submit once this many requests are queued (at most iodepth; iodepth = libblkio's way). */
  iodepthBatch: number | null;
  /** Seconds of I/O before the measurement starts, not counted (fio's ramp_time). */
  rampSecs: number;
  latencyPercentiles: boolean;
  latencySample: number;
  cpuUsage: boolean;
}

function usageText(): string {
  return `Usage: ${PROG}\n` +
    "          [--num-threads=<n>]  (default: 1)\n" +
    "          [--iodepth=<n>]  (default: 1)\n" +
    "          [--readwrite=read|write|randread|randwrite]  (default: read)\n" +
    "          [--blocksize=<bytes>]  (default: 4096)\n" +
    "          [--runtime=<seconds>]  (default: 30)\n" +
    "          [--poll]\n" +
    "          [--event]\n" +
    "          [--iodepth-batch=<n>]  (default: iodepth)\n" +
    "          [--ramp-time=<seconds>]  (default: 0)\n" +
    "          [--latency-sample=<n>]  (default: 1, every request)\n" +
    "          [--latency-percentiles]\n" +
    "          [--cpu-usage]\n" +
    "          <driver> <property>=<value> ...\n" +
    "\n" +
    "Measure performance statistics for a given I/O workload.\n" +
    "\n" +
    "Results are outputted as JSON, reporting aggregate and per-thread\n" +
    "throughput (in thousands of requests per second and GiB per second)\n" +
    "and min/mean/max latency in microseconds.\n";
}

/** How long the workers may take to finish their requests once the run has ended. */
const STOP_GRACE_MS = 10_000;
/** The most requests a thread keeps in flight, and the most buffer memory they may take. */
const MAX_IODEPTH = 65536;
/**
 * The most threads (Workers, each a JavaScript engine of its own): 4294967295 ended in an
 * uncaught RangeError with its stack trace, allocating their shared counters.
 */
const MAX_THREADS = 1024;
const MAX_BUFFER_BYTES = 2 ** 31;

function badUsage(error: string): never {
  printErr(`${error}\n\n${usageText()}`);
  exit(1);
}

function positive(text: string | undefined, error: string): number {
  // Digits only: strtoul (libblkio's parser) took "4k" as 4 and "2x" as 2 without a word.
  if (!/^\+?\d+$/.test(text ?? "")) badUsage(error);
  const v = strtoul(text ?? "");
  if (v > UINT_MAX || v === 0) badUsage(error);
  return v;
}

function parseArgs(argv: string[]): { config: Config; driver: string; props: string[] } {
  const config: Config = {
    numThreads: 1,
    iodepth: 1,
    readwrite: "read",
    blocksize: 4096,
    runtimeSecs: 30,
    mode: "wait",
    iodepthBatch: null,
    rampSecs: 0,
    latencyPercentiles: false,
    latencySample: 1,
    cpuUsage: false,
  };
  const rest: string[] = [];
  const spec = {
    progname: PROG,
    long: [
      { name: "help", hasArg: false },
      { name: "num-threads", hasArg: true },
      { name: "iodepth", hasArg: true },
      { name: "readwrite", hasArg: true },
      { name: "blocksize", hasArg: true },
      { name: "runtime", hasArg: true },
      { name: "poll", hasArg: false },
      { name: "event", hasArg: false },
      { name: "iodepth-batch", hasArg: true },
      { name: "ramp-time", hasArg: true },
      { name: "latency-sample", hasArg: true },
      { name: "latency-percentiles", hasArg: false },
      { name: "cpu-usage", hasArg: false },
    ],
    short: { h: "help" },
    inOrder: false,
  };
  for (const ev of getoptLong(argv, spec, rest)) {
    if (ev.kind === "error") {
      printErr(`${ev.message}\n`);
      badUsage("Unrecognized option");
    }
    if (ev.kind !== "option") continue;
    switch (ev.name) {
      case "help":
        printOut(usageText());
        exit(0);
        break;
      case "num-threads":
        config.numThreads = positive(ev.value, "Invalid number of threads");
        break;
      case "iodepth":
        config.iodepth = positive(ev.value, "Invalid iodepth");
        break;
      case "readwrite":
        if (
          ev.value === "read" || ev.value === "write" || ev.value === "randread" || ev.value === "randwrite"
        ) {
          config.readwrite = ev.value;
        } else {
          badUsage("Invalid readwrite option");
        }
        break;
      case "blocksize":
        config.blocksize = positive(ev.value, "Invalid blocksize");
        break;
      case "runtime":
        config.runtimeSecs = positive(ev.value, "Invalid runtime");
        break;
      case "poll":
      case "event":
        if (config.mode !== "wait" && config.mode !== ev.name) {
          badUsage("--poll and --event cannot be combined");
        }
        config.mode = ev.name;
        break;
      case "iodepth-batch":
        config.iodepthBatch = positive(ev.value, "Invalid iodepth-batch");
        break;
      case "ramp-time": {
        // Seconds, decimals allowed; at most a day, like any sane warm-up.
        const v = /^\d+(\.\d+)?$/.test(ev.value ?? "") ? Number(ev.value) : NaN;
        if (!(v >= 0 && v <= 86400)) badUsage("Invalid ramp-time");
        config.rampSecs = v;
        break;
      }
      case "latency-sample":
        config.latencySample = positive(ev.value, "Invalid latency-sample");
        break;
      case "latency-percentiles":
        config.latencyPercentiles = true;
        break;
      case "cpu-usage":
        config.cpuUsage = true;
        break;
    }
  }
  if (rest.length === 0) badUsage("Missing blkio driver name argument");
  // Each thread allocates iodepth buffers up front: 2^32 - 1 of them ran Deno out of memory
  // after minutes (CLI hunt).
  if (config.iodepth > MAX_IODEPTH) badUsage(`Invalid iodepth (at most ${MAX_IODEPTH})`);
  if (config.numThreads > MAX_THREADS) badUsage(`Invalid number of threads (at most ${MAX_THREADS})`);
  if (config.iodepth * config.blocksize > MAX_BUFFER_BYTES) {
    badUsage(
      `iodepth times blocksize must not exceed ${MAX_BUFFER_BYTES} bytes (the buffers of each thread)`,
    );
  }
  // One instance per Worker (JS objects cannot cross threads), where libblkio runs its threads
  // on the queues of one instance: a vhost-user back-end serves one client, so the second
  // thread waited 10 s and failed (CLI hunt).
  if (config.numThreads > 1 && rest[0].startsWith("virtio-blk")) {
    badUsage(
      `--num-threads above 1 opens one connection per thread, and a ${rest[0]} back-end serves one ` +
        "client: use one thread",
    );
  }
  if (config.latencySample > 1 && config.mode === "event") {
    badUsage("--latency-sample does not apply to --event (each lane reads the clock once per request)");
  }
  if (config.iodepthBatch !== null) {
    if (config.iodepthBatch > config.iodepth) badUsage("iodepth-batch must not exceed iodepth");
    if (config.mode === "event") {
      badUsage("--iodepth-batch does not apply to --event (BlockDevice submits once per event-loop turn)");
    }
  }
  return { config, driver: rest[0], props: rest.slice(1) };
}

/**
 * Checks the command line on an instance of the main thread, as libblkio does before starting
 * its threads, and returns the capacity; fills `props` with the parsed assignments for the
 * workers. Exits with libblkio's messages on errors.
 */
function probe(config: Config, driver: string, args: string[], props: [string, string][]): number {
  let b: Blkio;
  try {
    b = Blkio.create(driver);
  } catch (e) {
    die(`Failed to create blkio driver "${driver}": ${errorMsg(e)}`);
  }
  for (const arg of args) {
    const eq = arg.indexOf("=");
    if (eq < 0) die(`${arg}: missing property value`);
    props.push([arg.slice(0, eq), arg.slice(eq + 1)]);
  }
  setPropertiesAndConnect(b, props, isReadWorkload(config.readwrite), die);
  let capacity: number;
  try {
    capacity = Number(b.getUint64("capacity"));
  } catch (e) {
    die(`Unable to get device capacity: ${errorMsg(e)}`);
  }
  b.destroy();
  if (capacity < config.blocksize) {
    die(`Device capacity (${capacity} bytes) is smaller than the block size (${config.blocksize} bytes)`);
  }
  return capacity;
}

function statsLines(
  config: Config,
  s: ThreadStats,
  indent: string,
  cpu: { user: number; system: number } | null = null,
): string {
  const none = s.timed === 0;
  const lines = [
    `"kiops": ${fixed(s.count / s.runtimeSecs / 1000, 3)}`,
    `"gips": ${fixed((s.count * config.blocksize) / s.runtimeSecs / GIB, 3)}`,
    `"min_lat_us": ${fixed(none ? 0 : s.minLatencyNs / 1000, 3)}`,
    `"mean_lat_us": ${fixed(none ? 0 : s.totalLatencyNs / s.timed / 1000, 3)}`,
    `"max_lat_us": ${fixed(s.maxLatencyNs / 1000, 3)}`,
    `"calls": ${s.calls}`,
    `"min_completions": ${
      fixed(s.calls === 0 || !Number.isFinite(s.minCompletions) ? 0 : s.minCompletions, 2)
    }`,
    `"mean_completions": ${fixed(s.calls === 0 ? 0 : s.count / s.calls, 2)}`,
    `"max_completions": ${fixed(s.maxCompletions, 2)}`,
  ];
  if (s.histogram !== null) {
    lines.push(`"p50_lat_us": ${fixed(histogramPercentile(s.histogram, 50) / 1000, 3)}`);
    lines.push(`"p99_lat_us": ${fixed(histogramPercentile(s.histogram, 99) / 1000, 3)}`);
  }
  if (cpu !== null) {
    lines.push(`"cpu_usr_us": ${cpu.user}`, `"cpu_sys_us": ${cpu.system}`);
  }
  return lines.map((l) => `${indent}  ${l}`).join(",\n") + "\n";
}

function results(
  config: Config,
  threads: ThreadStats[],
  cpu: { user: number; system: number } | null,
): string {
  const agg: ThreadStats = newStats();
  if (config.latencyPercentiles) agg.histogram = new Uint32Array(HISTOGRAM_BUCKETS);
  for (const t of threads) {
    if (agg.histogram !== null && t.histogram !== null) {
      for (let i = 0; i < HISTOGRAM_BUCKETS; i++) agg.histogram[i] += t.histogram[i];
    }
    agg.count += t.count;
    agg.runtimeSecs += t.runtimeSecs;
    agg.totalLatencyNs += t.totalLatencyNs;
    agg.timed += t.timed;
    agg.minLatencyNs = Math.min(agg.minLatencyNs, t.minLatencyNs);
    agg.maxLatencyNs = Math.max(agg.maxLatencyNs, t.maxLatencyNs);
    agg.calls += t.calls;
    agg.minCompletions = Math.min(agg.minCompletions, t.minCompletions);
    agg.maxCompletions = Math.max(agg.maxCompletions, t.maxCompletions);
  }
  agg.runtimeSecs /= threads.length;
  let text = "{\n";
  text += '  "aggregate": {\n' + statsLines(config, agg, "    ", cpu) + "  },\n";
  text += '  "threads": [\n';
  threads.forEach((t, i) => {
    text += "    {\n" + statsLines(config, t, "    ") + `    }${i === threads.length - 1 ? "" : ","}\n`;
  });
  text += "  ]\n}\n";
  return text;
}

/** Starts one Worker and resolves once it has set up its instance. */
function startWorker(cfg: WorkerConfig, onMessage: (m: WorkerMessage) => void): Promise<Worker> {
  return new Promise((resolve) => {
    const w = new Worker(new URL("./_bench_worker.ts", import.meta.url).href, { type: "module" });
    w.onerror = (e) => {
      e.preventDefault?.();
      die(`Thread ${cfg.index} failed: ${e.message ?? e}`);
    };
    w.onmessage = (e: MessageEvent<WorkerMessage>) => {
      const m = e.data;
      if (m === "ready") w.postMessage(cfg);
      else if (typeof m === "object" && m.type === "init") resolve(w);
      else if (typeof m === "object" && m.type === "error") die(m.message);
      else onMessage(m);
    };
  });
}

async function main(argv: string[]): Promise<void> {
  const { config, driver, props: args } = parseArgs(argv);
  const props: [string, string][] = [];
  const capacity = probe(config, driver, args, props);
  if (config.mode === "event") {
    const bad = props.find(([k]) => !Object.hasOwn(EVENT_PROPERTIES, k));
    if (bad) {
      die(
        `--event supports the properties ${Object.keys(EVENT_PROPERTIES).join(", ")}: "${
          bad[0]
        }" is not one of them`,
      );
    }
  }

  const shared = new SharedArrayBuffer(SHARED_COUNTS + 8 * config.numThreads);
  const flags = new Int32Array(shared, 0, SHARED_FLAGS);
  const counts = new Float64Array(shared, SHARED_COUNTS);
  const stats: (ThreadStats | null)[] = new Array(config.numThreads).fill(null);
  let received = 0;
  let allDone: () => void = () => {};
  const done = new Promise<void>((resolve) => (allDone = resolve));

  const workers = await Promise.all(
    Array.from({ length: config.numThreads }, (_, index) =>
      startWorker({
        index,
        driver,
        props,
        readwrite: config.readwrite,
        blocksize: config.blocksize,
        iodepth: config.iodepth,
        iodepthBatch: config.iodepthBatch ?? config.iodepth,
        mode: config.mode,
        capacity,
        startOffset: Math.floor(capacity / config.numThreads) * index,
        shared,
        ramp: config.rampSecs > 0,
        latencyPercentiles: config.latencyPercentiles,
        latencySample: config.latencySample,
      }, (m) => {
        if (typeof m === "object" && m.type === "stats") {
          stats[index] = m.stats;
          if (++received === config.numThreads) allDone();
        }
      })),
  );

  let cpu0 = process.cpuUsage();
  let t0 = performance.now();
  Atomics.store(flags, Flag.Start, 1);
  Atomics.notify(flags, Flag.Start);
  // SIGINT ends the run early; the results are still printed.
  let interrupted = false;
  let wake: (() => void) | null = null;
  // `on`, not `once`: a second SIGINT while the workers finish (`timeout` signals the process
  // and its group) took the default action and the results were lost.
  process.on("SIGINT", () => {
    interrupted = true;
    wake?.();
  });
  // In steps setTimeout can take (at most 2^31 - 1 ms: a longer --runtime ended at once).
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const end = performance.now() + ms;
      let t: ReturnType<typeof setTimeout>;
      const step = () => {
        const left = end - performance.now();
        if (left <= 0) {
          wake = null;
          resolve();
          return;
        }
        t = setTimeout(step, Math.min(left, 2 ** 31 - 1));
      };
      step();
      wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  if (config.rampSecs > 0) {
    await sleep(config.rampSecs * 1000);
    // Stopped during the warm-up, the workers keep what they counted so far, and so does this.
    if (!interrupted) {
      cpu0 = process.cpuUsage();
      t0 = performance.now();
      Atomics.store(flags, Flag.Measure, 1);
    }
  }

  const progress = new Progress();
  // SIGTERM (`kill`, `timeout`) ends the run without results, as libblkio's tool ends, but not
  // in the middle of the progress line: the shell's prompt was printed behind its stale figures.
  process.on("SIGTERM", () => {
    progress.clear();
    exit(143);
  });
  const timer = progress.enabled
    ? setInterval(() => {
      const secs = (performance.now() - t0) / 1000;
      let count = 0;
      for (let i = 0; i < config.numThreads; i++) count += counts[i];
      const kiops = count / secs / 1000;
      const gibs = (count * config.blocksize) / secs / GIB;
      progress.update(
        `${Math.min(secs, config.runtimeSecs).toFixed(1)} / ${config.runtimeSecs} s  ${
          kiops.toFixed(3)
        } kIOPS  ${gibs.toFixed(3)} GiB/s  ETA ${formatDuration(config.runtimeSecs - secs)}`,
      );
    }, 250)
    : undefined;

  if (!interrupted) await sleep(config.runtimeSecs * 1000);
  if (interrupted) {
    progress.clear();
    printErr("Stopped early by a signal...\n");
  }
  if (timer !== undefined) clearInterval(timer);
  Atomics.store(flags, Flag.Stop, 1);
  const cpu = config.cpuUsage ? process.cpuUsage(cpu0) : null;
  // The workers finish the requests in flight; a device that stopped answering would keep them
  // (and this process, Ctrl-C or not) waiting for good (CLI hunt).
  const stuck = setTimeout(() => {
    progress.clear();
    printErr(
      `Requests still in flight ${
        STOP_GRACE_MS / 1000
      } s after the run ended (the device does not answer): ` +
        "exiting without results\n",
    );
    exit(interrupted ? 130 : 1);
  }, STOP_GRACE_MS);
  await done;
  clearTimeout(stuck);
  progress.clear();
  for (const w of workers) w.terminate();

  printOut(results(config, stats as ThreadStats[], cpu));
  exit(0);
}

await main(commandArgs());
