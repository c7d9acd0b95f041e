// libblkio tests/growing_file.c: with can-grow (regular files), writes past the end extend the
// file and capacity follows; reads past the end return zeroes. Block devices cannot grow.
import { test } from "node:test";
import assert from "./_assert.ts";
import { statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { alignedBuffer, cleanupAll, scratchDir, startOn, type Target, targets } from "./_helpers.ts";
import { getData, PAGE, pattern, putData, reapAll, runOk, sleepMs } from "./_io.ts";

const TARGETS = targets();
const OFF = 0x10000;
const EIO = 5;
const ENOSPC = 28;

/** A fresh empty file, as the file target's variant (buffered or direct). */
function emptyFileLike(t: Target, name: string): Target {
  const path = join(scratchDir(), name);
  writeFileSync(path, new Uint8Array(0));
  return { ...t, path, size: 0 };
}

for (const t of TARGETS) {
  if (t.isBlockDevice) {
    test(`growing_file: can-grow is false on a block device; it does not grow [${t.name}]`, () => {
      using b = startOn(t);
      assert.equal(b.getBool("can-grow"), false);
      const capacity = b.getUint64("capacity");
      assert.equal(capacity, BigInt(t.size));
      const q = b.getQueue(0)!;
      const buf = alignedBuffer(b, 2 * PAGE).fill(0x47);
      const size = Number(capacity);
      const tags = [{ op: "write across end" }, { op: "write past end" }, { op: "read past end" }];
      q.write(size - PAGE, buf, tags[0]);
      q.write(size + PAGE, buf.subarray(0, PAGE), tags[1]);
      q.read(size, buf.subarray(0, PAGE), tags[2]);
      const got = reapAll(q, 3);
      for (const tag of tags) {
        const c = got.find((x) => x.userData === tag)!;
        assert.ok(c, `${tag.op}: no completion`);
        assert.ok(c.ret < 0, `${tag.op}: ret ${c.ret}`);
        // Reads: the 0-byte result at the end is EIO (no can-grow). Writes: the part inside
        // is written, the remainder resubmitted at the end, where the kernel says ENOSPC.
        assert.equal(c.ret, tag.op === "read past end" ? -EIO : -ENOSPC, `${tag.op}: ret ${c.ret}`);
      }
      assert.equal(b.getUint64("capacity"), capacity);
      assert.deepEqual(getData(t, b, q, size - PAGE, PAGE), new Uint8Array(PAGE).fill(0x47));
    });
    continue;
  }

  test(`growing_file: 0-byte file grows to 0x10000 + page after a write there [${t.name}]`, () => {
    const ft = emptyFileLike(t, "grow.img");
    using b = startOn(ft);
    assert.equal(b.getBool("can-grow"), true);
    assert.equal(b.getUint64("capacity"), 0n);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, PAGE);
    const data = pattern(PAGE, 11);
    buf.set(data);
    runOk(q, (ud) => q.write(OFF, buf, ud), "write past EOF");
    assert.equal(b.getUint64("capacity"), BigInt(OFF + PAGE));
    assert.equal(statSync(ft.path).size, OFF + PAGE);

    // Data reads back; the hole before it reads as zeroes; reads past EOF return zeroes.
    const r = alignedBuffer(b, 4 * PAGE).fill(0xff);
    runOk(q, (ud) => q.read(OFF - PAGE, r.subarray(0, 2 * PAGE), ud), "read hole + data");
    assert.deepEqual(r.subarray(0, PAGE), new Uint8Array(PAGE));
    assert.deepEqual(r.subarray(PAGE, 2 * PAGE), data);
    r.fill(0xff);
    runOk(q, (ud) => q.read(OFF, r, ud), "read data + past EOF");
    assert.deepEqual(r.subarray(0, PAGE), data);
    assert.deepEqual(r.subarray(PAGE), new Uint8Array(3 * PAGE));
    r.fill(0xff);
    runOk(q, (ud) => q.read(OFF + 16 * PAGE, r, ud), "read far past EOF");
    assert.deepEqual(r, new Uint8Array(4 * PAGE));
    // Reads do not grow the file.
    assert.equal(b.getUint64("capacity"), BigInt(OFF + PAGE));

    // writev grows it further; capacity follows without reconnecting.
    const v = alignedBuffer(b, 2 * PAGE).fill(0x76);
    runOk(q, (ud) => q.writev(2 * OFF, [v.subarray(0, PAGE), v.subarray(PAGE)], ud), "writev past EOF");
    assert.equal(b.getUint64("capacity"), BigInt(2 * OFF + 2 * PAGE));
  });

  test(`growing_file: capacity follows outside changes; EOF inside an unaligned tail [${t.name}]`, () => {
    const ft = emptyFileLike(t, "tail.img");
    // 8 pages and 100 bytes: the last O_DIRECT block is partly past EOF.
    const size = 8 * PAGE + 100;
    putData(ft, 0, pattern(size, 12));
    using b = startOn(ft);
    assert.equal(b.getUint64("capacity"), BigInt(size));
    const q = b.getQueue(0)!;
    const r = alignedBuffer(b, 2 * PAGE).fill(0xff);
    runOk(q, (ud) => q.read(7 * PAGE, r, ud), "read across unaligned EOF");
    const want = new Uint8Array(2 * PAGE);
    want.set(pattern(size, 12).subarray(7 * PAGE));
    assert.deepEqual(r, want);
    truncateSync(ft.path, 3 * PAGE);
    assert.equal(b.getUint64("capacity"), BigInt(3 * PAGE));
    r.fill(0xff);
    runOk(q, (ud) => q.read(2 * PAGE, r, ud), "read across EOF after truncation");
    assert.deepEqual(r.subarray(0, PAGE), pattern(size, 12).subarray(2 * PAGE, 3 * PAGE));
    assert.deepEqual(r.subarray(PAGE), new Uint8Array(PAGE));
  });

  // The first part of the read stops at an end of file that is not block-aligned; the rest went
  // again at that misaligned offset, and once the file had grown past it (a concurrent write)
  // O_DIRECT failed it with EINVAL (fuzzer). The growth here comes between the two parts.
  test(`growing_file: a read across an unaligned EOF while the file grows completes [${t.name}]`, () => {
    const ft = emptyFileLike(t, "grows.img");
    const size = 2 * PAGE + 100;
    putData(ft, 0, pattern(size, 3));
    using b = startOn(ft);
    const q = b.getQueue(0)!;
    const r = alignedBuffer(b, 4 * PAGE).fill(0xff);
    q.read(PAGE, r, "read");
    q.doIo([], 0, 0); // submitted; the first part completes without being reaped
    sleepMs(50);
    putData(ft, size, new Uint8Array(8 * PAGE).fill(0x99)); // the file grows past the rest
    const [c] = reapAll(q, 1);
    assert.equal(c.ret, 0, `${c.ret} ${c.errorMsg}`);
    assert.deepEqual(r.subarray(0, size - PAGE), pattern(size, 3).subarray(PAGE));
    // What lay past the end when the read got there: zeroes, or the new data.
    const rest = r.subarray(size - PAGE);
    assert.ok(rest.every((x) => x === 0) || rest.every((x) => x === 0x99), "the rest");
  });
}

