// Child of faults.test.ts: the write-back error scenario on loop device <path>, run in a process
// of its own because two of its variants fill the fd table, which the test runner's own threads
// must not meet. Prints one JSON line of the requests' results.
// usage: _write_back_child.ts <loop device> <another fsync|sync(2)|after an fd shortage|during an fd shortage>
import { closeSync, fsyncSync, openSync } from "node:fs";
import { execFileSync } from "node:child_process";
import process from "node:process";
import { type Completion, ReqFlags } from "../mod.ts";
import { fillFdTable, openInstance } from "./_child.ts";

const [path, how] = process.argv.slice(-2);
const MiB = 1 << 20;
const ZERO = ReqFlags.NO_FALLBACK | ReqFlags.NO_UNMAP;

/** Runs `fn` while this process has no free fd, then frees them. */
function withoutFreeFds(fn: () => void): void {
  const held = fillFdTable();
  try {
    fn();
  } finally {
    for (const fd of held) closeSync(fd);
  }
}

using b = openInstance(path);
const q = b.getQueue(0)!;
const out: Completion[] = [];
const results: Record<string, number | string> = {};
/** Reaps `n` completions into `results`, by userData. */
function reap(n: number): void {
  for (let got = 0; got < n;) {
    const k = q.doIo(out, 1, n - got, 20_000_000_000n);
    for (let i = 0; i < k; i++) results[String(out[i].userData)] = out[i].ret;
    got += k;
  }
}

if (how === "after an fd shortage") {
  withoutFreeFds(() => q.writeZeroes(6 * MiB, 64 * 1024, "zeroes without a second file", ZERO));
  reap(1);
}
const region = b.allocMemRegion(4096);
b.mapMemRegion(region);
q.write(2 * MiB, region.bytes.fill(0x99), "lost write");
reap(1);
if (how === "sync(2)") execFileSync("sync");
else {
  const other = openSync(path, "r+");
  try {
    fsyncSync(other);
    results["other fsync"] = "ok";
  } catch (e) {
    results["other fsync"] = String((e as Error).message);
  } finally {
    closeSync(other);
  }
}
if (how === "during an fd shortage") {
  withoutFreeFds(() => q.writeZeroes(5 * MiB, 64 * 1024, "during", ZERO));
  q.writeZeroes(6 * MiB, 64 * 1024, "after", ZERO);
  reap(2);
} else {
  q.writeZeroes(5 * MiB, 64 * 1024, "zeroes", ZERO);
  reap(1);
}
q.flush("flush");
reap(1);
console.log(JSON.stringify(results));
