/**
 * Allocation check: does the request path allocate in steady state? Keeps `--depth` 4 KiB random
 * reads in flight on one queue (doIo(min 1) and resubmit, as blkio_bench does, buffers in a mapped
 * memory region) for `--requests` requests, and reports:
 *
 * - retained growth: `heapUsed` after a forced GC at the end minus `heapUsed` after a forced GC
 *   once warmed up (the target: under 1 MiB across 5 million requests);
 * - allocation rate: `heapUsed` sampled every 1,024 requests across `--probe` requests, the rises
 *   summed and divided by the requests, leaving out the samples a collection came between (the
 *   heap fell). Whether `heapUsed` sees allocation between collections at all is checked on a
 *   loop that allocates a small object each time (the calibration): V8's does (Deno), JSC's does
 *   not (Bun), and where it does not, no allocation rate is reported (null).
 *
 * Forced GC: `Bun.gc(true)` in Bun; in Deno `--expose-gc` is turned on at run time through
 * node:v8 and `gc` taken from a new node:vm context.
 *
 * Usage: deno run -A bench/alloc_check.ts --path FILE [--requests 5000000] [--depth 32]
 *                                          [--warmup 500000] [--probe 1000000]
 *                                          [--driver io_uring|virtio-blk-vhost-user] [--json]
 *        bun bench/alloc_check.ts --path FILE [same options]
 *
 * `--warmup` requests run before anything is measured. With `--driver virtio-blk-vhost-user`,
 * `--path` is the export's socket. `--help` prints the options (USAGE below). A usage error
 * (`--path` missing too) exits 1 with the message and the usage on stderr; a --path the driver
 * cannot connect to, 1 with the message.
 *
 * @module
 */
import process from "node:process";
import v8 from "node:v8";
import vm from "node:vm";
import { Blkio, type Completion, newCompletion } from "../mod.ts";
import { xorshift32 } from "./_runner.mjs";
import { cannot, parseOptions, runTool, usage } from "./_common.ts";

interface Options {
  path: string;
  requests: number;
  depth: number;
  warmup: number;
  probe: number;
  json: boolean;
  driver: string;
}

const USAGE = `Usage: alloc_check.ts --path FILE [--requests 5000000] [--depth 32]
                      [--warmup 500000] [--probe 1000000]
                      [--driver io_uring|virtio-blk-vhost-user] [--json]
With --driver virtio-blk-vhost-user, --path is the export's socket.`;

/** The options, or null for `--help`. */
function parseArgs(argv: string[]): Options | null {
  const o = parseOptions<Options>(argv, {
    path: "",
    requests: 5_000_000,
    depth: 32,
    warmup: 500_000,
    probe: 1_000_000,
    json: false,
    driver: "io_uring",
  }, { warmup: "count", driver: ["io_uring", "virtio-blk-vhost-user"] });
  if (o?.path === "") usage("missing --path (the file or device to read)");
  return o;
}

function gcFunction(): () => void {
  const bun = (globalThis as unknown as { Bun?: { gc(full: boolean): void } }).Bun;
  if (bun !== undefined) return () => bun.gc(true);
  v8.setFlagsFromString("--expose-gc");
  return vm.runInNewContext("gc") as () => void;
}

/** Requests (or iterations) between two `heapUsed` samples of the allocation probe. */
const SEGMENT = 1024;

/**
 * Bytes allocated per unit of work, from the rises of `heapUsed` across calls of `segment` (each
 * does about SEGMENT units and returns how many) until `total` units; calls with a collection
 * in them (the heap fell) are left out. Null when every call had one.
 */
function allocationRate(segment: () => number, total: number): number | null {
  let sum = 0, counted = 0, last = process.memoryUsage().heapUsed;
  for (let done = 0; done < total;) {
    const units = segment();
    done += units;
    const now = process.memoryUsage().heapUsed;
    if (now >= last) {
      sum += now - last;
      counted += units;
    }
    last = now;
  }
  return counted === 0 ? null : sum / counted;
}

