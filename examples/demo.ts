/**
 * The main demo (`npm run demo`): random 4 KiB writes and reads on a scratch file through
 * io_uring, every block stamped with its offset and a generation and verified on read, then
 * every block of the file read back in order and checked, and a one-screen summary of IOPS and
 * latency.
 *
 * Run: `deno run --allow-ffi --allow-write --allow-env examples/demo.ts` or
 * `bun examples/demo.ts`. Options: `--seconds=N` per phase (default 2), `--iodepth=N` (32, at most 32768),
 * `--size-mib=N` scratch file size (64, at most 65536), `--buffered` to use the page cache instead
 * of O_DIRECT. Options take `--name=value` or `--name value`; a repeated option takes its last value.
 *
 * @module
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { Blkio, type Completion, errnoName, errnoText, type Queue } from "../mod.ts";
import { lastOptions, positiveNumber, printOut } from "./_cli.ts";

const BLOCK = 4096;

const USAGE = "Usage: demo.ts [--seconds=N] [--iodepth=N] [--size-mib=N] [--buffered]";
/** The largest scratch file (64 GiB, sparse): the verify pass reads all of it. */
const MAX_SIZE_MIB = 65536;
/** io_uring's largest ring (IORING_MAX_ENTRIES). */
const MAX_IODEPTH = 32768;

/**
 * A bad option: the message and the usage line on stderr, no stack trace, exit status 1 (every
 * tool here exits 1 on a usage error, as libblkio's do).
 */
function usageError(message: string): never {
  console.error(`${message}\n${USAGE}`);
  process.exit(1);
}

// process.argv, not commandArgs(): no option is a path, and reading /proc/self/cmdline would need
// --allow-read, which the command line above does not give.
const parsed = lastOptions(process.argv.slice(2), {
  progname: "demo",
  long: [
    { name: "help", hasArg: false },
    { name: "seconds", hasArg: true },
    { name: "iodepth", hasArg: true },
    { name: "size-mib", hasArg: true },
    { name: "buffered", hasArg: false },
  ],
  short: { h: "help" },
  inOrder: false,
});
if (parsed.error !== null) usageError(parsed.error);
if (parsed.options.has("help")) {
  printOut(`${USAGE}\n`);
  process.exit(0);
}
if (parsed.rest.length > 0) usageError(`demo: unexpected argument '${parsed.rest[0]}'`);

function option(name: string, fallback: number, integer: boolean): number {
  if (!parsed.options.has(name)) return fallback;
  const v = positiveNumber(parsed.options.get(name), integer);
  if (v === null) usageError(`demo: --${name} must be a positive ${integer ? "integer" : "number"}`);
  return v;
}

const seconds = option("seconds", 2, false);
const sizeMiB = option("size-mib", 64, true);
if (sizeMiB > MAX_SIZE_MIB) usageError(`demo: --size-mib must be at most ${MAX_SIZE_MIB}`);
const blocks = (sizeMiB * 1024 * 1024) / BLOCK;
const iodepth = option("iodepth", 32, true);
// The ring holds iodepth entries: a larger one failed in the library, with exit status 1 and a
// message about "num-entries", an option demo does not have.
if (iodepth > MAX_IODEPTH) usageError(`demo: --iodepth must be at most ${MAX_IODEPTH}`);
// Each request in flight holds a block of its own: with more requests than blocks, the search for
// a free block never ended.
if (iodepth > blocks) usageError(`demo: --iodepth (${iodepth}) must not exceed the file's ${blocks} blocks`);
const buffered = parsed.options.has("buffered");

/** Per-phase statistics. */
interface PhaseResult {
  name: string;
  ios: number;
  seconds: number;
  latenciesUs: Float64Array;
  errors: number;
  mismatches: number;
}

/** xorshift32: a fast deterministic generator so runs are repeatable. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** Fills a block with a pattern derived from its block number and generation. */
function stamp(buf: Uint8Array, block: number, generation: number): void {
  const v = new Uint32Array(buf.buffer, buf.byteOffset, BLOCK / 4);
  for (let i = 0; i < v.length; i++) v[i] = (block * 2654435761 + generation * 40503 + i) >>> 0;
}

