/**
 * Where the time of one request goes at iodepth 1, layer by layer, in one process: 4 KiB random
 * reads of a page-cached file (nothing sleeps, so every nanosecond of JavaScript shows), one
 * request at a time, through
 *
 * - **ring**: a bare loop over the same `Ring` (write the SQE, `io_uring_enter(1, 1)`, read the
 *   CQ): the floor for JavaScript on io_uring, a system call and a page copy per request;
 * - **driver queue**: `IoUringQueue` (`tryEnqueue` + `enter` + `reap`), the driver's slot
 *   table and SQE preparation on top of the ring;
 * - **Queue**: the public `Queue.read` + `doIo(out, 1, 1)`, with its checks and backlogs.
 *
 * The layers run interleaved, in an order rotated each round, so drifts of a shared machine hit
 * them alike; medians of the rounds are reported. The differences between rows are what each
 * layer costs per request. All use the same plain (unregistered) buffer and a registered file.
 *
 * `--kernel fake` puts a JavaScript stand-in in place of `io_uring_enter` (bench/_fake_kernel.ts:
 * every SQE completes at once, no data moves): what the JavaScript of each layer costs with no
 * system call at all. `--kernel fake-syscall` adds one cheap system call (close(-1)) per enter:
 * the same JavaScript, run right after a trip to the kernel.
 *
 * Usage: deno run -A bench/layers_bench.ts [--requests 100000] [--rounds 9] [--size-mib 256]
 *                                          [--kernel real|fake|fake-syscall] [--json]
 *        bun bench/layers_bench.ts [same options]
 *
 * `--help` prints the options (USAGE below); a usage error exits 1 with the message and the
 * usage on stderr.
 *
 * @module
 */
import process from "node:process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadError, native } from "../ffi/load.ts";
import { installFakeKernel } from "./_fake_kernel.ts";
import { median, parseOptions, runTool, writePageCachedFile } from "./_common.ts";
import { Blkio, type Completion, newCompletion } from "../mod.ts";
import { Op } from "../src/completion.ts";
import { CompletionBacklog } from "../src/completion_backlog.ts";
import { IoUringQueue, regularRingFlags } from "../src/drivers/io_uring/queue.ts";
import { targetInfo } from "../src/drivers/io_uring/target_info.ts";
import { closeFd, openPath } from "../src/sys.ts";
import { IORING_ENTER_GETEVENTS, IOSQE_FIXED_FILE } from "../src/uring/constants.ts";
import { Ring } from "../src/uring/ring.ts";
import { prepRead, setSqeFlags, setUserData } from "../src/uring/sqe.ts";

const BS = 4096;

interface Options {
  requests: number;
  rounds: number;
  sizeMib: number;
  kernel: Kernel;
  json: boolean;
}

type Kernel = "real" | "fake" | "fake-syscall";

const USAGE = `Usage: layers_bench.ts [--requests 100000] [--rounds 9] [--size-mib 256]
                       [--kernel real|fake|fake-syscall] [--json]`;

/** The options, or null for `--help`. */
function parseArgs(argv: string[]): Options | null {
  const defaults = { requests: 100_000, rounds: 9, sizeMib: 256, kernel: "real" as Kernel, json: false };
  return parseOptions(argv, defaults, { kernel: ["real", "fake", "fake-syscall"] });
}

/** A layer: runs `count` requests at iodepth 1, throws if one fails. */
interface Layer {
  name: string;
  keepAlive?: unknown;
  run(count: number): void;
  close(): void;
}

function ringLayer(path: string, blocks: number): Layer {
  const n = native!;
  const fd = openPath(n, path, 0);
  // The driver's ring flags for this file, so the layers differ in code only.
  const ring = new Ring(n, 128, 0, regularRingFlags(targetInfo(n, fd)));
  ring.registerFiles([fd]);
  const buf = n.alloc(BS);
  const addr = n.addressOf(buf.buffer as ArrayBuffer);
  return {
    name: "ring (bare loop)",
    // The kernel writes to `addr`: the buffer must stay reachable for as long as the ring is used
    // (the library's queues hold every request's buffer for this reason). Without this reference
    // the garbage collector freed it, and Deno's malloc heap was corrupted within a few rounds.
    keepAlive: buf,
    run(count) {
      const sqes = ring.sqes, res = ring.cqesRes, mask = ring.cqMask;
      for (let k = 0; k < count; k++) {
        const i = ring.nextSqe();
        prepRead(sqes, i, 0, addr, BS, Math.floor(Math.random() * blocks) * BS);
        setSqeFlags(sqes, i, IOSQE_FIXED_FILE);
        setUserData(sqes, i, 1);
        const r = ring.enter(1, IORING_ENTER_GETEVENTS, -1);
        if (r < 0) throw new Error(`io_uring_enter: ${r}`);
        let head = ring.cqHead();
        const tail = ring.cqTail();
        for (; head !== tail; head = (head + 1) >>> 0) {
          if (res[((head & mask) << 2) + 2] !== BS) throw new Error("read failed");
        }
        ring.setCqHead(head);
      }
    },
    close() {
      ring.close();
      closeFd(n, fd);
    },
  };
}

