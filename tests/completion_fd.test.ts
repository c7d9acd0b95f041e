// libblkio tests/get-completion-fd.c and set-completion-fd.c: event-driven completion through
// the queue's eventfd, including completions the library makes itself.
import { test } from "node:test";
import assert from "node:assert/strict";
import { type Completion, ReqFlags } from "../mod.ts";
import { alignedBuffer, cleanupAll, startOn, targets } from "./_helpers.ts";
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
}

test("completion_fd: cleanup scratch targets", () => cleanupAll());
