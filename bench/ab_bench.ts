/**
 * The library at a git revision against the working tree, in one process: reads (or writes) of
 * 4 KiB (`--bs`) at random offsets (`--seq`: in order) through `Queue.read` / `Queue.write` +
 * `doIo(out, 1, iodepth)`, every completed request replaced at once (blkio_bench's default
 * loop), the two versions in interleaved rounds (the order rotated each round), medians and the
 * median of the per-round ratios new/base. By default on a page-cached file it writes itself,
 * at iodepth 1; `--path` takes any file or block device (`--direct` for O_DIRECT; `--rw write`
 * overwrites it with random data); `--drop-caches` (root) empties the page cache before every
 * round, so buffered reads of a file on a real disk start cold. `--event` sends the requests
 * through `BlockDevice` instead, `iodepth` loops each awaiting one request at a time.
 *
 * Why in one process: on a shared VM the speed of separate runs drifts by ±10-40% within
 * minutes, while two copies of the same code in one process stay within a few per cent of each
 * other. Run it with `--base` set to the working tree's own HEAD before changing anything to see
 * that A/A spread on the machine at hand; differences inside it mean nothing. Run it in both
 * creation orders (`--order`), as the copy set up second can run a little differently.
 *
 * The base revision's `src/`, `ffi/` and `mod.ts` are extracted with `git archive` into a
 * temporary directory and imported from there, so it needs git and the repository.
 *
 * Usage: `deno run -A bench/ab_bench.ts [options]` or `bun bench/ab_bench.ts [options]`; `--help`
 * lists the options (USAGE below). A usage error exits 1 with the message and the usage on
 * stderr, as the example tools do; a base revision, path or page cache it cannot use, 1 with the
 * message.
 *
 * @module
 */
import process from "node:process";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as current from "../mod.ts";
import { cannot, median, parseOptions, runTool, usage, writePageCachedFile } from "./_common.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

interface Options {
  base: string;
  rounds: number;
  requests: number;
  order: "AB" | "BA";
  sizeMib: number;
  buffer: "region" | "plain";
  iodepth: number;
  /** Bytes a request (4096 by default). */
  bs: number;
  /** Sequential offsets (wrapping at the end) instead of random ones. */
  seq: boolean;
  rw: "read" | "write";
  /** A file or block device to use instead of a page-cached file made for the run. */
  path: string | null;
  direct: boolean;
  event: boolean;
  /** Drop the kernel's page cache before every round (root), so buffered reads start cold. */
  dropCaches: boolean;
  json: boolean;
}

const USAGE = `Usage: ab_bench.ts [--base HEAD] [--rounds 11] [--requests 100000]
                   [--order AB|BA] [--size-mib 256] [--buffer region|plain]
                   [--iodepth 1] [--bs 4096] [--seq] [--rw read|write]
                   [--path P [--direct]] [--drop-caches]
                   [--event] [--json]`;

/** The options, or null for `--help`. */
function parseArgs(argv: string[]): Options | null {
  const o = parseOptions<Options>(argv, {
    base: "HEAD",
    rounds: 11,
    requests: 100_000,
    order: "AB",
    sizeMib: 256,
    buffer: "region",
    iodepth: 1,
    bs: 4096,
    seq: false,
    rw: "read",
    path: null,
    direct: false,
    event: false,
    dropCaches: false,
    json: false,
  }, { order: ["AB", "BA"], buffer: ["region", "plain"], rw: ["read", "write"] });
  if (o === null) return null;
  if (o.bs % 512 !== 0) usage("--bs needs a multiple of 512");
  if (o.direct && o.buffer === "plain") usage("--direct needs --buffer region (aligned memory)");
  if (o.direct && o.path === null) usage("--direct needs --path (the file made for the run is page-cached)");
  return o;
}

const DROP_CACHES = "/proc/sys/vm/drop_caches";

/**
 * Drops the clean pages of the page cache, so the next round's buffered reads come from the
 * device (with readahead) as in a first read of the data, not from memory.
 */
function dropCaches(): void {
  writeFileSync(DROP_CACHES, "1\n");
}

