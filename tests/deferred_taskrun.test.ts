// IORING_SETUP_DEFER_TASKRUN (Linux 6.1): completions that do not finish inside the submitting
// call (the kernel's worker threads, device interrupts) reach the CQ only when the queue's thread
// enters the kernel with GETEVENTS, and since Linux 6.13 one such entry posts at most 20 of them.
// A doIo(min 0) that returned after one entry would hand back 20 while more had completed, and a
// caller draining "until fewer than max" would stop with them left behind.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { release } from "node:os";
import { Blkio, type Completion, newCompletion } from "../mod.ts";
import { loadError, native } from "../ffi/load.ts";
import type { Native } from "../ffi/types.ts";
import { Op } from "../src/completion.ts";
import { CompletionBacklog } from "../src/completion_backlog.ts";
import { IoUringQueue, REGULAR_RING_FLAGS } from "../src/drivers/io_uring/queue.ts";
import { targetInfo } from "../src/drivers/io_uring/target_info.ts";
import { closeFd, openPath } from "../src/sys.ts";
import { Ring } from "../src/uring/ring.ts";
import {
  alignedBuffer,
  cleanupAll,
  pwrite,
  scratchDir,
  scratchFile,
  stamped,
  type Target,
  targets,
} from "./_helpers.ts";
import { PAGE, sleepMs, tryReadEventfd, waitEventfd } from "./_io.ts";

const N = ((): Native => {
  assert.ok(native, String(loadError));
  return native;
})();

/** Why DEFER_TASKRUN cannot be expected here, or null (Linux 6.1 and later). */
function unsupportedReason(): string | null {
  const [major, minor] = release().split(".").map((s) => parseInt(s, 10));
  return major > 6 || (major === 6 && minor >= 1) ? null : `Linux ${release()} has no DEFER_TASKRUN (6.1+)`;
}

test("deferred task work: regular queues' rings use DEFER_TASKRUN where the kernel has it", (t) => {
  const why = unsupportedReason();
  if (why !== null) return t.skip(why);
  const ring = new Ring(N, 8, 0, REGULAR_RING_FLAGS);
  try {
    assert.equal(ring.deferTaskrun, true);
    assert.equal(ring.taskrunFlag, true);
  } finally {
    ring.close();
  }
});

const SIZE = 8 * 1024 * 1024;
const TARGETS: Target[] = targets(SIZE);
// Buffered reads of a tmpfs file always go to the kernel's worker threads: every completion is
// deferred work there.
if (existsSync("/dev/shm")) {
  const path = scratchFile(SIZE, 0x5a, scratchDir("/dev/shm"));
  TARGETS.push({ name: "tmpfs file", path, direct: false, isBlockDevice: false, size: SIZE });
}

for (const t of TARGETS) {
  test(`deferred task work: a burst of 128 completions behind one eventfd signal is all reaped [${t.name}]`, () => {
    const count = 128;
    using b = Blkio.create("io_uring");
    b.setStr("path", t.path);
    b.setBool("direct", t.direct);
    b.setBool("read-only", true);
    b.connect();
    b.setInt("num-entries", count);
    b.start();
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, count * PAGE);
    for (let i = 0; i < count; i++) q.read(i * PAGE, buf.subarray(i * PAGE, (i + 1) * PAGE), i);
    assert.equal(q.doIo([], 0, 0), 0); // submit only
    // Taken with requests in flight, so the ring keeps DEFER_TASKRUN (an idle queue's would be
    // remade without it).
    const fd = q.completionFd;
    q.setCompletionFdEnabled(true);
    // Let them all complete unreaped: more than one kernel entry posts.
    sleepMs(100);
    // Event-driven use as BlockDevice does it: wait for the fd, then drain until a call returns
    // fewer than it could take (64, more than the 20 one kernel entry posts). That drain must
    // take everything that had completed: a caller stops there, and waits on an fd that may not
    // be signalled again.
    const seen = new Set<number>();
    const out: Completion[] = [];
    const drain = (): number => {
      const before = seen.size;
      for (;;) {
        const n = q.doIo(out, 0, 64);
        for (let i = 0; i < n; i++) {
          const id = out[i].userData as number;
          assert.equal(out[i].ret, 0, `read ${id}: ${out[i].ret} ${out[i].errorMsg}`);
          assert.ok(!seen.has(id), `read ${id} completed twice`);
          seen.add(id);
        }
        if (n < 64) return seen.size - before;
      }
    };
    waitEventfd(fd, 5000);
    drain();
    if (seen.size < count) {
      // A slow device may not have finished them all in 100 ms: it has after another 500.
      sleepMs(500);
      const left = count - seen.size;
      assert.equal(drain(), left, `a drain returned fewer than max with completions left behind`);
    }
    assert.equal(q.doIo(out, 0, 64), 0);
  });
}

