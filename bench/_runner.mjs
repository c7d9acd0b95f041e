/**
 * What the built-in runners of bench/run.mjs share: the job description they receive, random or
 * sequential offsets, O_DIRECT-aligned buffers, a latency histogram, and the one JSON line they
 * print. Plain JavaScript so the same file runs under Node, Deno and Bun.
 *
 * A runner is started as `<runtime> bench/<kind>_runner.mjs '<job json>'` and prints
 * `{"ios":…,"seconds":…,"usrUs":…,"sysUs":…,"p50Us":…,"p99Us":…,"note":…}`.
 *
 * @module
 */
import fs from "node:fs";
import process from "node:process";

/**
 * @typedef {object} Job
 * @property {string} path     file or block device
 * @property {"randread"|"randwrite"|"read"} rw
 * @property {number} bs       block size in bytes
 * @property {number} depth    requests in flight (concurrent promises, or handles)
 * @property {boolean} direct  open with O_DIRECT
 * @property {number} seconds  measurement length
 * @property {number} [rampSeconds]  warm-up before the measurement, not counted (fio's ramp_time)
 * @property {number} size     bytes of the target to use
 * @property {number} [latencySample]  time one request in this many (default 1, every one), as
 *   blkio_bench's --latency-sample: a clock read costs a tenth of a 3 µs request on Deno, and
 *   timing every request here but not blkio's made the built-ins look 11-16% slower
 */

/** One request in how many a runner times. @param {Job} job */
export function sampleEvery(job) {
  return Math.max(1, Math.floor(job.latencySample ?? 1));
}

/** The runtime running this script. */
export const RUNTIME = "Bun" in globalThis ? "bun" : "Deno" in globalThis ? "deno" : "node";

/** The job from the command line. @returns {Job} */
export function readJob() {
  const arg = process.argv[process.argv.length - 1];
  return JSON.parse(arg);
}

/** Whether the job writes. @param {Job} job */
export function isWrite(job) {
  return job.rw === "randwrite";
}

/**
 * xorshift32: numbers in [0, 1) from `seed` (any 32-bit value but 0; default: a random one).
 * The benchmarks draw offsets from it, not from Math.random(), which on V8 allocates a 16-byte
 * heap number per call (the allocation check would count that against the library).
 * @param {number} [seed] @returns {() => number}
 */
export function xorshift32(seed = ((Math.random() * 4294967296) >>> 0) || 1) {
  let x = seed | 0;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** Block-aligned offsets: random, or one shared sequential cursor that wraps. @param {Job} job */
export function offsets(job) {
  const blocks = Math.floor(job.size / job.bs);
  const bs = job.bs;
  if (job.rw === "read") {
    let next = 0;
    return () => {
      const off = next;
      next += bs;
      if (next + bs > blocks * bs) next = 0;
      return off;
    };
  }
  const random = xorshift32();
  return () => Math.floor(random() * blocks) * bs;
}

/** open(2) flags for the job, O_DIRECT included when asked. @param {Job} job */
export function openFlags(job) {
  const c = fs.constants;
  return (isWrite(job) ? c.O_RDWR : c.O_RDONLY) | (job.direct ? c.O_DIRECT : 0);
}

/**
 * `count` buffers of `job.bs` bytes in one ArrayBuffer, aligned for O_DIRECT. JavaScript cannot
 * ask for an address, so the alignment is found by trying reads at 16-byte steps on `fd` (an
 * O_DIRECT read of a misaligned buffer fails with EINVAL). The ArrayBuffer is explicit so Bun
 * never moves it.
 * @param {number} fd @param {Job} job @param {number} count
 * @returns {Uint8Array[]}
 */
export function buffers(fd, job, count) {
  const ab = new ArrayBuffer(count * job.bs + 4096);
  let base = 0;
  if (job.direct) {
    base = -1;
    for (let k = 0; k < 4096; k += 16) {
      try {
        fs.readSync(fd, new Uint8Array(ab, k, job.bs), 0, job.bs, 0);
        base = k;
        break;
      } catch {
        // misaligned: try the next offset
      }
    }
    if (base < 0) throw new Error("Found no O_DIRECT-aligned offset in the buffer");
  }
  const out = [];
  for (let i = 0; i < count; i++) {
    const b = new Uint8Array(ab, base + i * job.bs, job.bs);
    if (isWrite(job)) b.fill(0x5a);
    out.push(b);
  }
  return out;
}

const BUCKETS = 27 * 32;

/**
 * Latency histogram: exact below 64 ns, then 32 buckets per power of two (about 3%), as
 * blkio_bench's `--latency-percentiles`.
 */
export class Histogram {
  counts = new Uint32Array(BUCKETS);
  /** Sum of the latencies added, in milliseconds. */
  totalMs = 0;
  /**
   * Time spent inside the calls before they returned their promise, in milliseconds: the event
   * loop cannot run anything else meanwhile (see {@link lanes}).
   */
  inCallMs = 0;

  /** Forgets everything added: the end of the warm-up. */
  reset() {
    this.counts.fill(0);
    this.totalMs = 0;
    this.inCallMs = 0;
  }

  /** @param {number} ms a latency in milliseconds (performance.now() difference) */
  add(ms) {
    this.totalMs += ms;
    const ns = ms * 1e6;
    const v = ns >= 2147483647 ? 2147483647 : ns < 0 ? 0 : ns | 0;
    if (v < 64) {
      this.counts[v]++;
      return;
    }
    const shift = 26 - Math.clz32(v);
    this.counts[(shift + 1) * 32 + (v >>> shift) - 32]++;
  }

  /** @param {number} p percentile 0-100 @returns {number} microseconds */
  percentileUs(p) {
    let total = 0;
    for (const c of this.counts) total += c;
    if (total === 0) return 0;
    const rank = Math.max(1, Math.ceil((p / 100) * total));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        if (i < 64) return i / 1000;
        const shift = Math.floor(i / 32) - 1;
        return ((i % 32) + 32.5) * 2 ** shift / 1000;
      }
    }
    return 0;
  }
}