/** What both versions of mod.ts export and this uses. */
type Lib = Pick<typeof current, "Blkio" | "BlockDevice" | "newCompletion">;

/** One version's loop: `run` does `count` requests. */
interface Loop {
  run(count: number): void | Promise<void>;
  close(): void | Promise<void>;
}

/** Random data in the buffers of a write workload (getRandomValues takes at most 64 KiB). */
function fillForWrites(mem: Uint8Array, opts: Options): void {
  if (opts.rw === "write") crypto.getRandomValues(mem.subarray(0, Math.min(mem.length, 65536)));
}

/** The block of each next request: random, or in order from 0, wrapping at `blocks`. */
function blockPicker(blocks: number, seq: boolean): () => number {
  let next = -1;
  return seq ? () => (next = (next + 1) % blocks) : () => Math.floor(Math.random() * blocks);
}

/**
 * A loop keeping `opts.iodepth` requests in flight on `path` through library `lib`, replacing
 * each completed one at once; throws if a request fails.
 */
function ioLoop(lib: Lib, path: string, blocks: number, opts: Options): Loop {
  const depth = opts.iodepth, bs = opts.bs;
  const nextBlock = blockPicker(blocks, opts.seq);
  const b = lib.Blkio.create("io_uring");
  b.setStr("path", path);
  b.setBool("direct", opts.direct);
  b.setBool("read-only", opts.rw === "read");
  b.connect();
  if (depth > 128) b.setInt("num-entries", depth); // 128 by default
  b.start();
  const q = b.getQueue(0)!;
  let mem: Uint8Array;
  if (opts.buffer === "region") {
    const r = b.allocMemRegion(depth * bs);
    b.mapMemRegion(r);
    mem = r.bytes;
  } else {
    mem = new Uint8Array(new ArrayBuffer(depth * bs));
  }
  fillForWrites(mem, opts);
  const bufs = Array.from({ length: depth }, (_, i) => mem.subarray(i * bs, (i + 1) * bs));
  const out = Array.from({ length: depth }, () => lib.newCompletion());
  const write = opts.rw === "write";
  const issue = (i: number): void => {
    const off = nextBlock() * bs;
    if (write) q.write(off, bufs[i], i);
    else q.read(off, bufs[i], i);
  };
  return {
    run(count: number): void {
      let issued = 0, done = 0;
      for (; issued < Math.min(depth, count); issued++) issue(issued);
      while (done < count) {
        const n = q.doIo(out, 1, depth);
        for (let k = 0; k < n; k++) {
          const c = out[k];
          if (c.ret !== 0) throw new Error(`${opts.rw} failed: ${c.ret} ${c.errorMsg}`);
          done++;
          if (issued < count) {
            issue(c.userData as number);
            issued++;
          }
        }
      }
    },
    close: () => b.destroy(),
  };
}

/** The same through `BlockDevice`: `opts.iodepth` loops each awaiting one request at a time. */
async function eventLoop(lib: Lib, path: string, blocks: number, opts: Options): Promise<Loop> {
  const bs = opts.bs;
  const nextBlock = blockPicker(blocks, opts.seq);
  const dev = await lib.BlockDevice.open(path, { direct: opts.direct, readOnly: opts.rw === "read" });
  const mem = dev.allocBuffer(opts.iodepth * bs);
  fillForWrites(mem, opts);
  const write = opts.rw === "write";
  const lane = async (i: number, count: number): Promise<void> => {
    const buf = mem.subarray(i * bs, (i + 1) * bs);
    for (let k = 0; k < count; k++) {
      const off = nextBlock() * bs;
      await (write ? dev.write(off, buf) : dev.read(off, buf));
    }
  };
  return {
    async run(count: number): Promise<void> {
      const d = opts.iodepth, per = Math.floor(count / d), extra = count % d;
      await Promise.all(Array.from({ length: d }, (_, i) => lane(i, per + (i < extra ? 1 : 0))));
    },
    close: () => dev.close(),
  };
}

