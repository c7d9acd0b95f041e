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

test("read: cleanup scratch targets", () => cleanupAll());
