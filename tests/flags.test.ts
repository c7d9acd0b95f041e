// libblkio tests/read-invalid-flags.c, user-data.c, polled.c.
import { test } from "node:test";
import assert from "./_assert.ts";
import { type Completion, ReqFlags } from "../mod.ts";
import { alignedBuffer, assertErrno, cleanupAll, connectTo, startOn, targets } from "./_helpers.ts";
import { PAGE, reapAll } from "./_io.ts";

const TARGETS = targets();
const EINVAL = 22;
const UNSUPPORTED = "unsupported bits in request flags";
const invalid = (flag: string) => `BLKIO_REQ_${flag} is invalid for this request type`;

for (const t of TARGETS) {
  test(`read-invalid-flags: bad flag bits complete with EINVAL and libblkio's messages [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, PAGE);
    const before = buf.slice();
    const cases: [string, (ud: unknown) => void, string][] = [
      ["read ~0", (ud) => q.read(0, buf, ud, ~0), UNSUPPORTED],
      ["read 0xffffffff", (ud) => q.read(0, buf, ud, 0xffffffff), UNSUPPORTED],
      ["read 1<<31", (ud) => q.read(0, buf, ud, 0x80000000), UNSUPPORTED],
      ["read 8", (ud) => q.read(0, buf, ud, 8), UNSUPPORTED],
      ["read NO_UNMAP", (ud) => q.read(0, buf, ud, ReqFlags.NO_UNMAP), invalid("NO_UNMAP")],
      ["read NO_FALLBACK", (ud) => q.read(0, buf, ud, ReqFlags.NO_FALLBACK), invalid("NO_FALLBACK")],
      ["read FUA", (ud) => q.read(0, buf, ud, ReqFlags.FUA), invalid("FUA")],
      ["readv FUA", (ud) => q.readv(0, [buf], ud, ReqFlags.FUA), invalid("FUA")],
      ["readv ~0", (ud) => q.readv(0, [buf], ud, -1), UNSUPPORTED],
      ["discard FUA", (ud) => q.discard(0, PAGE, ud, ReqFlags.FUA), invalid("FUA")],
      ["discard NO_UNMAP", (ud) => q.discard(0, PAGE, ud, ReqFlags.NO_UNMAP), invalid("NO_UNMAP")],
      ["flush FUA", (ud) => q.flush(ud, ReqFlags.FUA), invalid("FUA")],
      ["flush ~0", (ud) => q.flush(ud, ~0), UNSUPPORTED],
      ["write NO_FALLBACK", (ud) => q.write(0, buf, ud, ReqFlags.NO_FALLBACK), invalid("NO_FALLBACK")],
      ["write NO_UNMAP", (ud) => q.write(0, buf, ud, ReqFlags.NO_UNMAP), invalid("NO_UNMAP")],
      ["write ~0", (ud) => q.write(0, buf, ud, ~0), UNSUPPORTED],
      ["writev NO_FALLBACK", (ud) => q.writev(0, [buf], ud, ReqFlags.NO_FALLBACK), invalid("NO_FALLBACK")],
      ["writeZeroes ~0", (ud) => q.writeZeroes(0, PAGE, ud, ~0), UNSUPPORTED],
      ["writeZeroes 8", (ud) => q.writeZeroes(0, PAGE, ud, 8), UNSUPPORTED],
    ];
    for (const [name, submit] of cases) submit(name);
    const got = reapAll(q, cases.length);
    assert.deepEqual(
      got.map((c) => c.userData),
      cases.map(([name]) => name),
      "completions in submission order",
    );
    for (let i = 0; i < cases.length; i++) {
      assert.equal(got[i].ret, -EINVAL, `${cases[i][0]}: ret`);
      assert.equal(got[i].errorMsg, cases[i][2], `${cases[i][0]}: errorMsg`);
    }
    assert.deepEqual(buf, before, "a rejected request must not touch its buffer");
    // Everything was reaped: nothing more is outstanding.
    assertErrno(() => q.doIo([], 1, 1), "EINVAL");
  });

  for (const entries of [0, 4]) {
    const ring = entries === 0 ? "" : `, num-entries ${entries} (through the backlog)`;
    test(`user-data: 128 mixed requests each complete once with their own userData${ring} [${t.name}]`, () => {
      using b = connectTo(t);
      if (entries > 0) b.setInt("num-entries", entries);
      b.start();
      const q = b.getQueue(0)!;
      const n = 128;
      const mem = alignedBuffer(b, n * PAGE);
      const tags: { i: number; kind: string }[] = [];
      for (let i = 0; i < n; i++) {
        const kind = ["flush", "write", "fua-write"][i % 3];
        const tag = { i, kind };
        tags.push(tag);
        const buf = mem.subarray(i * PAGE, (i + 1) * PAGE).fill(i & 0xff);
        if (kind === "flush") q.flush(tag);
        else q.write(i * PAGE, buf, tag, kind === "fua-write" ? ReqFlags.FUA : 0);
      }
      const seen = new Set<unknown>();
      const out: Completion[] = [];
      let total = 0;
      while (total < n) {
        const got = q.doIo(out, 1, 1);
        assert.equal(got, 1);
        const c = out[0];
        assert.equal(c.ret, 0, `ret ${c.ret} ${c.errorMsg}`);
        assert.ok(
          tags.includes(c.userData as typeof tags[number]),
          "userData is one of the objects submitted",
        );
        assert.ok(!seen.has(c.userData), `userData ${JSON.stringify(c.userData)} seen twice`);
        seen.add(c.userData);
        total++;
      }
      assert.equal(seen.size, n);
      // libblkio: one more do_io(1, 1) with nothing outstanding is EINVAL.
      assertErrno(() => q.doIo(out, 1, 1), "EINVAL");
      assert.equal(q.doIo(out, 0, 1), 0);
    });
  }

  test(`user-data: any JS value comes back unchanged [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const sym = Symbol("s");
    const fn = () => 1;
    const values: unknown[] = [undefined, null, 0, -1, 2n ** 70n, "str", sym, fn, [1, 2], NaN];
    for (const v of values) q.flush(v);
    const got = reapAll(q, values.length).map((c) => c.userData);
    assert.equal(got.length, values.length);
    for (const v of values) {
      assert.ok(got.some((g) => Object.is(g, v)), `userData ${String(v)} lost`);
    }
  });

  test(`polled: application polling with doIo(min 0) until done [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const n = 8;
    const mem = alignedBuffer(b, n * PAGE);
    for (let i = 0; i < n; i++) q.read(i * PAGE, mem.subarray(i * PAGE, (i + 1) * PAGE), i);
    q.flush("flush");
    const seen: unknown[] = [];
    const out: Completion[] = [];
    const deadline = performance.now() + 20_000;
    let calls = 0;
    while (seen.length < n + 1) {
      assert.ok(performance.now() < deadline, `only ${seen.length} of ${n + 1} completed`);
      const got = q.doIo(out, 0, 1);
      calls++;
      assert.ok(got === 0 || got === 1, `doIo(0, 1) returned ${got}`);
      if (got === 1) {
        assert.equal(out[0].ret, 0, `ret ${out[0].ret} ${out[0].errorMsg}`);
        seen.push(out[0].userData);
      }
    }
    assert.ok(calls >= n + 1);
    assert.deepEqual([...seen].sort(), [...Array.from({ length: n }, (_, i) => i), "flush"].sort());
    // No extra completions afterwards.
    for (let i = 0; i < 100; i++) assert.equal(q.doIo(out, 0, 1), 0);
    assert.equal(q.doIo(out, 0, 8), 0);
  });
}

test("flags: cleanup scratch targets", () => cleanupAll());