function driverLayer(path: string, blocks: number): Layer {
  const n = native!;
  const fd = openPath(n, path, 0);
  const dq = new IoUringQueue(n, { poll: false, entries: 128, fd, target: targetInfo(n, fd) });
  dq.completions = new CompletionBacklog();
  const buf = n.alloc(BS);
  const out: Completion[] = [newCompletion()];
  return {
    name: "driver queue (IoUringQueue)",
    run(count) {
      for (let k = 0; k < count; k++) {
        dq.tryEnqueue(Op.Read, Math.floor(Math.random() * blocks) * BS, buf, null, BS, k, 0);
        const r = dq.enter(1, -1);
        if (r < 0) throw new Error(`enter: ${r}`);
        if (dq.reap(out, 0, 1) !== 1 || out[0].ret !== 0) throw new Error("read failed");
      }
    },
    close() {
      dq.destroy();
      closeFd(n, fd);
    },
  };
}

function queueLayer(path: string, blocks: number): Layer {
  const b = Blkio.create("io_uring");
  b.setStr("path", path);
  b.setBool("read-only", true);
  b.connect();
  b.start();
  const q = b.getQueue(0)!;
  const buf = native!.alloc(BS);
  const out: Completion[] = [newCompletion()];
  return {
    name: "Queue (read + doIo)",
    run(count) {
      for (let k = 0; k < count; k++) {
        q.read(Math.floor(Math.random() * blocks) * BS, buf, k);
        if (q.doIo(out, 1, 1) !== 1 || out[0].ret !== 0) throw new Error("read failed");
      }
    },
    close: () => b.destroy(),
  };
}

function main(): void {
  const opts = parseArgs(process.argv.slice(2));
  if (opts === null) {
    console.log(USAGE);
    return;
  }
  if (!native) throw loadError;
  const dir = mkdtempSync(join(tmpdir(), "blkio-layers-"));
  const path = join(dir, "file.img");
  try {
    writePageCachedFile(path, opts.sizeMib);
    const blocks = (opts.sizeMib << 20) / BS;
    if (opts.kernel !== "real") installFakeKernel(native, opts.kernel === "fake-syscall");
    const layers = [ringLayer(path, blocks), driverLayer(path, blocks), queueLayer(path, blocks)];
    const ns: number[][] = layers.map(() => []);
    for (const l of layers) l.run(Math.min(20_000, opts.requests)); // warm-up: JIT and page cache
    for (let r = 0; r < opts.rounds; r++) {
      for (let k = 0; k < layers.length; k++) {
        const i = (k + r) % layers.length;
        const t0 = performance.now();
        layers[i].run(opts.requests);
        ns[i].push((performance.now() - t0) * 1e6 / opts.requests);
      }
    }
    for (const l of layers) l.close();
    const rows = layers.map((l, i) => ({ layer: l.name, nsPerRequest: Math.round(median(ns[i])) }));
    if (opts.json) {
      console.log(JSON.stringify({ runtime: native.runtime, ...opts, rows }));
      return;
    }
    console.log(
      `${native.runtime}: 4 KiB ${
        opts.kernel === "real" ? "page-cached random reads" : `reads completed by a ${opts.kernel} kernel`
      } at iodepth 1, ${opts.rounds} rounds of ${opts.requests} requests per layer, interleaved; medians`,
    );
    let prev = 0;
    for (const r of rows) {
      const extra = prev === 0 ? "" : `  (+${r.nsPerRequest - prev} ns)`;
      console.log(`  ${r.layer.padEnd(30)} ${String(r.nsPerRequest).padStart(6)} ns/request${extra}`);
      prev = r.nsPerRequest;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await runTool("layers_bench", USAGE, main);
