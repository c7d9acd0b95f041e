/**
 * BlockDevice (promises, event loop) against the synchronous doIo path on the same device in
 * the same run: 4 KiB O_DIRECT random reads at depth 32 on a loop device over tmpfs.
 *
 * - sync:  one Queue, 32 reads kept in flight, `doIo(out, 1, 32)` and resubmit (blkio-bench).
 * - async: 32 concurrent `await dev.read(...)` loops on a BlockDevice, with a 5 ms setInterval
 *          whose largest delay is recorded.
 *
 * Each round runs both, sync first in even rounds and async first in odd ones; the medians are
 * reported. Needs root (losetup) unless a device or file is given with --path.
 *
 * Usage: deno run -A bench/block_device_bench.ts [--seconds 2] [--rounds 5] [--depth 32]
 *                                               [--size-mib 256] [--path DEVICE] [--json]
 *        bun bench/block_device_bench.ts [same options]
 *
 * `--help` prints the options (USAGE below). A usage error exits 1 with the message and the usage
 * on stderr; a --path it cannot open, or no loop device without one, 1 with the message.
 *
 * @module
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
import process from "node:process";
import { Blkio, BlockDevice, type Completion } from "../mod.ts";
import { cannot, median, parseOptions, runTool } from "./_common.ts";
import { tmpfsLoop } from "../tests/_loop_device.ts";

interface Options {
  seconds: number;
  rounds: number;
  depth: number;
  sizeMib: number;
  path: string | null;
  json: boolean;
}

const USAGE = `Usage: block_device_bench.ts [--seconds 2] [--rounds 5] [--depth 32]
                             [--size-mib 256] [--path DEVICE] [--json]
Without --path: a loop device over a tmpfs file of --size-mib MiB (needs root).`;

/** The options, or null for `--help`. */
function parseArgs(argv: string[]): Options | null {
  const defaults = { seconds: 2, rounds: 5, depth: 32, sizeMib: 256, path: null, json: false };
  return parseOptions<Options>(argv, defaults, { seconds: "number" });
}

const BS = 4096;

/** A loop device over a new tmpfs file; returns its path and a cleanup function. */
function makeLoop(sizeMib: number): { path: string; cleanup: () => void } {
  const loop = tmpfsLoop(sizeMib * 1024 * 1024, "bench");
  try {
    // Touch every page so reads hit memory, not tmpfs holes (the loop device reads the file
    // through its page cache, so writing it after the attach is seen).
    execFileSync("dd", [
      `if=/dev/urandom`,
      `of=${loop.backing}`,
      "bs=1M",
      `count=${sizeMib}`,
      "conv=notrunc",
      "status=none",
    ]);
  } catch (e) {
    loop.detach();
    throw e;
  }
  // Interrupted (Ctrl-C, a timeout's SIGTERM): the loop device and its file go too.
  for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    process.once(sig, () => {
      loop.detach();
      process.exit(code);
    });
  }
  return { path: loop.path, cleanup: loop.detach };
}

/**
 * Milliseconds the hypervisor kept this VM's vCPUs from running (the "steal" column of
 * /proc/stat, summed over CPUs), or NaN where that is not available. A long interval delay
 * that coincides with steal time is the host's doing, not the event loop's.
 */
