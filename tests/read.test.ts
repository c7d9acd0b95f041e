// libblkio tests/read.c: a pattern written at 0x10000 by other means reads back through a queue.
import { test } from "node:test";
import assert from "node:assert/strict";
import { alignedBuffer, cleanupAll, pwrite, reap, startOn, targets } from "./_helpers.ts";

const TARGETS = targets();

for (const t of TARGETS) {
  test(`read: pattern at 0x10000 reads back [${t.name}]`, () => {
    const pattern = new Uint8Array(4096).map((_, i) => (i * 7 + 3) & 0xff);
    pwrite(t.path, 0x10000, pattern);
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, 4096);
    q.read(0x10000, buf, "r");
    const [c] = reap(q, 1);
    assert.equal(c.ret, 0, `ret ${c.ret} ${c.errorMsg}`);
    assert.equal(c.userData, "r");
    assert.deepEqual(buf, pattern);
  });
}

for (const t of TARGETS) {
  test(`read: an out entry that refuses a completion loses none of a batch [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const blocks = 8;
    const data = new Uint8Array(blocks * 4096).map((_, i) => (i * 13 + (i >> 12)) & 0xff);
    pwrite(t.path, 0, data);
    const bufs = Array.from({ length: blocks }, () => alignedBuffer(b, 4096));
    for (let i = 0; i < blocks; i++) q.read(i * 4096, bufs[i], i);
    // All eight are reaped by one wait; the fourth entry is frozen, so the reap stops there.
    const out = Array.from(
      { length: blocks },
      () => ({ userData: null as unknown, ret: -1, errorMsg: null }),
    );
    out[3] = Object.freeze(out[3]);
    assert.throws(() => q.doIo(out, blocks, blocks), /out\[3\] must be a writable Completion object/);
    const seen = reap(q, blocks).map((c) => {
      assert.equal(c.ret, 0, `ret ${c.ret} ${c.errorMsg}`);
      return c.userData as number;
    });
    assert.deepEqual(seen.sort((x, y) => x - y), [0, 1, 2, 3, 4, 5, 6, 7]);
    for (let i = 0; i < blocks; i++) {
      assert.deepEqual(bufs[i], data.subarray(i * 4096, (i + 1) * 4096), `block ${i}`);
    }
    // Nothing left over: one more request is the only thing to come back.
    q.read(0, bufs[0], "last");
    assert.deepEqual(reap(q, 1).map((c) => c.userData), ["last"]);
  });
}

test("read: cleanup scratch targets", () => cleanupAll());
