/**
 * The library at a git revision against the working tree, in one process: 4 KiB random reads of
 * a page-cached file at iodepth 1 through `Queue.read` + `doIo(out, 1, 1)`, the two versions in
 * interleaved rounds (the order rotated each round), medians and the median of the per-round
 * ratios new/base.
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
 * Usage: deno run -A bench/ab_bench.ts [--base HEAD] [--rounds 11] [--requests 100000]
 *                                     [--order AB|BA] [--size-mib 256] [--buffer region|plain]
 *                                     [--json]
 *        bun bench/ab_bench.ts [same options]
 *
 * @module
 */
import process from "node:process";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as current from "../mod.ts";
import { median, writePageCachedFile } from "./_common.ts";

const BS = 4096;
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

interface Options {
  base: string;
  rounds: number;
  requests: number;
  order: "AB" | "BA";
  sizeMiB: number;
  buffer: "region" | "plain";
  json: boolean;
}

function usage(error: string): never {
  console.error(`ab_bench: ${error}`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    base: "HEAD",
    rounds: 11,
    requests: 100_000,
    order: "AB",
    sizeMiB: 256,
    buffer: "region",
    json: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--json") {
      o.json = true;
      continue;
    }
    const v = argv[++i];
    if (v === undefined) usage(`${a} needs a value`);
    if (a === "--base") o.base = v;
    else if (a === "--order" && (v === "AB" || v === "BA")) o.order = v;
    else if (a === "--buffer" && (v === "region" || v === "plain")) o.buffer = v;
    else if (a === "--rounds" || a === "--requests" || a === "--size-mib") {
      const n = Number(v);
      if (!Number.isInteger(n) || n <= 0) usage(`${a} needs a positive integer`);
      if (a === "--rounds") o.rounds = n;
      else if (a === "--requests") o.requests = n;
      else o.sizeMiB = n;
    } else usage(`unknown option or value: ${a} ${v}`);
  }
  return o;
}

/** What both versions of mod.ts export and this uses. */
type Lib = Pick<typeof current, "Blkio" | "newCompletion">;

/** A read loop at iodepth 1 over `path` through library `lib`; throws if a read fails. */
function readLoop(lib: Lib, path: string, blocks: number, buffer: Options["buffer"]) {
  const b = lib.Blkio.create("io_uring");
  b.setStr("path", path);
  b.setBool("read-only", true);
  b.connect();
  b.start();
  const q = b.getQueue(0)!;
  let buf: Uint8Array;
  if (buffer === "region") {
    const r = b.allocMemRegion(BS);
    b.mapMemRegion(r);
    buf = r.bytes.subarray(0, BS);
  } else {
    buf = new Uint8Array(new ArrayBuffer(BS));
  }
  const out = [lib.newCompletion()];
  return {
    run(count: number): void {
      for (let k = 0; k < count; k++) {
        q.read(Math.floor(Math.random() * blocks) * BS, buf, k);
        if (q.doIo(out, 1, 1) !== 1 || out[0].ret !== 0) throw new Error(`read failed: ${out[0].ret}`);
      }
    },
    close: () => b.destroy(),
  };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), "blkio-ab-"));
  try {
    let archive: Buffer;
    try {
      archive = execFileSync("git", ["-C", ROOT, "archive", opts.base, "src", "ffi", "mod.ts"]);
    } catch (e) {
      usage(`git archive ${opts.base} failed (needs git and the repository): ${(e as Error).message}`);
    }
    const baseDir = join(dir, "base");
    mkdirSync(baseDir);
    execFileSync("tar", ["-x", "-C", baseDir], { input: archive });
    const base = await import(pathToFileURL(join(baseDir, "mod.ts")).href) as Lib;

    const path = join(dir, "file.img");
    writePageCachedFile(path, opts.sizeMiB);
    const blocks = (opts.sizeMiB << 20) / BS;

    const made = opts.order === "AB"
      ? [["base", readLoop(base, path, blocks, opts.buffer)], [
        "new",
        readLoop(current, path, blocks, opts.buffer),
      ]]
      : [["new", readLoop(current, path, blocks, opts.buffer)], [
        "base",
        readLoop(base, path, blocks, opts.buffer),
      ]];
    const loops = made as [string, ReturnType<typeof readLoop>][];
    for (const [, l] of loops) l.run(Math.min(30_000, opts.requests)); // warm-up: JIT and page cache
    const ns: Record<string, number[]> = { base: [], new: [] };
    for (let r = 0; r < opts.rounds; r++) {
      for (let k = 0; k < loops.length; k++) {
        const [name, l] = loops[(k + r) % loops.length];
        const t0 = performance.now();
        l.run(opts.requests);
        ns[name].push((performance.now() - t0) * 1e6 / opts.requests);
      }
    }
    for (const [, l] of loops) l.close();
    const ratio = median(ns.new.map((x, i) => x / ns.base[i]));
    const runtime = "Bun" in globalThis ? "bun" : "deno";
    const result = {
      runtime,
      base: opts.base,
      order: opts.order,
      buffer: opts.buffer,
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
        `(4 KiB page-cached reads, iodepth 1, ${opts.rounds} rounds of ${opts.requests}, order ${opts.order}); ` +
        `new/base, median of the rounds' ratios: ${result.ratio.toFixed(3)}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
