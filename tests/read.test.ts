// libblkio tests/read.c: a pattern written at 0x10000 by other means reads back through a queue.
import { test } from "node:test";
import assert from "./_assert.ts";
import { type Completion, newCompletion } from "../mod.ts";
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

/** `out` arrays `doIo` must refuse part-way through a batch of eight, and the error it gives. */
const BAD_OUT: { what: string; make: (blocks: number) => Completion[]; error: RegExp }[] = [
  {
    // All eight are reaped by one wait; the fourth entry is frozen, so the reap stops there.
    what: "an out entry that refuses a completion",
    make: (blocks) => {
      const out = Array.from(
        { length: blocks },
        () => ({ userData: null as unknown, ret: -1, errorMsg: null }),
      );
      out[3] = Object.freeze(out[3]);
      return out;
    },
    error: /out\[3\] must be a writable Completion object/,
  },
  {
    // A common slip: every entry is one object, so each completion would overwrite the last.
    what: "an out array filled with one Completion object",
    make: (blocks) => new Array(blocks).fill(newCompletion()),
    error: /out\[1\] is the same Completion object as out\[0\]/,
  },
];

for (const t of TARGETS) {
  for (const bad of BAD_OUT) {
    test(`read: ${bad.what} → EINVAL, and no completion of a batch is lost [${t.name}]`, () => {
      using b = startOn(t);
      const q = b.getQueue(0)!;
      const blocks = 8;
      const data = new Uint8Array(blocks * 4096).map((_, i) => (i * 13 + (i >> 12)) & 0xff);
      pwrite(t.path, 0, data);
      const bufs = Array.from({ length: blocks }, () => alignedBuffer(b, 4096));
      for (let i = 0; i < blocks; i++) q.read(i * 4096, bufs[i], i);
      assert.throws(() => q.doIo(bad.make(blocks), blocks, blocks), bad.error);
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
}

test("read: cleanup scratch targets", () => cleanupAll());