function verify(buf: Uint8Array, block: number, generation: number): boolean {
  const v = new Uint32Array(buf.buffer, buf.byteOffset, BLOCK / 4);
  for (let i = 0; i < v.length; i++) {
    if (v[i] !== ((block * 2654435761 + generation * 40503 + i) >>> 0)) return false;
  }
  return true;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/**
 * Runs `iodepth` requests at a time for `seconds`, each slot reusing its own buffer; `write`
 * selects the direction. `generation[block]` tracks what each block should contain.
 */
function phase(
  name: string,
  q: Queue,
  bufs: Uint8Array[],
  write: boolean,
  generation: Int32Array,
  next: () => number,
): PhaseResult {
  const slotBlock = new Int32Array(iodepth);
  const slotStart = new Float64Array(iodepth);
  const lat: number[] = [];
  const out: Completion[] = [];
  let ios = 0, errors = 0, mismatches = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  slotBlock.fill(-1);
  // Two writes of one block in flight at once may land in either order, so a write never
  // picks a block that another slot is writing.
  const busy = (block: number) => write && slotBlock.includes(block);
  const submit = (slot: number) => {
    slotBlock[slot] = -1;
    let block = Math.floor(next() * blocks);
    while (busy(block)) block = Math.floor(next() * blocks);
    slotBlock[slot] = block;
    if (write) {
      generation[block]++;
      stamp(bufs[slot], block, generation[block]);
      q.write(block * BLOCK, bufs[slot], slot);
    } else {
      q.read(block * BLOCK, bufs[slot], slot);
    }
    slotStart[slot] = performance.now();
  };
  for (let s = 0; s < iodepth; s++) submit(s);
  let inFlight = iodepth;
  let stopping = false;
  while (inFlight > 0) {
    const n = q.doIo(out, 1, iodepth);
    const now = performance.now();
    if (now >= end) stopping = true;
    for (let i = 0; i < n; i++) {
      const slot = out[i].userData as number;
      lat.push((now - slotStart[slot]) * 1000);
      ios++;
      inFlight--;
      if (out[i].ret !== 0) errors++;
      else if (!write) {
        const block = slotBlock[slot];
        if (generation[block] > 0 && !verify(bufs[slot], block, generation[block])) mismatches++;
      }
      if (!stopping) {
        submit(slot);
        inFlight++;
      }
    }
  }
  const latenciesUs = Float64Array.from(lat).sort();
  return { name, ios, seconds: (performance.now() - t0) / 1000, latenciesUs, errors, mismatches };
}

/**
 * Reads every block of the file in order, `iodepth` at a time: a block written by the run must
 * hold its latest stamp, and one never written the zeroes the file was grown with.
 */
function verifyAll(q: Queue, bufs: Uint8Array[], generation: Int32Array): PhaseResult {
  const slotBlock = new Int32Array(iodepth);
  const slotStart = new Float64Array(iodepth);
  const lat: number[] = [];
  const out: Completion[] = [];
  let next = 0, inFlight = 0, errors = 0, mismatches = 0;
  const t0 = performance.now();
  const submit = (slot: number) => {
    slotBlock[slot] = next;
    q.read(next++ * BLOCK, bufs[slot], slot);
    slotStart[slot] = performance.now();
    inFlight++;
  };
  for (let s = 0; s < iodepth && next < blocks; s++) submit(s);
  while (inFlight > 0) {
    const n = q.doIo(out, 1, iodepth);
    const now = performance.now();
    for (let i = 0; i < n; i++) {
      const slot = out[i].userData as number;
      const block = slotBlock[slot];
      lat.push((now - slotStart[slot]) * 1000);
      inFlight--;
      if (out[i].ret !== 0) errors++;
      else if (
        generation[block] > 0
          ? !verify(bufs[slot], block, generation[block])
          : bufs[slot].some((v) => v !== 0)
      ) {
        mismatches++;
      }
      if (next < blocks) submit(slot);
    }
  }
  const latenciesUs = Float64Array.from(lat).sort();
  return {
    name: "verify",
    // The reads that completed, not the count asked for: a pass that missed a block shows it.
    ios: lat.length,
    seconds: (performance.now() - t0) / 1000,
    latenciesUs,
    errors,
    mismatches,
  };
}

function main(): number {
  const dir = mkdtempSync(join(tmpdir(), "blkio-demo-"));
  const path = join(dir, "scratch.img");
  try {
    writeFileSync(path, new Uint8Array(0));
    using b = Blkio.create("io_uring");
    b.setStr("path", path);
    b.setBool("direct", !buffered);
    b.connect();
    // The instance holds the file open from here on: remove it now, so that Ctrl-C, SIGTERM or
    // a crash, which end this synchronous program without running `finally`, leave no 64 MiB
    // behind in the temp directory (its space is freed when the instance closes the file).
    rmSync(dir, { recursive: true, force: true });
    // Size the file through the library itself: one write of the last block grows it.
    b.setInt("num-entries", iodepth);
    b.start();
    const q = b.getQueue(0)!;
    const align = Number(b.getUint64("mem-region-alignment"));
    const regionLen = Math.ceil((iodepth * BLOCK) / Math.max(align, 4096)) * Math.max(align, 4096);
    const region = b.allocMemRegion(regionLen);
    b.mapMemRegion(region);
    const bufs = Array.from({ length: iodepth }, (_, i) => region.bytes.subarray(i * BLOCK, (i + 1) * BLOCK));
    const out: Completion[] = [];
    bufs[0].fill(0);
    q.write((blocks - 1) * BLOCK, bufs[0], "size");
    q.doIo(out, 1, 1);
    if (out[0].ret !== 0) {
      // What went wrong, not only the number ("ret -28" was all it said on a full disk).
      const ret = out[0].ret;
      throw new Error(
        `sizing the scratch file failed: ${errnoText(-ret) ?? errnoName(-ret)} (${ret})${
          out[0].errorMsg ? `: ${out[0].errorMsg}` : ""
        }`,
      );
    }

    const generation = new Int32Array(blocks);
    const next = rng(0x5eed);
    const results = [
      phase("randwrite", q, bufs, true, generation, next),
      phase("randread", q, bufs, false, generation, next),
    ];
    q.flush("flush");
    q.doIo(out, 1, 1);
    results.push(verifyAll(q, bufs, generation));

    console.log(`blkio demo: ${b.getStr("driver")} on ${path}`);
    console.log(
      `  ${sizeMiB} MiB scratch file, ${BLOCK} B blocks, iodepth ${iodepth}, ` +
        `${buffered ? "buffered" : "O_DIRECT"}, request-alignment ${b.getInt("request-alignment")}`,
    );
    console.log("");
    console.log("  phase       I/Os      IOPS    p50 µs   p99 µs   max µs  errors  mismatches");
    let bad = 0;
    for (const r of results) {
      const iops = r.ios / r.seconds;
      const l = r.latenciesUs;
      console.log(
        `  ${r.name.padEnd(10)}${String(r.ios).padStart(6)}${iops.toFixed(0).padStart(10)}` +
          `${percentile(l, 50).toFixed(1).padStart(10)}${percentile(l, 99).toFixed(1).padStart(9)}` +
          `${(l[l.length - 1] ?? 0).toFixed(1).padStart(9)}${String(r.errors).padStart(8)}` +
          `${String(r.mismatches).padStart(12)}`,
      );
      bad += r.errors + r.mismatches;
    }
    const written = generation.reduce((n, g) => n + (g > 0 ? 1 : 0), 0);
    console.log("");
    console.log(
      bad === 0
        ? `  verified: all ${blocks} blocks read back, ${written} with their latest stamp, the rest still zero`
        : `  FAILED: ${bad} errors or mismatches`,
    );
    b.unmapMemRegion(region);
    b.freeMemRegion(region);
    return bad === 0 ? 0 : 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

try {
  process.exitCode = main();
} catch (e) {
  // The library's errors say what went wrong (a missing liburing, no O_DIRECT here): no stack.
  console.error(`demo: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
}