// A vectored read across the end of a file that falls inside an iovec: the rest of that iovec
// and every later one read as zeroes, whole. Zeroing the rest from the offset inside the first
// iovec for every iovec left the caller's old bytes at the start of the later ones, reported as
// a success (the other tests put the end of the file on an iovec boundary).
test("growing_file: a readv across the end of the file inside an iovec zeroes every later iovec whole", () => {
  const path = join(scratchDir(), "short.img");
  writeFileSync(path, new Uint8Array(1000).fill(0x33));
  using b = startOn({ path, direct: false });
  const q = b.getQueue(0)!;
  const iov = [0, 1, 2].map(() => new Uint8Array(PAGE).fill(0xff));
  runOk(q, (ud) => q.readv(0, iov, ud), "readv across the end");
  assert.deepEqual(iov[0].subarray(0, 1000), new Uint8Array(1000).fill(0x33));
  assert.deepEqual(iov[0].subarray(1000), new Uint8Array(PAGE - 1000), "the rest of the first iovec");
  assert.deepEqual(iov[1], new Uint8Array(PAGE), "the second iovec");
  assert.deepEqual(iov[2], new Uint8Array(PAGE), "the third iovec");
});

// The zeroes past the end are written in the middle of a reap, so no code of the caller may run
// there: a Uint8Array subclass whose own fill() threw made doIo throw, the CQE stayed unreaped,
// and every later doIo threw again.
test("growing_file: a buffer subclass with its own fill() is zeroed past the end all the same", () => {
  const path = join(scratchDir(), "short.img");
  writeFileSync(path, new Uint8Array(1000).fill(0x33));
  class OwnFill extends Uint8Array {
    override fill(): this {
      throw new Error("the library called the caller's fill()");
    }
  }
  const dirty = (n: number) => {
    const b = new OwnFill(n);
    Uint8Array.prototype.fill.call(b, 0xff);
    return b;
  };
  using b = startOn({ path, direct: false });
  const q = b.getQueue(0)!;
  const buf = dirty(PAGE);
  runOk(q, (ud) => q.read(0, buf, ud), "read across the end");
  const iov = [dirty(512), dirty(PAGE)];
  runOk(q, (ud) => q.readv(0, iov, ud), "readv across the end");
  const want = new Uint8Array(512 + PAGE);
  want.fill(0x33, 0, 1000);
  assert.deepEqual(new Uint8Array(buf), want.subarray(0, PAGE));
  assert.deepEqual(new Uint8Array(iov[0]), want.subarray(0, 512));
  assert.deepEqual(new Uint8Array(iov[1]), want.subarray(512, 512 + PAGE));
});

test("growing_file: cleanup scratch targets", () => cleanupAll());
