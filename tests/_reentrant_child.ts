// Child of lifecycle.test.ts: caller code that runs inside doIo (a setter on an `out`
// entry) destroys the instance, removes the queue, or calls doIo again. Prints what happened
// as JSON; a crash shows as a non-zero exit.
import process from "node:process";
import { writeFileSync } from "node:fs";
import type { Completion } from "../mod.ts";
import { openInstance } from "./_child.ts";

const [path, what] = process.argv.slice(2);
writeFileSync(path, new Uint8Array(65536).fill(1));
const b = openInstance(path);
const q = b.getQueue(0)!;
const N = 8;
for (let i = 0; i < N; i++) q.read(i * 4096, new Uint8Array(4096), i);
// Let every read finish in the kernel first, so one reap meets several CQEs.
q.doIo([], 0, 0);
const t0 = performance.now();
while (performance.now() - t0 < 200) { /* spin: io_uring completes buffered reads inline or soon */ }
const seen: unknown[] = [];
let fired = false;
let inner: unknown = null;
const hook = {
  ret: 0,
  errorMsg: null as string | null,
  set userData(v: unknown) {
    seen.push(v);
    if (fired) return;
    fired = true;
    try {
      if (what === "destroy") b.destroy();
      else if (what === "remove") b.removeQueue(0);
      else if (what === "nested") {
        const more: Completion[] = [];
        q.doIo(more, 0, N);
        inner = more.map((c) => c.userData);
        for (const u of inner as unknown[]) seen.push(u);
      }
    } catch (e) {
      inner = String((e as Error).message ?? e);
    }
  },
  get userData(): unknown {
    return seen.at(-1);
  },
};
const out: Completion[] = [hook as unknown as Completion];
let outer: unknown = null;
try {
  const n = q.doIo(out, 0, N);
  for (let i = 1; i < n; i++) seen.push(out[i].userData);
  outer = n;
} catch (e) {
  outer = String((e as Error).message ?? e);
}
// Whatever is left (the nested case), reaped as usual.
if (!b.destroyed) {
  try {
    const rest: Completion[] = [];
    const n = q.doIo(rest, 0, N);
    for (let i = 0; i < n; i++) seen.push(rest[i].userData);
  } catch {
    // removed
  }
  b.destroy();
}
console.log(JSON.stringify({ outer, inner, seen }));