function stealMs(): number {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
    return Number(f[8]) * 10; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

function randomOffset(blocks: number): number {
  return Math.floor(Math.random() * blocks) * BS;
}

/** IOPS of the synchronous path: `depth` reads in flight, doIo(min 1) and resubmit. */
function runSync(path: string, o: Options, blocks: number): { iops: number; cpuUs: number } {
  using b = Blkio.create("io_uring");
  b.setStr("path", path);
  b.setBool("direct", true);
  b.connect();
  b.setInt("num-entries", Math.max(o.depth, 128));
  b.start();
  const q = b.getQueue(0)!;
  const region = b.allocMemRegion(o.depth * BS);
  b.mapMemRegion(region);
  const bufs = Array.from({ length: o.depth }, (_, i) => region.bytes.subarray(i * BS, (i + 1) * BS));
  for (let i = 0; i < o.depth; i++) q.read(randomOffset(blocks), bufs[i], i);
  const out: Completion[] = [];
  let done = 0;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + o.seconds * 1000;
  let now = start;
  while (now < end) {
    const n = q.doIo(out, 1, o.depth);
    for (let k = 0; k < n; k++) {
      const c = out[k];
      if (c.ret !== 0) throw new Error(`read failed: ${c.ret} ${c.errorMsg}`);
      const i = c.userData as number;
      q.read(randomOffset(blocks), bufs[i], i);
    }
    done += n;
    now = performance.now();
  }
  const elapsed = (now - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  // Let the last reads finish before the instance goes away.
  let left = o.depth;
  while (left > 0) left -= q.doIo(out, 1, left);
  return { iops: done / elapsed, cpuUs: (cpu.user + cpu.system) / done };
}

/** IOPS of BlockDevice with `depth` awaited read loops, and the 5 ms interval's worst delay. */
async function runAsync(
  path: string,
  o: Options,
  blocks: number,
): Promise<{ iops: number; maxDelayMs: number; maxGapCpuMs: number; cpuUs: number }> {
  await using dev = await BlockDevice.open(path, { direct: true, numEntries: Math.max(o.depth, 128) });
  const bufs = Array.from({ length: o.depth }, () => dev.allocBuffer(BS));
  let done = 0;
  let maxGap = 0;
  // Process CPU time spent during the worst gap: about the gap's length when the event loop was
  // busy (JavaScript or a blocking call), about 0 when the whole process was kept off the CPU.
  let maxGapCpu = 0;
  let lastCpu = process.cpuUsage();
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const cpuNow = process.cpuUsage();
    if (now - last > maxGap) {
      maxGap = now - last;
      maxGapCpu = (cpuNow.user + cpuNow.system - lastCpu.user - lastCpu.system) / 1000;
    }
    last = now;
    lastCpu = cpuNow;
  }, 5);
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + o.seconds * 1000;
  const loop = async (buf: Uint8Array) => {
    while (performance.now() < end) {
      await dev.read(randomOffset(blocks), buf);
      done++;
    }
  };
  await Promise.all(bufs.map(loop));
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  clearInterval(timer);
  const now = performance.now();
  if (now - last > maxGap) maxGap = now - last;
  return {
    iops: done / elapsed,
    maxDelayMs: Math.max(0, maxGap - 5),
    maxGapCpuMs: maxGapCpu,
    cpuUs: (cpu.user + cpu.system) / done,
  };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o === null) {
    console.log(USAGE);
    return;
  }
  let path = o.path;
  let cleanup = () => {};
  if (path === null) {
    let loop: { path: string; cleanup: () => void };
    try {
      loop = makeLoop(o.sizeMib);
    } catch (e) {
      cannot(`cannot make a loop device over tmpfs (needs root, or give --path): ${(e as Error).message}`);
    }
    path = loop.path;
    cleanup = loop.cleanup;
  }
  try {
    let probe: BlockDevice;
    try {
      probe = await BlockDevice.open(path, { direct: true, readOnly: true });
    } catch (e) {
      cannot(`cannot use --path ${path}: ${(e as Error).message}`);
    }
    const blocks = Number(probe.capacity / BigInt(BS));
    await probe.close();
    if (blocks < 1) cannot(`${path} is smaller than one block (${BS} bytes)`);
    // Warm-up (JIT, page cache of the backing file).
    runSync(path, { ...o, seconds: 0.3 }, blocks);
    await runAsync(path, { ...o, seconds: 0.3 }, blocks);
    const sync: number[] = [];
    const syncCpu: number[] = [];
    const asyncIops: number[] = [];
    const asyncCpu: number[] = [];
    const delays: number[] = [];
    for (let r = 0; r < o.rounds; r++) {
      // Odd rounds run the promise layer first: what one leaves behind (a warm cache, a busy
      // CPU) falls on each side alike.
      let s = r % 2 === 0 ? runSync(path, o, blocks) : null;
      const steal0 = stealMs();
      const a = await runAsync(path, o, blocks);
      const steal = stealMs() - steal0;
      s ??= runSync(path, o, blocks);
      sync.push(s.iops);
      syncCpu.push(s.cpuUs);
      asyncIops.push(a.iops);
      asyncCpu.push(a.cpuUs);
      delays.push(a.maxDelayMs);
      if (!o.json) {
        console.log(
          `round ${r + 1}: sync ${Math.round(s.iops)} IOPS (${s.cpuUs.toFixed(2)} us CPU/read), ` +
            `async ${Math.round(a.iops)} IOPS (${a.cpuUs.toFixed(2)} us CPU/read), ` +
            `${(a.iops / s.iops).toFixed(2)}x, interval max delay ${a.maxDelayMs.toFixed(2)} ms` +
            ` (process CPU in that gap ${a.maxGapCpuMs.toFixed(1)} ms)` +
            (Number.isNaN(steal) ? "" : ` (steal ${steal} ms)`),
        );
      }
    }
    const result = {
      runtime: navigator.userAgent,
      nproc: os.cpus().length,
      kernel: os.release(),
      device: o.path ?? `loop over tmpfs (${o.sizeMib} MiB)`,
      depth: o.depth,
      seconds: o.seconds,
      rounds: o.rounds,
      syncMedianIops: Math.round(median(sync)),
      asyncMedianIops: Math.round(median(asyncIops)),
      ratio: Number((median(asyncIops) / median(sync)).toFixed(3)),
      syncCpuUsPerRead: Number(median(syncCpu).toFixed(2)),
      asyncCpuUsPerRead: Number(median(asyncCpu).toFixed(2)),
      intervalMaxDelayMs: Number(Math.max(...delays).toFixed(2)),
      intervalMedianOfMaxDelayMs: Number(median(delays).toFixed(2)),
    };
    if (o.json) console.log(JSON.stringify(result));
    else {
      console.log(
        `${result.runtime}: sync median ${result.syncMedianIops} IOPS, async median ${result.asyncMedianIops} ` +
          `IOPS, ratio ${result.ratio}x; 5 ms interval max delay ${result.intervalMaxDelayMs} ms ` +
          `(median of per-round maxima ${result.intervalMedianOfMaxDelayMs} ms)`,
      );
    }
  } finally {
    cleanup();
  }
}

await runTool("block_device_bench", USAGE, main);
