// Mapped memory regions are io_uring registered buffers (READ_FIXED / WRITE_FIXED): data must be
// right whichever way a request goes, including across unmapping, index reuse, more regions than
// the table holds, and queues added after the mapping.
import { test } from "node:test";
import assert from "./_assert.ts";
import type { Blkio, MemoryRegion, Queue } from "../mod.ts";
import { native } from "../ffi/load.ts";
import { mapMemfd } from "../src/memory_region.ts";
import { closeFd } from "../src/sys.ts";
import {
  childWithoutUnavailable,
  cleanupAll,
  connectTo,
  pread,
  pwrite,
  reap,
  runChild,
  skipIf,
  startOn,
  targets,
} from "./_helpers.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const TARGETS = targets();
const BS = 4096;

function pattern(len: number, seed: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 13 + seed * 31 + (i >> 9)) & 0xff);
}

function mapped(b: Blkio, len: number): MemoryRegion {
  const align = Math.max(Number(b.getUint64("mem-region-alignment")), 4096);
  const r = b.allocMemRegion(Math.ceil(len / align) * align);
  b.mapMemRegion(r);
  return r;
}

function ok(q: Queue, count: number): void {
  for (const c of reap(q, count)) assert.equal(c.ret, 0, `ret ${c.ret} ${c.errorMsg}`);
}

