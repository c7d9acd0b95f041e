// The supported multi-threaded pattern: several Workers, each with its own BlockDevice (its own
// instance and queue) on one device, like libblkio's blkio-bench --num-threads. They write
// disjoint ranges in parallel, then each verifies another Worker's range.
import { test } from "node:test";
import assert from "./_assert.ts";
import { cleanupAll, loopUnavailableReason, pread, scratchFile, scratchLoop } from "./_helpers.ts";

const WORKERS = 4;
const RANGE = 1 << 20;
const path = loopUnavailableReason() === null ? scratchLoop(WORKERS * RANGE) : scratchFile(WORKERS * RANGE);

function byteAt(seed: number, j: number): number {
  return (j * 7 + seed * 101 + (j >> 12)) & 0xff;
}

interface Reply {
  ok: boolean;
  error?: string;
  mismatches?: number;
}

/** The next reply of `w`. */
function reply(w: Worker): Promise<Reply> {
  return new Promise((resolve, reject) => {
    w.onmessage = (e: MessageEvent<Reply>) => {
      if (e.data.ok) resolve(e.data);
      else reject(new Error(`worker failed: ${e.data.error}`));
    };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault?.();
      reject(new Error(`worker error: ${e.message}`));
    };
  });
}

/** Sends one request to `w` and waits for its reply. */
function call(w: Worker, msg: unknown): Promise<Reply> {
  const r = reply(w);
  w.postMessage(msg);
  return r;
}

test("BlockDevice in Workers: separate queues write disjoint ranges and verify each other's data", async () => {
  const url = new URL("./_block_device_worker.ts", import.meta.url).href;
  const workers: Worker[] = [];
  try {
    // One at a time until each has loaded and listens (Deno type-checks a worker's module
    // graph once, then reuses the result).
    for (let i = 0; i < WORKERS; i++) {
      const w = new Worker(url, { type: "module" });
      workers.push(w);
      await reply(w);
    }
    await Promise.all(workers.map((w) => call(w, { cmd: "open", path })));
    await Promise.all(
      workers.map((w, i) => call(w, { cmd: "write", offset: i * RANGE, len: RANGE, seed: i + 1 })),
    );
    const verified = await Promise.all(
      workers.map((w, i) => {
        const other = (i + 1) % WORKERS;
        return call(w, { cmd: "verify", offset: other * RANGE, len: RANGE, seed: other + 1 });
      }),
    );
    for (const [i, r] of verified.entries()) assert.equal(r.mismatches, 0, `worker ${i} saw wrong bytes`);
    await Promise.all(workers.map((w) => call(w, { cmd: "close" })));
  } finally {
    for (const w of workers) w.terminate();
  }
  // And the main thread sees what they wrote.
  const all = pread(path, 0, WORKERS * RANGE);
  for (let i = 0; i < WORKERS; i++) {
    for (let j = 0; j < RANGE; j += 4093) {
      if (all[i * RANGE + j] !== byteAt(i + 1, j)) assert.fail(`range ${i} byte ${j} is wrong`);
    }
  }
});

// The library loaded its runtime adapter with a top-level await, so a module importing it finished
// loading asynchronously, and Bun dropped the messages posted to such a Worker before it had set
// its onmessage: the caller waited for ever.
test("Workers: a message posted at once to a Worker that imports the library reaches it", async () => {
  const url = new URL("./_echo_worker.ts", import.meta.url).href;
  const workers = Array.from({ length: 4 }, () => new Worker(url, { type: "module" }));
  try {
    const answers = await Promise.all(workers.map((w, i) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`worker ${i} never answered`)), 20_000);
        w.onmessage = (e: MessageEvent<{ echo: number }>) => {
          clearTimeout(timer);
          resolve(e.data.echo);
        };
        w.postMessage(i);
      })
    ));
    assert.deepEqual(answers, [0, 1, 2, 3]);
  } finally {
    for (const w of workers) w.terminate();
  }
});

test("block_device_workers: cleanup scratch targets", () => cleanupAll());
