/**
 * Several threads on one device, the supported way: each Worker opens its own BlockDevice on
 * the same path, so each thread has its own instance, file descriptor and io_uring queue (as
 * libblkio's `blkio-bench --num-threads` gives each thread its own queue). JS objects cannot be
 * shared between threads, so a device or a queue is never handed to another Worker; the
 * threads share the device itself, and coordinate through messages.
 *
 * The run: every thread fills its own slice of the device, then checks its neighbour's slice
 * (data written by another thread's queue), then all threads read random 4 KiB blocks at
 * depth 32 for a while, in parallel.
 *
 *   deno run -A examples/workers.ts [--threads 2] [--seconds 2] [--direct] [--path <file|device>]
 *   bun examples/workers.ts [same options]
 *
 * Options take `--name value` or `--name=value`; a repeated option takes its last value.
 *
 * Without --path it works on a 64 MiB scratch file in the temp directory. With --path it
 * OVERWRITES the first `threads` MiB of that file or device (a disk's partition table lives
 * there): give it a scratch target only.
 *
 * @module
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import process from "node:process";
import { commandArgs, lastOptions, positiveNumber, printOut } from "./_cli.ts";
import type { WorkerReply, WorkerRequest } from "./_workers_worker.ts";

interface Options {
  threads: number;
  seconds: number;
  direct: boolean;
  path: string | null;
}

const USAGE = "Usage: workers.ts [--threads 2] [--seconds 2] [--direct] [--path <file|device>]\n" +
  "  --path: a scratch target; its first <threads> MiB are overwritten";

/** A mistake on the command line: reported with the usage on stderr, exit status 1 (as any error). */
class UsageError extends Error {}

/** The most threads (blkio_bench's limit too). */
const MAX_THREADS = 1024;

/** Each thread's slice of the device: it fills it, and its neighbour checks it. */
const SLICE = 1 << 20;

function parseArgs(argv: string[]): Options {
  const { options, rest, error } = lastOptions(argv, {
    progname: "workers",
    long: [
      { name: "help", hasArg: false },
      { name: "threads", hasArg: true },
      { name: "seconds", hasArg: true },
      { name: "direct", hasArg: false },
      { name: "path", hasArg: true },
    ],
    short: { h: "help" },
    inOrder: false,
  });
  // getopt's message names the program already.
  if (error !== null) throw new UsageError(error.replace(/^workers: /, ""));
  if (options.has("help")) {
    printOut(`${USAGE}\n`);
    process.exit(0);
  }
  if (rest.length > 0) throw new UsageError(`Unexpected argument "${rest[0]}"`);
  const number = (name: string, fallback: number, integer: boolean): number => {
    if (!options.has(name)) return fallback;
    const v = positiveNumber(options.get(name), integer);
    if (v === null) throw new UsageError(`--${name} must be a positive ${integer ? "integer" : "number"}`);
    return v;
  };
  const threads = number("threads", 2, true);
  // Each thread is a Worker, a JavaScript engine of its own.
  if (threads > MAX_THREADS) throw new UsageError(`--threads must be at most ${MAX_THREADS}`);
  const path = options.get("path");
  if (path === "") throw new UsageError("--path must not be empty");
  return { threads, seconds: number("seconds", 2, false), direct: options.has("direct"), path: path ?? null };
}

/** The next reply of `w`; rejects when the worker reports an error. */
function reply(w: Worker): Promise<WorkerReply> {
  return new Promise((resolve, reject) => {
    w.onmessage = (e: MessageEvent<WorkerReply>) =>
      e.data.ok ? resolve(e.data) : reject(new Error(`Worker failed: ${e.data.error}`));
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault?.();
      reject(new Error(`Worker error: ${e.message}`));
    };
  });
}

function call(w: Worker, req: WorkerRequest): Promise<WorkerReply> {
  const r = reply(w);
  w.postMessage(req);
  return r;
}

/** The scratch directory while it exists, for the signal handlers to remove. */
let scratch: string | null = null;

function removeScratch(): void {
  if (scratch !== null) rmSync(scratch, { recursive: true, force: true });
  scratch = null;
}

// Ctrl-C, SIGTERM or a closed terminal end the run, as by default, but take the scratch file
// with them: it was left behind in the temp directory (64 MiB each time).
for (const [signal, status] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
  process.on(signal, () => {
    removeScratch();
    process.exit(status);
  });
}

async function main(): Promise<void> {
  const o = parseArgs(commandArgs());
  let path = o.path;
  const url = new URL("./_workers_worker.ts", import.meta.url).href;
  const workers: Worker[] = [];
  try {
    if (path === null) {
      // In the try: a write that failed (a full temp directory) left the directory behind.
      scratch = mkdtempSync(join(os.tmpdir(), "blkio-workers-"));
      path = join(scratch, "disk.img");
      writeFileSync(path, new Uint8Array(64 << 20));
    }
    for (let i = 0; i < o.threads; i++) {
      const w = new Worker(url, { type: "module" });
      workers.push(w);
      await reply(w);
      const { capacity } = await call(w, { cmd: "open", path, direct: o.direct });
      // Never write past the end: that would grow a file, or fail on a device.
      if (capacity! < o.threads * SLICE) {
        throw new Error(
          `${path} holds ${capacity} bytes: ${o.threads} threads need ${o.threads * SLICE} (1 MiB each)`,
        );
      }
    }
    const slice = SLICE;
    await Promise.all(
      workers.map((w, i) => call(w, { cmd: "fill", offset: i * slice, len: slice, seed: i + 1 })),
    );
    const checks = await Promise.all(workers.map((w, i) => {
      const other = (i + 1) % o.threads;
      return call(w, { cmd: "check", offset: other * slice, len: slice, seed: other + 1 });
    }));
    checks.forEach((c, i) => {
      const other = (i + 1) % o.threads;
      console.log(`thread ${i}: checked thread ${other}'s slice, ${c.mismatches} wrong bytes`);
      if (c.mismatches !== 0) process.exitCode = 1;
    });
    const runs = await Promise.all(
      workers.map((w) => call(w, { cmd: "randread", seconds: o.seconds, depth: 32 })),
    );
    let total = 0;
    runs.forEach((r, i) => {
      const iops = r.reads! / r.seconds!;
      total += iops;
      console.log(`thread ${i}: ${Math.round(iops)} IOPS (4 KiB random reads, depth 32)`);
    });
    console.log(
      `total: ${Math.round(total)} IOPS with ${o.threads} threads on ${o.path ?? "a scratch file"}`,
    );
  } finally {
    // Every Worker closes its device before it is terminated, on the error path too:
    // terminate() runs no more code in the Worker, and a device left open keeps its fds and
    // memory for the life of the process (4 fds a Worker on Bun, 7 on Deno, one more per further memory region).
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled(workers.map((w) => call(w, { cmd: "close" }))),
      new Promise((resolve) => (timer = setTimeout(resolve, 5000))),
    ]);
    clearTimeout(timer);
    for (const w of workers) w.terminate();
    removeScratch();
  }
}

try {
  await main();
} catch (e) {
  // What went wrong, without a stack trace: these are the user's mistakes or the device's.
  console.error(`workers: ${e instanceof Error ? e.message : String(e)}`);
  if (e instanceof UsageError) console.error(USAGE);
  process.exit(1);
}