for (const t of TARGETS) {
  test(`fixed buffers: reads and writes in mapped regions move the right data [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const region = mapped(b, 16 * BS);
    // Writes from several places in the region, in one batch, then reads back into others.
    for (let i = 0; i < 8; i++) {
      region.bytes.set(pattern(BS, i), i * BS);
      q.write(i * BS, region.bytes.subarray(i * BS, (i + 1) * BS), i);
    }
    ok(q, 8);
    for (let i = 0; i < 8; i++) {
      assert.deepEqual(pread(t.path, i * BS, BS), pattern(BS, i), `block ${i} on disk`);
    }
    for (let i = 0; i < 8; i++) q.read((7 - i) * BS, region.bytes.subarray((8 + i) * BS, (9 + i) * BS), i);
    ok(q, 8);
    for (let i = 0; i < 8; i++) {
      assert.deepEqual(region.bytes.subarray((8 + i) * BS, (9 + i) * BS), pattern(BS, 7 - i), `read ${i}`);
    }
    // A request spanning the whole region, and one from plain (unmapped) memory, together.
    const whole = pattern(16 * BS, 9);
    pwrite(t.path, 64 * BS, whole);
    const plain = b.allocMemRegion(BS);
    q.read(64 * BS, region.bytes, "whole");
    q.read(64 * BS, plain.bytes, "plain");
    ok(q, 2);
    assert.deepEqual(region.bytes, whole);
    assert.deepEqual(plain.bytes, whole.subarray(0, BS));
  });
}

test("fixed buffers: unmapping with prepared requests, then reusing the index for another region", () => {
  const t = TARGETS[TARGETS.length - 1];
  using b = startOn(t);
  const q = b.getQueue(0)!;
  pwrite(t.path, 0, pattern(4 * BS, 1));
  const first = mapped(b, 4 * BS);
  // Prepared in the ring (not yet submitted) with the region's buffer index...
  q.read(0, first.bytes, "first");
  // ...and the region unmapped before doIo: they are submitted first, and read correctly.
  b.unmapMemRegion(first);
  ok(q, 1);
  assert.deepEqual(first.bytes, pattern(4 * BS, 1));
  // The freed index now belongs to another region: its data must land there, not in `first`.
  first.bytes.fill(0);
  const second = mapped(b, 4 * BS);
  pwrite(t.path, 0, pattern(4 * BS, 2));
  q.read(0, second.bytes, "second");
  ok(q, 1);
  assert.deepEqual(second.bytes, pattern(4 * BS, 2));
  assert.ok(first.bytes.every((v) => v === 0), "the unmapped region was not written");
  // I/O into the unmapped region still works, as plain reads.
  q.read(0, first.bytes, "again");
  ok(q, 1);
  assert.deepEqual(first.bytes, pattern(4 * BS, 2));
});

// An index emptied below the highest one in use is [0, 0): an empty buffer (address 0) matched
// it, the lookup threw TypeError on its null buffer after the SQE had been claimed, and the next
// doIo handed the kernel that SQE as it was: the queue's previous request, run again.
test("fixed buffers: an empty buffer with an emptied index below a used one completes, and nothing runs twice", () => {
  const t = TARGETS[0];
  using b = connectTo(t);
  b.setInt("num-entries", 1); // one SQE: the stale one is surely the write's
  b.start();
  const q = b.getQueue(0)!;
  const w = new Uint8Array(BS).fill(0x42);
  q.write(0, w, "the only write");
  ok(q, 1);
  w.fill(0x99); // the caller reuses its buffer
  const low = mapped(b, 16 * BS);
  mapped(b, 16 * BS);
  b.unmapMemRegion(low);
  q.read(2 * BS, new Uint8Array(0), "empty read");
  q.write(2 * BS, new Uint8Array(0), "empty write");
  const got = reap(q, 2);
  assert.deepEqual(got.map((c) => [c.userData, c.ret]), [["empty read", 0], ["empty write", 0]]);
  assert.equal(q.doIo([], 0, 8), 0, "a completion nobody asked for");
  assert.equal(pread(t.path, 0, 1)[0], 0x42, "the first write ran again with the buffer's new bytes");
});

test("fixed buffers: more mapped regions than the table holds all work", () => {
  const t = TARGETS[TARGETS.length - 1];
  using b = startOn(t);
  const q = b.getQueue(0)!;
  const regions = Array.from({ length: 70 }, () => mapped(b, BS));
  pwrite(t.path, 0, pattern(70 * BS, 3));
  const out = reapAllRead(q, regions);
  assert.equal(out, 70);
  for (let i = 0; i < 70; i++) {
    assert.deepEqual(regions[i].bytes, pattern(70 * BS, 3).subarray(i * BS, (i + 1) * BS));
  }
  for (const r of regions) b.unmapMemRegion(r);
});

function reapAllRead(q: Queue, regions: MemoryRegion[]): number {
  let n = 0;
  for (let i = 0; i < regions.length; i += 32) {
    const batch = regions.slice(i, i + 32);
    batch.forEach((r, k) => q.read((i + k) * BS, r.bytes, i + k));
    ok(q, batch.length);
    n += batch.length;
  }
  return n;
}

test("fixed buffers: a queue added after mapping uses the region too", () => {
  const t = TARGETS[TARGETS.length - 1];
  using b = startOn(t);
  const region = mapped(b, 2 * BS);
  const index = b.addQueue();
  const q = b.getQueue(index)!;
  region.bytes.set(pattern(2 * BS, 4));
  q.write(8 * BS, region.bytes, "w");
  ok(q, 1);
  assert.deepEqual(pread(t.path, 8 * BS, 2 * BS), pattern(2 * BS, 4));
  region.bytes.fill(0);
  q.read(8 * BS, region.bytes, "r");
  ok(q, 1);
  assert.deepEqual(region.bytes, pattern(2 * BS, 4));
});

test("fixed buffers: a region the caller built (JS memory) is mapped and used", () => {
  const t = TARGETS[0];
  using b = startOn(t);
  const q = b.getQueue(0)!;
  const bytes = new Uint8Array(new ArrayBuffer(4 * BS));
  const region: MemoryRegion = { bytes, len: bytes.byteLength, fd: -1, fdOffset: 0 };
  b.mapMemRegion(region);
  pwrite(t.path, 0, pattern(4 * BS, 5));
  q.read(0, bytes, "r");
  ok(q, 1);
  assert.deepEqual(bytes, pattern(4 * BS, 5));
  b.unmapMemRegion(region);
});

test("fixed buffers: not used once the region's memory was detached and other memory mapped there", () => {
  // The caller breaks mapping's promise: it detaches the region's view and maps other memory at
  // the same address. The ring still holds the old pages as fixed buffer; requests from the new
  // memory must not go through them (reads would land there, writes would store their bytes).
  const t = TARGETS[0];
  using b = startOn(t);
  const q = b.getQueue(0)!;
  const n = native!;
  const len = 4 * BS;
  const old = mapMemfd(n, "test-old", len);
  const region: MemoryRegion = { bytes: new Uint8Array(n.view(old.addr, len)), len, fd: old.fd, fdOffset: 0 };
  b.mapMemRegion(region);
  region.bytes.fill(0x11);
  (region.bytes.buffer as ArrayBuffer).transfer(0);
  const fd = n.libc.memfd_create(new TextEncoder().encode("test-new\0"), 0);
  assert.ok(fd >= 0);
  assert.equal(n.libc.ftruncate(fd, BigInt(len)), 0);
  const MAP_SHARED_FIXED = 0x01 | 0x10;
  assert.equal(n.libc.mmap(old.addr, BigInt(len), 3, MAP_SHARED_FIXED, fd, 0n), old.addr);
  try {
    const fresh = new Uint8Array(n.view(old.addr, len));
    fresh.set(pattern(len, 21));
    q.write(0, fresh, "write");
    ok(q, 1);
    assert.deepEqual(pread(t.path, 0, len), pattern(len, 21), "the new memory's bytes on disk");
    pwrite(t.path, len, pattern(len, 22));
    q.read(len, fresh, "read");
    ok(q, 1);
    assert.deepEqual(fresh, pattern(len, 22), "read into the new memory");
  } finally {
    b.unmapMemRegion(region);
    n.libc.munmap(old.addr, BigInt(len));
    closeFd(n, fd);
    closeFd(n, old.fd);
  }
});

// A buffer that starts inside a mapped region but reaches past its end is not in the registered
// buffer: it goes plain. Taken for the region's (its start checked alone) it went as READ_FIXED
// and the kernel refused it with EFAULT.
for (const t of TARGETS) {
  test(`fixed buffers: a buffer starting in a mapped region and reaching past it is read plain [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const r = b.allocMemRegion(2 * BS);
    const half: MemoryRegion = { ...r, bytes: r.bytes.subarray(0, BS), len: BS };
    b.mapMemRegion(half);
    pwrite(t.path, 0, pattern(2 * BS, 5));
    q.read(0, r.bytes, "past the region");
    ok(q, 1);
    assert.deepEqual(r.bytes, pattern(2 * BS, 5));
    b.unmapMemRegion(half);
  });
}