/** The size in bytes of a file or block device. */
function sizeOf(path: string): number {
  const st = statSync(path);
  if (!st.isBlockDevice()) return st.size;
  return Number(execFileSync("blockdev", ["--getsize64", path], { encoding: "utf8" }).trim());
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts === null) {
    console.log(USAGE);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "blkio-ab-"));
  try {
    let archive: Buffer;
    try {
      archive = execFileSync("git", ["-C", ROOT, "archive", opts.base, "src", "ffi", "mod.ts"]);
    } catch (e) {
      cannot(`git archive ${opts.base} failed (needs git and the repository): ${(e as Error).message}`);
    }
    const baseDir = join(dir, "base");
    mkdirSync(baseDir);
    execFileSync("tar", ["-x", "-C", baseDir], { input: archive });
    const base = await import(pathToFileURL(join(baseDir, "mod.ts")).href) as Lib;

    let path = opts.path;
    if (path === null) {
      path = join(dir, "file.img");
      writePageCachedFile(path, opts.sizeMib);
    }
    let size: number;
    try {
      size = sizeOf(path);
    } catch (e) {
      cannot(`cannot use --path ${path}: ${(e as Error).message}`);
    }
    const blocks = Math.floor(size / opts.bs);
    if (blocks < 1) cannot(`${path} is smaller than one block`);

    if (opts.dropCaches) {
      try {
        dropCaches();
      } catch (e) {
        cannot(`--drop-caches needs root (it writes ${DROP_CACHES}): ${(e as Error).message}`);
      }
    }
    const make = (lib: Lib): Loop | Promise<Loop> =>
      opts.event ? eventLoop(lib, path, blocks, opts) : ioLoop(lib, path, blocks, opts);
    const names = opts.order === "AB" ? ["base", "new"] : ["new", "base"];
    const loops: [string, Loop][] = [];
    for (const name of names) loops.push([name, await make(name === "base" ? base : current)]);
    for (const [, l] of loops) await l.run(Math.min(30_000, opts.requests)); // warm-up: JIT and page cache
    const ns: Record<string, number[]> = { base: [], new: [] };
    for (let r = 0; r < opts.rounds; r++) {
      for (let k = 0; k < loops.length; k++) {
        const [name, l] = loops[(k + r) % loops.length];
        if (opts.dropCaches) dropCaches();
        const t0 = performance.now();
        await l.run(opts.requests);
        ns[name].push((performance.now() - t0) * 1e6 / opts.requests);
      }
    }
    for (const [, l] of loops) await l.close();
    const ratio = median(ns.new.map((x, i) => x / ns.base[i]));
    const runtime = "Bun" in globalThis ? "bun" : "deno";
    const result = {
      runtime,
      base: opts.base,
      order: opts.order,
      buffer: opts.buffer,
      iodepth: opts.iodepth,
      bs: opts.bs,
      seq: opts.seq,
      rw: opts.rw,
      path: opts.path,
      direct: opts.direct,
      event: opts.event,
      dropCaches: opts.dropCaches,
      rounds: opts.rounds,
      requests: opts.requests,
      baseNs: Math.round(median(ns.base)),
      newNs: Math.round(median(ns.new)),
      ratio: Number(ratio.toFixed(3)),
    };
    if (opts.json) {
      console.log(JSON.stringify(result));
      return;
    }
    console.log(
      `${runtime}: ${opts.base} ${result.baseNs} ns, working tree ${result.newNs} ns a request ` +
        `(${opts.bs / 1024} KiB ${opts.seq ? "sequential" : "random"} ${opts.rw}s of ${
          opts.path ?? "a page-cached file"
        }${opts.direct ? " with O_DIRECT" : ""}${
          opts.dropCaches ? ", page cache dropped each round" : ""
        }, ` +
        `iodepth ${opts.iodepth}${
          opts.event ? " through BlockDevice" : ""
        }, ${opts.rounds} rounds of ${opts.requests}, order ${opts.order}); ` +
        `new/base, median of the rounds' ratios: ${result.ratio.toFixed(3)}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await runTool("ab_bench", USAGE, main);