/** What allocationRate() reports for a loop that allocates an object, an array and a string a step. */
function calibration(): number | null {
  let keep: unknown = null;
  const rate = allocationRate(() => {
    for (let k = 0; k < SEGMENT; k++) keep = { a: k, b: [k, k + 1, k + 2], c: "x" + k };
    return SEGMENT;
  }, 200_000);
  return keep === null ? null : rate;
}

function heapAfterGc(gc: () => void): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

const BS = 4096;

function main(): void {
  const o = parseArgs(process.argv.slice(2));
  if (o === null) {
    console.log(USAGE);
    return;
  }
  const gc = gcFunction();
  using b = Blkio.create(o.driver);
  b.setStr("path", o.path);
  b.setBool("read-only", true);
  try {
    b.connect();
  } catch (e) {
    cannot(`cannot use --path ${o.path}: ${(e as Error).message}`);
  }
  b.setInt(o.driver === "io_uring" ? "num-entries" : "queue-size", Math.max(o.depth, 32));
  b.start();
  const q = b.getQueue(0)!;
  const blocks = Math.floor(Number(b.getUint64("capacity")) / BS);
  if (blocks < 1) cannot(`${o.path} is smaller than one block (${BS} bytes)`);
  const region = b.allocMemRegion(o.depth * BS);
  b.mapMemRegion(region);
  const bufs = Array.from({ length: o.depth }, (_, i) => region.bytes.subarray(i * BS, (i + 1) * BS));
  const out: Completion[] = Array.from({ length: o.depth }, newCompletion);
  Object.preventExtensions(out);

  // Not Math.random(): it allocates per call on V8, which this check would count against the
  // library (16.4 bytes a request).
  const random = xorshift32();
  const randomBlock = (): number => Math.floor(random() * blocks);
  let done = 0;
  const run = (count: number): void => {
    const stop = done + count;
    while (done < stop) {
      const n = q.doIo(out, 1, o.depth);
      for (let k = 0; k < n; k++) {
        const c = out[k];
        if (c.ret !== 0) throw new Error(`Read failed: ${c.ret}`);
        const i = c.userData as number;
        q.read(randomBlock() * BS, bufs[i], i);
      }
      done += n;
    }
  };

  for (let i = 0; i < o.depth; i++) q.read(randomBlock() * BS, bufs[i], i);
  run(o.warmup);
  // The probe can only see what heapUsed shows between collections: measured on a loop that
  // allocates (~150 bytes a step on V8); under 64 bytes, it does not see all of it.
  const calibrationBytes = calibration();
  heapAfterGc(gc);
  const probeRate = allocationRate(() => {
    const start = done;
    run(SEGMENT);
    return done - start;
  }, o.probe);
  const visible = calibrationBytes !== null && calibrationBytes >= 64;
  const before = heapAfterGc(gc);
  const t0 = performance.now();
  run(o.requests);
  const seconds = (performance.now() - t0) / 1000;
  const after = heapAfterGc(gc);
  let left = o.depth;
  while (left > 0) left -= q.doIo(out, 1, Math.min(left, o.depth));

  const result = {
    runtime: "Bun" in globalThis ? "bun" : "deno",
    requests: o.requests,
    depth: o.depth,
    seconds,
    heapBefore: before,
    heapAfter: after,
    growthBytes: after - before,
    probeRequests: o.probe,
    /** Bytes a request allocates, or null where heapUsed cannot show it (see calibrationBytes). */
    probeBytesPerRequest: visible ? probeRate : null,
    calibrationBytes,
  };
  if (o.json) {
    console.log(JSON.stringify(result));
  } else {
    console.log(
      `${result.runtime}: ${o.requests} requests in ${seconds.toFixed(1)} s, heap growth ` +
        `${result.growthBytes} bytes (${before} -> ${after}), ` +
        (result.probeBytesPerRequest === null
          ? `allocation per request not measurable here (heapUsed showed ${
            result.calibrationBytes?.toFixed(2)
          } bytes a step for a loop that allocates)`
          : `${result.probeBytesPerRequest.toFixed(2)} bytes allocated per request ` +
            `(a loop allocating an object a step shows ${result.calibrationBytes?.toFixed(0)})`),
    );
  }
}

await runTool("alloc_check", USAGE, main);
