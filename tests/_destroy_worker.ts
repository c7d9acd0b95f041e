// For faults.test.ts, in a Worker or in the test's own thread: reads 32 stamped blocks of a slow
// export into plain Uint8Arrays (the thread's heap), a memory region, or both (readv), destroys the
// instance with the reads still in the kernel, and reports how long destroy() took and how many
// buffers hold their block. As a Worker it answers one message { path, memory, failEnters }.
import { openInstance } from "./_child.ts";
import { withHookedEnters } from "./_rewrite_results.ts";

const scope = globalThis as unknown as {
  onmessage:
    | ((e: MessageEvent<{ path: string; memory: "plain" | "region" | "mixed"; failEnters?: number }>) => void)
    | null;
  postMessage(message: unknown): void;
};
const BLOCK = 4096;
const COUNT = 32;
const STRIDE = 256 * 1024;
const ENOMEM = 12;

/**
 * What destroy() did to reads still in the kernel; `landed` is null for a region (detached).
 * `mixed`: each request a readv of a block of a region and a plain block, the plain one counted.
 * The first `failEnters` io_uring_enter calls of destroy() fail ENOMEM (a passing shortage).
 */
export function readThenDestroy(
  path: string,
  memory: "plain" | "region" | "mixed",
  failEnters = 0,
): { destroyMs: number; landed: number | null } {
  const b = openInstance(path, { direct: true });
  const q = b.getQueue(0)!;
  const region = memory === "plain" ? null : b.allocMemRegion(COUNT * BLOCK);
  const inRegion = (i: number) => region!.bytes.subarray(i * BLOCK, (i + 1) * BLOCK);
  const bufs = Array.from(
    { length: COUNT },
    (_, i) => memory === "region" ? inRegion(i) : new Uint8Array(BLOCK),
  );
  for (let i = 0; i < COUNT; i++) {
    if (memory === "mixed") q.readv(i * STRIDE, [inRegion(i), bufs[i]], i);
    else q.read(i * STRIDE, bufs[i], i);
  }
  q.doIo([], 0, 0); // hand them to the kernel, reap nothing
  const t0 = performance.now();
  let left = failEnters;
  if (left === 0) b.destroy();
  else withHookedEnters({ fail: () => left-- > 0 ? -ENOMEM : undefined }, () => b.destroy());
  const destroyMs = performance.now() - t0;
  // Block i's first word is its block number (stampedImage in faults.test.ts); a mixed readv's
  // plain half holds the block after its region half. A region's memory is no longer reachable
  // after destroy (its ArrayBuffer is detached).
  const first = memory === "mixed" ? 1 : 0;
  const landed = memory === "region"
    ? null
    : bufs.filter((buf, i) =>
      new DataView(buf.buffer, buf.byteOffset).getUint32(0, true) === i * STRIDE / BLOCK + first
    ).length;
  return { destroyMs, landed };
}

// A module of the test's own thread imports this too: only a Worker (Deno: a WorkerGlobalScope;
// Bun: not the main thread) answers messages.
const bun = (globalThis as { Bun?: { isMainThread: boolean } }).Bun;
const worker = bun
  ? !bun.isMainThread
  : typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope === "function";
if (worker) {
  scope.onmessage = ({ data: { path, memory, failEnters } }) =>
    scope.postMessage(readThenDestroy(path, memory, failEnters));
}
