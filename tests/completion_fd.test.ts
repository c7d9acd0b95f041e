// libblkio tests/get-completion-fd.c and set-completion-fd.c: event-driven completion through
// the queue's eventfd, including completions the library makes itself.
import { test } from "node:test";
import assert from "./_assert.ts";
import { existsSync } from "node:fs";
import { Blkio, BlkioError, type Completion, ReqFlags } from "../mod.ts";
import {
  alignedBuffer,
  cleanupAll,
  pwrite,
  scratchDir,
  scratchFile,
  startOn,
  type Target,
  targets,
} from "./_helpers.ts";
import { fdinfoFlags, PAGE, sleepMs, tryReadEventfd, waitEventfd } from "./_io.ts";

const TARGETS = targets();
const O_NONBLOCK = 0o4000;
const O_CLOEXEC = 0o2000000;

/** Drains with doIo(0, 1) until it returns 0; returns the completions. */
function drain(q: { doIo(out: Completion[], min: number, max?: number): number }): Completion[] {
  const got: Completion[] = [];
  const out: Completion[] = [];
  while (q.doIo(out, 0, 1) === 1) got.push({ ...out[0] });
  return got;
}

for (const t of TARGETS) {
  test(`get-completion-fd: non-blocking close-on-exec eventfd that signals completion [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const fd = q.completionFd;
    assert.ok(Number.isInteger(fd) && fd >= 0, `completionFd ${fd}`);
    assert.equal(q.completionFd, fd, "stable across calls");
    const flags = fdinfoFlags(fd);
    assert.ok(flags & O_NONBLOCK, `O_NONBLOCK not set: flags 0${flags.toString(8)}`);
    assert.ok(flags & O_CLOEXEC, `O_CLOEXEC not set: flags 0${flags.toString(8)}`);
    assert.equal(q.isPollQueue, false);
    q.setCompletionFdEnabled(true);
    // Nothing happened yet: not readable.
    assert.equal(tryReadEventfd(fd), 0n);

    const buf = alignedBuffer(b, PAGE);
    q.read(0, buf, "read");
    assert.equal(q.doIo([], 0, 0), 0); // submit only
    assert.ok(waitEventfd(fd) >= 1n);
    const got: Completion[] = [];
    const deadline = performance.now() + 10_000;
    while (got.length < 1) {
      got.push(...drain(q));
      if (got.length === 0) {
        assert.ok(performance.now() < deadline, "readable fd but no completion");
        waitEventfd(fd); // a spurious wakeup is allowed: wait again
      }
    }
    assert.equal(got.length, 1);
    assert.equal(got[0].userData, "read");
    assert.equal(got[0].ret, 0);
  });

  test(`set-completion-fd: 128 FUA writes with disable / drain / re-enable / recheck [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const fd = q.completionFd;
    const n = 128;
    const mem = alignedBuffer(b, n * PAGE);
    for (let i = 0; i < n; i++) {
      q.write(i * PAGE, mem.subarray(i * PAGE, (i + 1) * PAGE).fill(i), i, ReqFlags.FUA);
    }
    q.setCompletionFdEnabled(true);
    assert.equal(q.doIo([], 0, 0), 0);
    const seen = new Set<unknown>();
    const record = (cs: Completion[]) => {
      for (const c of cs) {
        assert.equal(c.ret, 0, `write ${c.userData}: ${c.ret} ${c.errorMsg}`);
        assert.ok(!seen.has(c.userData), `write ${c.userData} completed twice`);
        seen.add(c.userData);
      }
    };
    let wakeups = 0;
    while (seen.size < n) {
      waitEventfd(fd);
      wakeups++;
      for (;;) {
        q.setCompletionFdEnabled(false);
        record(drain(q));
        q.setCompletionFdEnabled(true);
        // Recheck once: a completion that arrived between the drain and re-enabling would
        // not have signalled the fd.
        const late = drain(q);
        if (late.length === 0) break;
        record(late);
      }
      assert.ok(wakeups <= n + 1, "more wakeups than requests");
    }
    assert.equal(seen.size, n);
    const out: Completion[] = [];
    assert.equal(q.doIo(out, 0, 1), 0);
  });

  test(`completion fd taken after requests completed still signals them [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, 2 * PAGE);
    // The ring signals the fd only once it is taken (a signal per completion costs the kernel
    // work that a thread waiting in doIo never needs): what completed before must not be lost.
    q.read(0, buf.subarray(0, PAGE), "early");
    assert.equal(q.doIo([], 0, 0), 0); // submit only
    sleepMs(50); // let it complete, unreaped
    const fd = q.completionFd;
    assert.ok(waitEventfd(fd, 2000) >= 1n, "an earlier completion did not make the fd readable");
    let got = drain(q);
    assert.deepEqual(got.map((c) => [c.userData, c.ret]), [["early", 0]]);
    // From now on every completion signals it, as usual.
    tryReadEventfd(fd);
    q.read(PAGE, buf.subarray(PAGE), "late");
    assert.equal(q.doIo([], 0, 0), 0);
    assert.ok(waitEventfd(fd) >= 1n);
    got = [];
    const deadline = performance.now() + 10_000;
    while (got.length === 0) {
      got = drain(q);
      if (got.length === 0) {
        assert.ok(performance.now() < deadline, "readable fd but no completion");
        waitEventfd(fd);
      }
    }
    assert.deepEqual(got.map((c) => [c.userData, c.ret]), [["late", 0]]);
  });

  test(`completion fd: library-made completions make the fd readable too [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const fd = q.completionFd;
    q.setCompletionFdEnabled(true);
    const buf = alignedBuffer(b, PAGE);
    assert.equal(tryReadEventfd(fd), 0n);
    q.read(0, buf, "bad", ReqFlags.FUA);
    // Readable before any doIo: the completion exists as soon as the request is rejected.
    assert.ok(tryReadEventfd(fd) >= 1n, "fd not readable after a rejected request");
    const got = drain(q);
    assert.equal(got.length, 1);
    assert.equal(got[0].userData, "bad");
    assert.equal(got[0].ret, -22);
    assert.equal(got[0].errorMsg, "BLKIO_REQ_FUA is invalid for this request type");
    assert.equal(tryReadEventfd(fd), 0n, "no further events");
  });

  test(`completion fd: completions a failed doIo put back make the fd readable [${t.name}]`, () => {
    // libblkio's CompletionBacklog::unfill_completions signals the completion fd: an event loop
    // that reset the fd, then called doIo and got ETIME, must hear of what that call reaped and
    // kept for the next one. Here nothing else would wake it until the slow flush completes.
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const fd = q.completionFd;
    q.setCompletionFdEnabled(true);
    const buf = alignedBuffer(b, PAGE);
    const out: Completion[] = [];
    let etimes = 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      // Dirty page cache so that the flush below takes far longer than the 1 µs timeout.
      pwrite(t.path, 0, new Uint8Array(Math.min(t.size, 4 << 20)).fill(attempt + 1));
      q.read(0, buf, "read");
      assert.equal(q.doIo(out, 0, 0), 0); // submit only
      sleepMs(20); // the read has completed in the kernel by now
      tryReadEventfd(fd); // the event loop resets the fd before it calls doIo
      q.flush("flush");
      let etime = false;
      try {
        assert.equal(q.doIo(out, 2, 2, 1000n), 2);
      } catch (e) {
        if (!(e instanceof BlkioError) || e.code !== "ETIME") throw e;
        etime = true;
        etimes++;
        // The read was reaped and kept: doIo has a completion to return.
        assert.ok(tryReadEventfd(fd) >= 1n, "fd not readable after ETIME kept a completion");
      }
      if (etime) {
        const got = [...drain(q)];
        const deadline = performance.now() + 10_000;
        while (got.length < 2) {
          assert.ok(performance.now() < deadline, "the flush did not complete");
          waitEventfd(fd, 1000);
          got.push(...drain(q));
        }
        assert.deepEqual(got.map((c) => [c.userData, c.ret]).sort(), [["flush", 0], ["read", 0]]);
      }
      tryReadEventfd(fd);
    }
    assert.ok(etimes >= 1, "no ETIME in 5 attempts to outrun a flush");
  });
}

// Buffered reads of a tmpfs file always complete in the kernel's worker threads.
const BURST_TARGETS: Target[] = [...TARGETS];
if (existsSync("/dev/shm")) {
  const size = 8 * 1024 * 1024;
  const path = scratchFile(size, 0x5a, scratchDir("/dev/shm"));
  BURST_TARGETS.push({ name: "tmpfs file", path, direct: false, isBlockDevice: false, size });
}

for (const t of BURST_TARGETS) {
  test(`completion fd: a drain until fewer than max takes all of a 128-request burst [${t.name}]`, () => {
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
    const fd = q.completionFd;
    q.setCompletionFdEnabled(true);
    sleepMs(100); // let them complete unreaped
    // Event-driven use as BlockDevice does it: wait for the fd, then drain until a call returns
    // fewer than it could take. That drain must take everything that had completed: a caller
    // stops there and waits on the fd.
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
      assert.equal(drain(), left, "a drain returned fewer than max with completions left behind");
    }
    assert.equal(q.doIo(out, 0, 64), 0);
  });
}

test("completion_fd: cleanup scratch targets", () => cleanupAll());
