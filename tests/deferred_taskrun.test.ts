// IORING_SETUP_DEFER_TASKRUN (Linux 6.1): completions that do not finish inside the submitting
// call reach the CQ only when the queue's thread enters the kernel with GETEVENTS. The io_uring
// driver uses it only on a file on tmpfs without O_DIRECT (defersTaskWork), and remakes an idle
// queue's ring without it once its completion fd is taken. That every completion of a burst is
// reaped by a drain with it (Linux 6.13+ posts at most 20 per entry) is tested in
// completion_fd.test.ts on the same targets.
import { test } from "node:test";
import assert from "./_assert.ts";
import { existsSync, statfsSync } from "node:fs";
import { release } from "node:os";
import { newCompletion } from "../mod.ts";
import { loadError, native } from "../ffi/load.ts";
import type { Native } from "../ffi/types.ts";
import { Op } from "../src/completion.ts";
import { CompletionBacklog } from "../src/completion_backlog.ts";
import { defersTaskWork, IoUringQueue } from "../src/drivers/io_uring/queue.ts";
import { targetInfo } from "../src/drivers/io_uring/target_info.ts";
import { closeFd, O_RDONLY, oDirect, openPath, TMPFS_MAGIC } from "../src/sys.ts";
import {
  cleanupAll,
  pread,
  pwrite,
  scratchDir,
  scratchFile,
  skipIf,
  stamped,
  type Target,
  targets,
} from "./_helpers.ts";
import { PAGE, tryReadEventfd, waitEventfd } from "./_io.ts";

const N = ((): Native => {
  assert.ok(native, String(loadError));
  return native;
})();

/** Why DEFER_TASKRUN cannot be expected here, or null (Linux 6.1 and later). */
function unsupportedReason(): string | null {
  const [major, minor] = release().split(".").map((s) => parseInt(s, 10));
  return major > 6 || (major === 6 && minor >= 1) ? null : `Linux ${release()} has no DEFER_TASKRUN (6.1+)`;
}

/** The same, and also null only where a tmpfs file can be made (the queues that defer). */
function noTmpfsQueueReason(): string | null {
  if (!existsSync("/dev/shm")) return "no /dev/shm here: no tmpfs file to make a queue on";
  return unsupportedReason();
}

const SIZE = 8 * 1024 * 1024;
const TARGETS: Target[] = targets(SIZE);
// Buffered reads of a tmpfs file always go to the kernel's worker threads: every completion is
// deferred work there.
if (existsSync("/dev/shm")) {
  const path = scratchFile(SIZE, 0x5a, scratchDir("/dev/shm"));
  TARGETS.push({ name: "tmpfs file", path, direct: false, isBlockDevice: false, size: SIZE });
}

/** A page of JS memory aligned for O_DIRECT. */
function alignedPage(): Uint8Array {
  const mem = N.alloc(2 * PAGE);
  const skip = (PAGE - (N.addressOf(mem.buffer as ArrayBuffer) % PAGE)) % PAGE;
  return mem.subarray(skip, skip + PAGE);
}

for (const t of TARGETS) {
  // Asked of the file system itself: the temporary directory may be on tmpfs too.
  const expected = !t.isBlockDevice && !t.direct && statfsSync(t.path).type === TMPFS_MAGIC;
  const what = expected ? "a buffered tmpfs file's queue defers task work" : "this queue does not defer";
  test(...skipIf(`deferred task work: ${what} [${t.name}]`, unsupportedReason()), () => {
    const fd = openPath(N, t.path, O_RDONLY | (t.direct ? oDirect(N) : 0));
    try {
      const info = targetInfo(N, fd);
      assert.equal(defersTaskWork(info), expected);
      const dq = new IoUringQueue(N, { poll: false, entries: 8, fd, target: info });
      dq.completions = new CompletionBacklog();
      try {
        assert.equal(dq.deferTaskrun, expected);
        // Reads through it still work, data checked.
        const buf = alignedPage();
        assert.ok(dq.tryEnqueue(Op.Read, PAGE, buf, null, PAGE, "second", 0));
        assert.equal(dq.enter(1, -1), 0);
        const out = [newCompletion()];
        assert.equal(dq.reap(out, 0, 1), 1);
        assert.equal(out[0].ret, 0, `${out[0].ret} ${out[0].errorMsg}`);
        assert.deepEqual(buf, pread(t.path, PAGE, PAGE));
      } finally {
        dq.destroy();
      }
    } finally {
      closeFd(N, fd);
    }
  });
}

/** A driver queue (with its own completion backlog) on a tmpfs file of 64 stamped blocks. */
function stampedDriverQueue(): { dq: IoUringQueue; data: Uint8Array; close(): void } {
  const path = scratchFile(64 * PAGE, 0, scratchDir("/dev/shm"));
  const data = stamped(64, PAGE);
  pwrite(path, 0, data);
  const fd = openPath(N, path, 2); // O_RDWR
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

test(
  ...skipIf(
    "deferred task work: taking the fd of an idle queue remakes its ring without it, keeping its fixed buffers",
    noTmpfsQueueReason(),
  ),
  () => {
    const { dq, data, close } = stampedDriverQueue();
    try {
      assert.equal(dq.deferTaskrun, true);
      // A fixed buffer registered before the remake must be registered in the new ring too: the
      // reads below use READ_FIXED on it.
      const mem = N.alloc(4 * PAGE);
      assert.equal(
        dq.registerBuffer(0, N.addressOf(mem.buffer as ArrayBuffer), mem.length, mem.buffer),
        true,
      );
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
      // The kernel's workers finish tmpfs reads one by one, each signalling, and some were reaped
      // before their signal was read: a count left over is a spurious wakeup (allowed), and
      // nothing may be left to reap.
      tryReadEventfd(dq.completionFd);
      assert.equal(dq.reap(out, 0, 1), 0, "a completion after all twelve");
      assert.equal(dq.inFlight, 0);
    } finally {
      close();
    }
  },
);

test(
  ...skipIf(
    "deferred task work: taking the fd of a busy queue keeps its ring, and the requests in flight",
    noTmpfsQueueReason(),
  ),
  () => {
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
  },
);

test("deferred_taskrun: cleanup scratch targets", () => cleanupAll());
