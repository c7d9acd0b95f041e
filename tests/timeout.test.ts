// libblkio tests/timeout.c: doIo / doIoInterruptible with a timeout expire with ETIME without
// losing completions, and a huge timeout does not expire early; plus timeout argument checks.
import { test } from "node:test";
import assert from "./_assert.ts";
import { BlkioError, type Completion, ReqFlags } from "../mod.ts";
import { alignedBuffer, assertErrno, cleanupAll, connectTo, pwrite, startOn, targets } from "./_helpers.ts";
import { native } from "../ffi/load.ts";
import { Ring } from "../src/uring/ring.ts";
import { IORING_ENTER_GETEVENTS } from "../src/uring/constants.ts";
import { PAGE, reapAll, sleepMs } from "./_io.ts";

const TARGETS = targets();

function isEtime(e: unknown): boolean {
  return e instanceof BlkioError && e.code === "ETIME" && e.errno === 62 && e.message.length > 0;
}

for (const t of TARGETS) {
  test(`timeout: 1 ns timeouts expire with ETIME or complete, and lose nothing [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    // libblkio: buffer of max(mem-region-alignment, request-alignment); a page covers both.
    const buf = alignedBuffer(b, PAGE).fill(0x61);
    const out: Completion[] = [];
    const seen = new Set<number>();
    let expired = 0;
    const iterations = 1000;
    for (let i = 0; i < iterations; i++) {
      q.write(0, buf, i);
      try {
        const n = q.doIoInterruptible(out, 1, 1, i % 2 === 0 ? 1n : 1);
        assert.equal(n, 1);
      } catch (e) {
        if (!isEtime(e)) throw e;
        expired++;
        // Now wait for the request without a timeout.
        assert.equal(q.doIo(out, 1, 1), 1);
      }
      assert.equal(out[0].userData, i);
      assert.equal(out[0].ret, 0, `write ${i}: ${out[0].ret} ${out[0].errorMsg}`);
      assert.ok(!seen.has(i));
      seen.add(i);
    }
    assert.equal(seen.size, iterations);
    assertErrno(() => q.doIo(out, 1, 1), "EINVAL");
    // Informational: how often the 1 ns wait expired on this target.
    console.log(`timeout [${t.name}]: ${expired} of ${iterations} waits expired`);
  });

  test(`timeout: many requests, 1 ns waits with max > 1, totals add up [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const n = 64;
    const mem = alignedBuffer(b, n * PAGE);
    for (let i = 0; i < n; i++) {
      q.write(i * PAGE, mem.subarray(i * PAGE, (i + 1) * PAGE), i, i % 4 === 0 ? ReqFlags.FUA : 0);
    }
    q.flush("flush");
    const out: Completion[] = [];
    const seen = new Set<unknown>();
    let total = 0;
    for (let k = 0; k < 1000 && total < n + 1; k++) {
      try {
        const got = q.doIoInterruptible(out, Math.min(4, n + 1 - total), 16, 1n);
        assert.ok(got >= 1 && got <= 16);
        for (let i = 0; i < got; i++) {
          assert.equal(out[i].ret, 0);
          assert.ok(!seen.has(out[i].userData), `${String(out[i].userData)} twice`);
          seen.add(out[i].userData);
        }
        total += got;
      } catch (e) {
        if (!isEtime(e)) throw e;
      }
    }
    for (const c of reapAll(q, n + 1 - total)) {
      assert.ok(!seen.has(c.userData), `${String(c.userData)} twice`);
      seen.add(c.userData);
    }
    assert.equal(seen.size, n + 1);
    assertErrno(() => q.doIo(out, 1, 1), "EINVAL");
  });

  test(`timeout: a generous timeout covers requests beyond the ring (backlog) [${t.name}]`, () => {
    using b = connectTo(t);
    b.setInt("num-entries", 4);
    b.start();
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, PAGE);
    const out: Completion[] = [];
    for (let i = 0; i < 100; i++) q.read(0, buf, i);
    assert.equal(q.doIo(out, 100, 100, 10_000_000_000n), 100);
    for (let i = 0; i < 100; i++) q.write(0, buf, i);
    assert.equal(q.doIoInterruptible(out, 100, 100, 10_000_000_000), 100);
    assert.deepEqual(out.map((c) => c.ret), new Array(100).fill(0));
    assertErrno(() => q.doIo(out, 1, 1, 1n), "EINVAL");
  });

  test(`timeout: a huge timeout does not expire early [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, PAGE);
    const out: Completion[] = [];
    // 2^62 ns; LONG_MAX seconds (libblkio's value) in ns; the largest safe number.
    const huge: (bigint | number)[] = [
      2n ** 62n,
      (2n ** 63n - 1n) * 1_000_000_000n,
      Number.MAX_SAFE_INTEGER,
      1e300,
    ];
    for (const timeout of huge) {
      q.read(0, buf, String(timeout));
      const start = performance.now();
      assert.equal(q.doIo(out, 1, 1, timeout), 1, `timeout ${timeout}`);
      assert.equal(out[0].userData, String(timeout));
      assert.equal(out[0].ret, 0);
      q.read(0, buf, "intr");
      assert.equal(q.doIoInterruptible(out, 1, 1, timeout), 1, `interruptible, timeout ${timeout}`);
      assert.equal(out[0].userData, "intr");
      assert.ok(performance.now() - start < 10_000, "returned once the requests completed");
    }
  });

  test(`timeout: nothing outstanding with min 0 returns 0; argument errors are EINVAL [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const out: Completion[] = [];
    for (const timeout of [0, 0n, 1, 1n, 1e9, 10n ** 12n, undefined]) {
      assert.equal(q.doIo(out, 0, 4, timeout), 0, `timeout ${timeout}`);
      assert.equal(q.doIoInterruptible(out, 0, 4, timeout), 0, `interruptible, timeout ${timeout}`);
    }
    assert.equal(q.doIo([], 0, 0, 1n), 0);
    // min > max
    assertErrno(() => q.doIo(out, 2, 1, 1n), "EINVAL");
    assertErrno(() => q.doIo(out, 2, 1), "EINVAL");
    assertErrno(() => q.doIoInterruptible(out, 5, 4, 0), "EINVAL");
    // bad timeouts, even with something outstanding (which must survive)
    const buf = alignedBuffer(b, PAGE);
    q.read(0, buf, "survivor");
    for (const bad of [-1, -1n, NaN, -Infinity, -0.5, "1", {}, true]) {
      assertErrno(() => q.doIo(out, 0, 1, bad as unknown as number), "EINVAL");
      assertErrno(() => q.doIoInterruptible(out, 1, 1, bad as unknown as number), "EINVAL");
    }
    // min above the outstanding count with a timeout is still EINVAL, not ETIME
    assertErrno(() => q.doIo(out, 2, 2, 1n), "EINVAL");
    assert.equal(q.doIo(out, 1, 1, 10_000_000_000n), 1);
    assert.equal(out[0].userData, "survivor");
    assert.equal(out[0].ret, 0);
  });

  test(`timeout: ETIME keeps completions already reaped for the next call [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, PAGE);
    const out: Completion[] = [];
    let etimes = 0;
    for (let attempt = 0; attempt < 5; attempt++) {
      // Dirty a lot of page cache so the flush below takes far longer than the timeout.
      pwrite(t.path, 0, new Uint8Array(Math.min(t.size, 4 << 20)).fill(attempt + 1));
      q.read(0, buf, "bad", ReqFlags.NO_UNMAP); // completed by the library at once
      q.read(0, buf, "read");
      assert.equal(q.doIo(out, 0, 0), 0); // submit
      sleepMs(20); // the read has completed in the kernel by now
      q.flush("flush");
      let first = 0;
      try {
        first = q.doIo(out, 3, 3, 1000n);
        assert.equal(first, 3);
      } catch (e) {
        if (!isEtime(e)) throw e;
        etimes++;
      }
      const got = first > 0 ? out.slice(0, first).map((c) => ({ ...c })) : reapAll(q, 3, 3);
      assert.deepEqual(got.map((c) => c.userData).sort(), ["bad", "flush", "read"]);
      for (const c of got) {
        if (c.userData === "bad") {
          assert.equal(c.ret, -22);
          assert.equal(c.errorMsg, "BLKIO_REQ_NO_UNMAP is invalid for this request type");
        } else {
          assert.equal(c.ret, 0, `${c.userData}: ${c.ret} ${c.errorMsg}`);
        }
      }
      // The ETIME call must not have left duplicates behind either.
      assert.equal(q.doIo(out, 0, 8), 0);
      assertErrno(() => q.doIo(out, 1, 1), "EINVAL");
    }
    // A 1 µs wait cannot outrun writing back megabytes: the ETIME path must have been taken.
    assert.ok(etimes >= 1, `no ETIME in 5 attempts to outrun a flush`);
  });
}

// The kernel stops submitting at an SQE it fails while preparing it (more than IOV_MAX iovecs)
// and returns without waiting: the wait looked cut short, and doIoInterruptible threw EINTR
// with no signal sent. Both orders: the failing request first, and behind another.
for (const first of [true, false]) {
  test(`doIoInterruptible: a request the kernel fails at submission is no interruption [${first ? "first" : "second"}]`, () => {
    using b = startOn(TARGETS[0]);
    const q = b.getQueue(0)!;
    const big = new Uint8Array(1100);
    const tooMany = () => q.readv(0, Array.from({ length: 1100 }, (_, i) => big.subarray(i, i + 1)), "readv");
    if (first) tooMany();
    q.read(0, new Uint8Array(PAGE), "read");
    if (!first) tooMany();
    q.read(PAGE, new Uint8Array(PAGE), "read2");
    const out: Completion[] = [];
    assert.equal(q.doIoInterruptible(out, 3, 3, 5_000_000_000n), 3);
    const rets = Object.fromEntries(out.map((c) => [c.userData, c.ret]));
    assert.deepEqual(rets, { readv: -22, read: 0, read2: 0 });
  });
}

// Ring.enter's timeout is seconds and nanoseconds: a sub-second part must not be dropped (a
// doIo with a 250 ms timeout would return ETIME at once). Other tests use 1 ns, whole seconds
// or huge timeouts.
test("timeout: ring: a 250 ms enter timeout waits about 250 ms before ETIME", () => {
  const ring = new Ring(native!, 4, 0);
  try {
    const t0 = performance.now();
    const r = ring.enter(1, IORING_ENTER_GETEVENTS, 250e6);
    const ms = performance.now() - t0;
    assert.equal(r, -62, "ETIME: nothing to complete");
    assert.ok(ms >= 200 && ms < 5000, `waited ${ms.toFixed(1)} ms for a 250 ms timeout`);
  } finally {
    ring.close();
  }
});

test("timeout: cleanup scratch targets", () => cleanupAll());