// Without CAP_IPC_LOCK the kernel charges a registered buffer's pages to RLIMIT_MEMLOCK, and
// refuses a region past it (ENOMEM): that region's I/O goes plain. It stayed plain after another
// region was unmapped and the limit had room again; now every change of the mapped regions tries
// the refused ones again. The limit (384 KiB) holds the ring and one 256 KiB region, not two.
test(
  ...skipIf(
    "fixed buffers: a region refused at RLIMIT_MEMLOCK is registered once another region is unmapped",
    childWithoutUnavailable("CAP_IPC_LOCK", ["setpriv", "prlimit"]),
  ),
  () => {
    const dir = mkdtempSync(join(tmpdir(), "blkio-pinned-"));
    try {
      const size = 256 * 1024;
      const got = runChild("_pinned_regions_child.ts", [join(dir, "disk.img"), String(size)], [
        "setpriv",
        "--bounding-set",
        "-ipc_lock",
        "prlimit",
        `--memlock=${384 * 1024}`,
      ]);
      const [start, first, both, second] = got.pinned, kib = size / 1024;
      assert.equal(got.right, true, `read through the second region: ret ${got.ret}`);
      assert.equal(first - start, kib, "the first region is registered");
      // A kernel that does not charge registered buffers to the limit takes both at once.
      if (both - start === 2 * kib) return assert.equal(second - start, kib);
      assert.equal(both - start, kib, "the limit refused the second region");
      assert.equal(second - start, kib, "the second region is registered once the first is unmapped");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test("fixed buffers: cleanup scratch targets", () => cleanupAll());