/**
 * Measures `job.seconds` of I/O: calls `start(deadline)`, which returns a promise of the number
 * of completed requests, and prints the result line. CPU time is the whole process's
 * (`process.cpuUsage()`, every thread: thread pools included). With `job.rampSeconds`, a first
 * `start` runs that long and what it did is dropped, so JIT compilation is not measured.
 * @param {Job} job
 * @param {Histogram} hist
 * @param {(deadline: number) => Promise<number> | number} start
 * @param {string} [note]
 */
export async function measure(job, hist, start, note = "") {
  if (job.rampSeconds > 0) {
    await start(performance.now() + job.rampSeconds * 1000);
    hist.reset();
  }
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const ios = await start(t0 + job.seconds * 1000);
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const result = {
    ios,
    seconds: (t1 - t0) / 1000,
    usrUs: cpu.user,
    sysUs: cpu.system,
    p50Us: hist.percentileUs(50),
    p99Us: hist.percentileUs(99),
    inCallShare: hist.totalMs > 0 ? hist.inCallMs / hist.totalMs : null,
    note,
  };
  process.stdout.write(JSON.stringify(result) + "\n");
}

/**
 * Runs `depth` concurrent loops of `op(buf, offset)` until the deadline; returns how many
 * completed. Latencies go to `hist`.
 * @param {Job} job @param {Histogram} hist @param {Uint8Array[]} bufs
 * @param {(buf: Uint8Array, offset: number, lane: number) => Promise<unknown>} op
 * @returns {(deadline: number) => Promise<number>}
 */
export function lanes(job, hist, bufs, op) {
  const next = offsets(job);
  const every = sampleEvery(job);
  return async (deadline) => {
    let done = 0, stop = false;
    const lane = async (/** @type {number} */ i) => {
      const buf = bufs[i];
      for (let k = 0; !stop; k++) {
        if (k % every !== 0) {
          await op(buf, next(), i);
          done++;
          continue;
        }
        // A timed request: the deadline is checked on these only (at most `every` - 1 late).
        const t = performance.now();
        if (t >= deadline) {
          stop = true;
          return;
        }
        const pending = op(buf, next(), i);
        // An implementation that does the I/O before returning its promise blocks the event
        // loop for it; the harness tells those apart by this share at iodepth 1.
        hist.inCallMs += performance.now() - t;
        await pending;
        hist.add(performance.now() - t);
        done++;
      }
    };
    await Promise.all(bufs.map((_, i) => lane(i)));
    return done;
  };
}