/** A driver queue (with its own completion backlog) on a file of 64 stamped blocks. */
function stampedDriverQueue(): { dq: IoUringQueue; data: Uint8Array; close(): void } {
  const [file] = targets(64 * PAGE);
  const data = stamped(64, PAGE);
  pwrite(file.path, 0, data);
  const fd = openPath(N, file.path, 2); // O_RDWR
  const dq = new IoUringQueue(N, { poll: false, entries: 64, fd, target: targetInfo(N, fd) });
  dq.completions = new CompletionBacklog();
  return {
    dq,
    data,
    close() {
      dq.destroy();
      closeFd(N, fd);
    },
  };
}

test("deferred task work: taking the fd of an idle queue remakes its ring without it, keeping its fixed buffers", (t) => {
  const why = unsupportedReason();
  if (why !== null) return t.skip(why);
  const { dq, data, close } = stampedDriverQueue();
  try {
    assert.equal(dq.deferTaskrun, true);
    // A fixed buffer registered before the remake must be registered in the new ring too: the
    // reads below use READ_FIXED on it.
    const mem = N.alloc(4 * PAGE);
    assert.equal(dq.registerBuffer(0, N.addressOf(mem.buffer as ArrayBuffer), mem.length), true);
    dq.setCompletionFdEnabled(false);
    dq.useCompletionFd();
    assert.equal(dq.deferTaskrun, false, "an idle queue's ring keeps DEFER_TASKRUN");
    dq.setCompletionFdEnabled(true);
    const out = [newCompletion()];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 4; i++) {
        const blk = round * 4 + i;
        assert.ok(
          dq.tryEnqueue(Op.Read, blk * PAGE, mem.subarray(i * PAGE, (i + 1) * PAGE), null, PAGE, blk, 0),
        );
      }
      assert.equal(dq.enter(0, -1), 0);
      let got = 0;
      while (got < 4) {
        // The new ring signals the fd (this fails after 5 s without a signal).
        waitEventfd(dq.completionFd, 5000);
        for (let n = dq.reap(out, 0, 1); n === 1; n = dq.reap(out, 0, 1)) {
          const blk = out[0].userData as number;
          assert.equal(out[0].ret, 0, `read ${blk}: ${out[0].ret} ${out[0].errorMsg}`);
          const i = blk - round * 4;
          assert.deepEqual(
            mem.subarray(i * PAGE, (i + 1) * PAGE),
            data.subarray(blk * PAGE, (blk + 1) * PAGE),
          );
          got++;
        }
      }
    }
    assert.equal(tryReadEventfd(dq.completionFd), 0n, "signals without completions");
  } finally {
    close();
  }
});

test("deferred task work: taking the fd of a busy queue keeps its ring, and the requests in flight", (t) => {
  const why = unsupportedReason();
  if (why !== null) return t.skip(why);
  const { dq, data, close } = stampedDriverQueue();
  try {
    const buf = new Uint8Array(PAGE);
    assert.ok(dq.tryEnqueue(Op.Read, 5 * PAGE, buf, null, PAGE, "busy", 0));
    dq.useCompletionFd();
    assert.equal(dq.deferTaskrun, true, "a queue with a request queued had its ring remade");
    assert.equal(dq.enter(1, -1), 0);
    const out = [newCompletion()];
    assert.equal(dq.reap(out, 0, 1), 1);
    assert.equal(out[0].userData, "busy");
    assert.equal(out[0].ret, 0);
    assert.deepEqual(buf, data.subarray(5 * PAGE, 6 * PAGE));
  } finally {
    close();
  }
});

test("deferred_taskrun: cleanup scratch targets", () => cleanupAll());
