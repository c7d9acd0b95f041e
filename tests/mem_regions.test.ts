// libblkio tests/alloc-mem-region.c, map-mem-region.c and auto-free-mem-regions.c, plus the
// region lifetime rules (EBUSY while mapped or in use, foreign regions refused).
import { test } from "node:test";
import assert from "./_assert.ts";
import { execFileSync } from "node:child_process";
import process from "node:process";
import { existsSync, readFileSync, readlinkSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { Blkio, BlockDevice, type Completion, type MemoryRegion, type Queue } from "../mod.ts";
import { native } from "../ffi/load.ts";
import {
  assertErrno,
  cleanupAll,
  connectTo,
  pread,
  pwrite,
  reap,
  scratchFile,
  skipIf,
  startOn,
  type Target,
  targets,
} from "./_helpers.ts";
import { loopUnavailableReason, tmpfsLoop } from "./_loop_device.ts";

const TARGETS = targets();
const FILE = TARGETS[0];
const DIRECT = TARGETS.filter((t) => t.direct);
const MiB = 1024 * 1024;

function alignment(b: Blkio): number {
  return Number(b.getUint64("mem-region-alignment"));
}

/** The target of /proc/self/fd/<fd>, or null when the fd is not open. */
function fdLink(fd: number): string | null {
  const p = `/proc/self/fd/${fd}`;
  if (!existsSync(p)) return null;
  try {
    return readlinkSync(p);
  } catch {
    return null;
  }
}

/** Asserts that `fd` no longer refers to the memfd it referred to (`before`). */
function assertFdClosed(fd: number, before: string): void {
  const now = fdLink(fd);
  assert.ok(now === null || now !== before, `fd ${fd} still open (${now})`);
}

/** The file status flags of `fd` from /proc/self/fdinfo (octal there). */
function fdinfoFlags(fd: number): number {
  const text = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
  const m = /^flags:\s+([0-7]+)$/m.exec(text);
  assert.ok(m, `no flags line in fdinfo of ${fd}: ${text}`);
  return parseInt(m[1], 8);
}

function pattern(len: number, seed: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 31 + seed) & 0xff);
}

/** A region the caller built: `len` bytes of JS memory at an address aligned to `align`. */
function ownRegion(len: number, align: number, skew = 0): MemoryRegion {
  const ab = new ArrayBuffer(len + align * 2);
  const addr = native!.addressOf(ab);
  const off = ((align - (addr % align)) % align) + skew;
  return { bytes: new Uint8Array(ab, off, len), len, fd: -1, fdOffset: 0 };
}

// --- alloc-mem-region ---

test("alloc-mem-region: before connect → ENODEV", () => {
  using b = Blkio.create("io_uring");
  b.setStr("path", FILE.path);
  assertErrno(() => b.allocMemRegion(4096), "ENODEV");
});

for (const t of TARGETS) {
  test(`alloc-mem-region: connected state returns a memfd region [${t.name}]`, () => {
    using b = connectTo(t);
    const len = Math.max(alignment(b), 4096) * 2;
    const r = b.allocMemRegion(len);
    assert.equal(r.len, len);
    assert.equal(r.bytes.byteLength, len);
    assert.equal(r.fdOffset, 0);
    assert.ok(Number.isInteger(r.fd) && r.fd >= 0, `fd ${r.fd}`);
    assert.match(fdLink(r.fd) ?? "", /memfd:libblkio-buf/);
    assert.ok((fdinfoFlags(r.fd) & 0o2000000) !== 0, "memfd must be close-on-exec (O_CLOEXEC)");
    // The memory is usable and zero-filled, and it is the memfd's memory (shared mapping).
    assert.ok(r.bytes.every((x) => x === 0));
    r.bytes.set([1, 2, 3], len - 3);
    assert.deepEqual([...r.bytes.subarray(len - 3)], [1, 2, 3]);
    assert.deepEqual([...readFileSync(`/proc/self/fd/${r.fd}`).subarray(len - 3)], [1, 2, 3]);
    // Regions are frozen: the caller cannot swap the memory behind the library's back.
    assert.ok(Object.isFrozen(r));
  });
}

for (const t of DIRECT) {
  test(`alloc-mem-region: len 0 or not a multiple of mem-region-alignment → EINVAL [${t.name}]`, () => {
    using b = connectTo(t);
    const align = alignment(b);
    assert.ok(align > 1, `O_DIRECT alignment ${align}`);
    assertErrno(() => b.allocMemRegion(0), "EINVAL");
    assertErrno(() => b.allocMemRegion(align + 1), "EINVAL");
    assertErrno(() => b.allocMemRegion(align / 2), "EINVAL");
    assertErrno(() => b.allocMemRegion(-align), "EINVAL");
    assertErrno(() => b.allocMemRegion(NaN), "EINVAL");
    assertErrno(() => b.allocMemRegion(align + 0.5), "EINVAL");
    assertErrno(() => b.allocMemRegion("4096" as unknown as number), "EINVAL");
    assertErrno(() => b.allocMemRegion(4096n as unknown as number), "EINVAL");
    assertErrno(() => b.allocMemRegion(undefined as unknown as number), "EINVAL");
    assert.equal(b.allocMemRegion(align).len, align);
  });
}

test("alloc-mem-region: len 0 → EINVAL on a buffered file too", () => {
  using b = connectTo(FILE);
  assertErrno(() => b.allocMemRegion(0), "EINVAL");
});

test("alloc-mem-region: map before start → EBUSY; map, map again EINVAL, unmap twice, remap", () => {
  using b = connectTo(FILE);
  const r = b.allocMemRegion(64 * 1024);
  assertErrno(() => b.mapMemRegion(r), "EBUSY", /started/);
  b.start();
  b.mapMemRegion(r);
  assertErrno(() => b.mapMemRegion(r), "EINVAL", /already mapped/);
  b.unmapMemRegion(r);
  b.unmapMemRegion(r);
  b.mapMemRegion(r);
  assertErrno(() => b.mapMemRegion(r), "EINVAL", /already mapped/);
  b.unmapMemRegion(r);
  b.freeMemRegion(r);
});

// libblkio's Blkio::map_mem_region reads mem-region-alignment (io_uring: ENODEV before connect)
// and checks the region's alignment before the driver's "Device must be started" (EBUSY).
for (const t of DIRECT) {
  test(`map-mem-region: before start, as libblkio: ENODEV before connect, a misaligned region EINVAL [${t.name}]`, () => {
    const mem = new Uint8Array(16384);
    const off = (4096 - (native!.addressOf(mem.buffer) % 4096)) % 4096;
    const aligned: MemoryRegion = { bytes: mem.subarray(off, off + 4096), len: 4096, fd: -1, fdOffset: 0 };
    const misaligned: MemoryRegion = {
      bytes: mem.subarray(off + 1, off + 4097),
      len: 4096,
      fd: -1,
      fdOffset: 0,
    };
    using b = Blkio.create("io_uring");
    assertErrno(() => b.mapMemRegion(aligned), "ENODEV", /connected/);
    b.setStr("path", t.path);
    b.setBool("direct", true);
    b.connect();
    assert.ok(alignment(b) > 1);
    assertErrno(() => b.mapMemRegion(misaligned), "EINVAL", /mem-region-alignment/);
    assertErrno(() => b.mapMemRegion(aligned), "EBUSY", /started/);
    b.start();
    // Nothing was recorded by the refused calls: the region maps now, once.
    b.mapMemRegion(aligned);
    assertErrno(() => b.mapMemRegion(aligned), "EINVAL", /already mapped/);
    b.unmapMemRegion(aligned);
  });
}

test("alloc-mem-region: works in started state too", () => {
  using b = startOn(FILE);
  const r = b.allocMemRegion(8192);
  assert.equal(r.bytes.byteLength, 8192);
  b.mapMemRegion(r);
  b.unmapMemRegion(r);
  b.freeMemRegion(r);
});

// Whoever gets a region's fd (a vhost-user back-end maps it) could truncate it, and this process
// then died of SIGBUS at its next touch of the region's bytes. The memfd is sealed against that.
test("alloc-mem-region: its memfd cannot be shrunk (or sealed further) by whoever gets the fd", () => {
  using b = startOn(FILE);
  const r = b.allocMemRegion(8192);
  // Through libc: Deno's node:fs knows only the fds it opened itself.
  const n = native!;
  for (const len of [0n, 4096n]) {
    assert.equal(n.libc.ftruncate(r.fd, len), -1, `ftruncate to ${len} succeeded`);
    assert.equal(n.errno(), 1, "EPERM");
  }
  r.bytes[8191] = 1;
  assert.equal(r.bytes[8191], 1);
  b.freeMemRegion(r);
});

for (const t of DIRECT) {
  test(`alloc-mem-region: data round trip through region memory [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const page = 4096;
    const r = b.allocMemRegion(Math.max(alignment(b), page) * 4);
    b.mapMemRegion(r);
    const out = r.bytes.subarray(0, page);
    const back = r.bytes.subarray(page, 2 * page);
    const want = pattern(page, 7);
    out.set(want);
    q.write(0x10000, out, "w");
    q.flush("f");
    const done = reap(q, 2);
    for (const c of done) assert.equal(c.ret, 0, `${String(c.userData)}: ${c.ret} ${c.errorMsg}`);
    assert.deepEqual(pread(t.path, 0x10000, page), want);

    const other = pattern(page, 99);
    pwrite(t.path, 0x20000, other);
    q.read(0x20000, back, "r");
    const [c] = reap(q, 1);
    assert.equal(c.ret, 0, `read: ${c.ret} ${c.errorMsg}`);
    assert.equal(c.userData, "r");
    assert.deepEqual(back, other);

    // Vectored: two iovecs from different pages of the region.
    const a = r.bytes.subarray(2 * page, 3 * page), z = r.bytes.subarray(3 * page, 4 * page);
    a.fill(0xaa);
    z.fill(0x55);
    q.writev(0x30000, [a, z], "wv");
    assert.equal(reap(q, 1)[0].ret, 0);
    // Checked outside the library: reading back through the same code could undo its mistake
    // (iovecs taken in reverse order passed this test).
    assert.deepEqual(pread(t.path, 0x30000, 2 * page), new Uint8Array([...a, ...z]));
    pwrite(t.path, 0x30000 + page, new Uint8Array(page).fill(0x66));
    back.fill(0);
    out.fill(0);
    q.readv(0x30000, [back, out], "rv");
    assert.equal(reap(q, 1)[0].ret, 0);
    assert.ok(back.every((x) => x === 0xaa) && out.every((x) => x === 0x66));
    b.unmapMemRegion(r);
    b.freeMemRegion(r);
  });
}

// --- map-mem-region: a region the caller built from memory it owns ---

for (const t of DIRECT) {
  test(`map-mem-region: caller-built region, alignment checks, double and overlapping maps [${t.name}]`, () => {
    using b = startOn(t);
    const align = alignment(b);
    const len = align * 8;
    assertErrno(() => b.mapMemRegion(ownRegion(len, align, 1)), "EINVAL", /alignment/);
    const own = ownRegion(len + align, align);
    const short = { ...own, bytes: own.bytes.subarray(0, len + 1), len: len + 1 };
    assertErrno(() => b.mapMemRegion(short), "EINVAL", /alignment/);

    const r: MemoryRegion = { ...own, bytes: own.bytes.subarray(0, len), len };
    b.mapMemRegion(r);
    assertErrno(() => b.mapMemRegion(r), "EINVAL", /already mapped/);
    // The same memory described by another object is the same region.
    assertErrno(() => b.mapMemRegion({ ...r }), "EINVAL", /already mapped/);
    // Overlapping the tail of r.
    const tail = own.bytes.subarray(len - align, len + align);
    assertErrno(
      () => b.mapMemRegion({ bytes: tail, len: tail.byteLength, fd: -1, fdOffset: 0 }),
      "EINVAL",
      /overlap/,
    );
    // Inside r.
    const inner = own.bytes.subarray(align, 2 * align);
    assertErrno(() => b.mapMemRegion({ bytes: inner, len: align, fd: -1, fdOffset: 0 }), "EINVAL");
    // Adjacent, not overlapping: fine.
    const next = own.bytes.subarray(len, len + align);
    const adj: MemoryRegion = { bytes: next, len: align, fd: -1, fdOffset: 0 };
    b.mapMemRegion(adj);

    // I/O through the caller's region.
    const q = b.getQueue(0)!;
    const page = Math.max(align, 512);
    const buf = r.bytes.subarray(0, page);
    buf.set(pattern(page, 3));
    q.write(0x40000, buf, "w");
    assert.equal(reap(q, 1)[0].ret, 0);
    const into = r.bytes.subarray(page, 2 * page);
    q.read(0x40000, into, "r");
    assert.equal(reap(q, 1)[0].ret, 0);
    assert.deepEqual(into, pattern(page, 3));

    b.unmapMemRegion(r);
    b.unmapMemRegion(r);
    b.unmapMemRegion(adj);
    b.mapMemRegion(r);
    b.unmapMemRegion(r);
    // A caller-built region is the caller's: the library cannot free it.
    assertErrno(() => b.freeMemRegion(r), "EINVAL");
  });
}

test("map-mem-region: malformed regions → EINVAL", () => {
  using b = startOn(FILE);
  const ok = ownRegion(4096, 1);
  const bad: unknown[] = [
    null,
    undefined,
    42,
    "region",
    {},
    { ...ok, bytes: new ArrayBuffer(4096) },
    { ...ok, bytes: new Uint16Array(2048) },
    { ...ok, len: 4095 },
    { ...ok, len: "4096" },
    { ...ok, fd: -2 },
    { ...ok, fd: 1.5 },
    { ...ok, fdOffset: -1 },
    { ...ok, fdOffset: NaN },
    { bytes: new Uint8Array(0), len: 0, fd: -1, fdOffset: 0 },
    // Values a template string cannot print (they made a TypeError, not EINVAL).
    { ...ok, len: Symbol("len") },
    { ...ok, fd: Symbol("fd") },
    { ...ok, len: Object.create(null) },
    {
      ...ok,
      fd: new Proxy({}, {
        get: () => {
          throw new Error("trap");
        },
      }),
    },
  ];
  for (const r of bad) assertErrno(() => b.mapMemRegion(r as MemoryRegion), "EINVAL");
  b.mapMemRegion(ok);
  b.unmapMemRegion(ok);
});

// --- auto-free-mem-regions ---

test("auto-free-mem-regions: free closes the fd, destroy closes the rest", () => {
  const b = connectTo(FILE);
  const regions = [b.allocMemRegion(MiB), b.allocMemRegion(MiB), b.allocMemRegion(MiB)];
  const links = regions.map((r) => fdLink(r.fd)!);
  for (const l of links) assert.match(l, /memfd:libblkio-buf/);
  assert.equal(new Set(regions.map((r) => r.fd)).size, 3);

  b.freeMemRegion(regions[1]);
  assertFdClosed(regions[1].fd, links[1]);
  assert.equal(regions[1].bytes.byteLength, 0);
  assert.equal(fdLink(regions[0].fd), links[0]);
  assert.equal(fdLink(regions[2].fd), links[2]);
  assert.equal(regions[0].bytes.byteLength, MiB);

  b.start();
  b.mapMemRegion(regions[2]);
  b.destroy();
  assertFdClosed(regions[0].fd, links[0]);
  assertFdClosed(regions[2].fd, links[2]);
  for (const r of regions) {
    assert.equal(r.bytes.byteLength, 0);
    assert.equal(r.bytes[0], undefined);
  }
  b.destroy();
});

// --- lifetime rules ---

test("free-mem-region: a mapped region → EBUSY, then fine once unmapped", () => {
  using b = startOn(FILE);
  const r = b.allocMemRegion(4096);
  b.mapMemRegion(r);
  assertErrno(() => b.freeMemRegion(r), "EBUSY", /mapped/);
  assert.equal(r.bytes.byteLength, 4096);
  b.unmapMemRegion(r);
  b.freeMemRegion(r);
  assert.equal(r.bytes.byteLength, 0);
});

// libblkio passes regions by value: a copy names the same region. unmapMemRegion({ ...r }) did
// nothing, silently, and r stayed mapped (map did see the copy as the mapped region).
test("mem-regions: a copy of a region ({ ...r }) unmaps and frees it, as libblkio's by-value struct does", () => {
  using b = startOn(FILE);
  const r = b.allocMemRegion(8192);
  b.mapMemRegion(r);
  assertErrno(() => b.mapMemRegion({ ...r }), "EINVAL", /already mapped/);
  b.unmapMemRegion({ ...r });
  b.mapMemRegion(r); // it was unmapped: mapping it again is fine
  b.unmapMemRegion({ ...r });
  b.freeMemRegion({ ...r });
  assert.equal(r.bytes.byteLength, 0, "freed");
  assertErrno(() => b.freeMemRegion(r), "EINVAL", /already freed/);
  // The other way round: a copy mapped, the original unmapped and freed.
  const r2 = b.allocMemRegion(8192);
  const c2 = { ...r2 };
  b.mapMemRegion(c2);
  assertErrno(() => b.freeMemRegion({ ...r2 }), "EBUSY", /still mapped/);
  b.unmapMemRegion(r2);
  b.mapMemRegion(c2); // it was unmapped
  b.unmapMemRegion(r2);
  b.freeMemRegion(c2);
  assert.equal(r2.bytes.byteLength, 0, "freed");
  // A caller-built region, and a region with the same memory but another length, are not copies.
  const own = b.allocMemRegion(8192);
  const built: MemoryRegion = { bytes: own.bytes.subarray(0, 4096), len: 4096, fd: own.fd, fdOffset: 0 };
  b.mapMemRegion(built);
  b.unmapMemRegion({ ...built, len: 8192 });
  assertErrno(() => b.mapMemRegion(built), "EINVAL", /already mapped/);
  b.unmapMemRegion({ ...built });
  b.mapMemRegion(built);
  b.unmapMemRegion(built);
  // An object whose getter throws is no copy: unmap ignores it, as any region not mapped.
  b.mapMemRegion(built);
  b.unmapMemRegion({
    get bytes(): Uint8Array {
      throw new Error("boom");
    },
  } as unknown as MemoryRegion);
  assertErrno(() => b.mapMemRegion(built), "EINVAL", /already mapped/);
  b.unmapMemRegion(built);
  b.freeMemRegion(own);
});

function inFlightCase(t: Target, name: string, submit: (q: Queue, bytes: Uint8Array) => void) {
  test(`free-mem-region: request in flight → EBUSY (${name}) [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const r = b.allocMemRegion(Math.max(alignment(b), 4096) * 2);
    submit(q, r.bytes);
    assertErrno(() => b.freeMemRegion(r), "EBUSY", /in use|flight/);
    assert.equal(r.bytes.byteLength, r.len);
    const out: Completion[] = [];
    let left = 0;
    for (;;) {
      try {
        left += q.doIo(out, 1, 1);
      } catch {
        break; // nothing outstanding any more (EINVAL)
      }
    }
    assert.ok(left > 0);
    b.freeMemRegion(r);
    assert.equal(r.bytes.byteLength, 0);
  });
}

inFlightCase(FILE, "read", (q, bytes) => q.read(0, bytes.subarray(0, 4096), "r"));
inFlightCase(
  FILE,
  "readv",
  (q, bytes) => q.readv(0, [new Uint8Array(512), bytes.subarray(4096, 8192)], "rv"),
);
inFlightCase(FILE, "write", (q, bytes) => q.write(0, bytes.subarray(0, 512), "w"));

test("free-mem-region: request waiting in the backlog (ring full) → EBUSY", () => {
  const b = connectTo(FILE);
  b.setInt("num-entries", 4);
  b.start();
  const q = b.getQueue(0)!;
  const r = b.allocMemRegion(4096);
  // Fill the ring and its in-flight slots with requests on other memory, then one on the region.
  const other = new Uint8Array(512);
  let n = 0;
  for (; n < 64; n++) q.read(0, other, n);
  q.read(0, r.bytes.subarray(0, 512), "region");
  assertErrno(() => b.freeMemRegion(r), "EBUSY");
  const got = reap(q, n + 1);
  assert.equal(got.length, n + 1);
  assert.equal(got[n].userData, "region");
  b.freeMemRegion(r);
  b.destroy();
});

test("free-mem-region: bytes are empty after free and refused as a buffer", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const r = b.allocMemRegion(8192);
  const sub = r.bytes.subarray(4096);
  b.freeMemRegion(r);
  assert.equal(r.bytes.byteLength, 0);
  assert.equal(r.bytes.length, 0);
  assert.equal(r.bytes[0], undefined);
  assert.equal(sub.byteLength, 0);
  assert.equal(sub[0], undefined);
  r.bytes[0] = 1; // ignored, no crash
  assert.equal(r.len, 8192); // the description stays
  assertErrno(() => q.read(0, r.bytes), "EINVAL");
  assertErrno(() => q.write(0, sub), "EINVAL");
  assertErrno(() => q.readv(0, [sub]), "EINVAL");
  assertErrno(() => b.mapMemRegion(r), "EINVAL");
  // Freeing twice: no longer this instance's region.
  assertErrno(() => b.freeMemRegion(r), "EINVAL");
});

// ArrayBuffer.prototype.transfer moves a region's memory into a new ArrayBuffer, which the
// library cannot see: unmapping it on free or destroy left that buffer on unmapped memory, and
// its next access was a segfault on both runtimes.
test("free-mem-region: memory transferred to another ArrayBuffer stays usable after free and destroy", () => {
  const b = startOn(FILE);
  const q = b.getQueue(0)!;
  const freed = b.allocMemRegion(8192), kept = b.allocMemRegion(8192);
  const moved = [freed, kept].map((r, i) => {
    r.bytes.fill(0x30 + i);
    return new Uint8Array((r.bytes.buffer as ArrayBuffer).transfer());
  });
  assert.equal(freed.bytes.byteLength, 0, "transfer detaches the region's own bytes");
  b.freeMemRegion(freed);
  b.destroy();
  for (const [i, m] of moved.entries()) {
    assert.equal(m.byteLength, 8192);
    assert.ok(m.every((x) => x === 0x30 + i), `region ${i}: its data is still there`);
    m.fill(0x7f); // writable too
  }
  // And a new instance's regions get memory of their own.
  using b2 = startOn(FILE);
  const r2 = b2.allocMemRegion(8192);
  r2.bytes.fill(1);
  assert.ok(moved[0].every((x) => x === 0x7f) && moved[1].every((x) => x === 0x7f));
  assertErrno(() => q.read(0, moved[0]), "EBADF");
});

test("free-mem-region: a foreign region → EINVAL", () => {
  using a = connectTo(FILE);
  using b = connectTo(FILE);
  const ra = a.allocMemRegion(4096);
  assertErrno(() => b.freeMemRegion(ra), "EINVAL");
  assert.equal(ra.bytes.byteLength, 4096);
  // Nor is one with a's region's memory under another length or fd (a copy is: see below).
  assertErrno(() => a.freeMemRegion({ ...ra, len: 2048 }), "EINVAL");
  assertErrno(() => a.freeMemRegion({ ...ra, fd: -1 }), "EINVAL");
  assertErrno(() => a.freeMemRegion(ownRegion(4096, 1)), "EINVAL");
  for (const v of [null, undefined, 0, "x", {}]) {
    assertErrno(() => a.freeMemRegion(v as unknown as MemoryRegion), "EINVAL");
  }
  a.freeMemRegion(ra);
});

// Memory stays allocated while anything maps or uses it, whichever instance or region object:
// freed, the same address could be handed out again while a ring still holds the old pages as a
// registered buffer (reads would land there, writes would store what was there).

test("free-mem-region: memory mapped through another region object → EBUSY", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const r = b.allocMemRegion(8192);
  const alias: MemoryRegion = { bytes: r.bytes.subarray(4096), len: 4096, fd: r.fd, fdOffset: 4096 };
  b.mapMemRegion(alias);
  assertErrno(() => b.freeMemRegion(r), "EBUSY", /mapped through another region/);
  assert.equal(r.bytes.byteLength, 8192);
  // Still the memory it was: a read through the alias lands in r.
  pwrite(FILE.path, 0, pattern(4096, 5));
  q.read(0, alias.bytes, "alias");
  assert.equal(reap(q, 1)[0].ret, 0);
  assert.deepEqual(r.bytes.subarray(4096), pattern(4096, 5));
  b.unmapMemRegion(alias);
  b.freeMemRegion(r);
  assert.equal(r.bytes.byteLength, 0);
});

/** A read into `bytes` and a write from it at offset 0 of `t` move the right data. */
function assertRoundTrip(t: Target, q: Queue, bytes: Uint8Array, seed: number): void {
  pwrite(t.path, 0, pattern(bytes.length, seed));
  q.read(0, bytes, "read");
  assert.equal(reap(q, 1)[0].ret, 0);
  assert.deepEqual(bytes, pattern(bytes.length, seed));
  bytes.set(pattern(bytes.length, seed + 1));
  q.write(0, bytes, "write");
  assert.equal(reap(q, 1)[0].ret, 0);
  assert.deepEqual(pread(t.path, 0, bytes.length), pattern(bytes.length, seed + 1));
}

for (const t of TARGETS) {
  test(`mem-regions: a region mapped by another instance outlives its allocator [${t.name}]`, () => {
    using user = startOn(t);
    const q = user.getQueue(0)!;
    const owner = connectTo(t);
    const len = Math.max(alignment(owner), 4096) * 4;
    const r = owner.allocMemRegion(len);
    const link = fdLink(r.fd);
    user.mapMemRegion(r);
    assertErrno(() => owner.freeMemRegion(r), "EBUSY", /by another instance/);
    owner.destroy();
    // Still allocated and still the region's memory: I/O through it moves the right data.
    assert.equal(r.bytes.byteLength, len);
    assert.equal(fdLink(r.fd), link);
    assertRoundTrip(t, q, r.bytes, 7);
    // Unmapped by its last user, it is freed; memory allocated after (likely at the same
    // address) gets its own data, not the old region's.
    user.unmapMemRegion(r);
    assert.equal(r.bytes.byteLength, 0);
    assertFdClosed(r.fd, link!);
    const fresh = user.allocMemRegion(len);
    assertRoundTrip(t, q, fresh.bytes, 9);
  });
}

test("mem-regions: destroying the user of a foreign region frees it too", () => {
  const owner = connectTo(FILE);
  const user = startOn(FILE);
  const r = owner.allocMemRegion(4096);
  const link = fdLink(r.fd)!;
  user.mapMemRegion(r);
  owner.destroy();
  assert.equal(r.bytes.byteLength, 4096);
  user.destroy();
  assert.equal(r.bytes.byteLength, 0);
  assertFdClosed(r.fd, link);
});

test("mem-regions: memory another instance's requests use is freed only once they completed", () => {
  const owner = connectTo(FILE);
  using user = startOn(FILE);
  const q = user.getQueue(0)!;
  const r = owner.allocMemRegion(4096);
  pwrite(FILE.path, 0, pattern(4096, 11));
  // Queued, not yet submitted: the kernel gets the address at the next doIo.
  q.read(0, r.bytes, "foreign");
  assertErrno(() => owner.freeMemRegion(r), "EBUSY", /in use/);
  owner.destroy();
  assert.equal(r.bytes.byteLength, 4096);
  assert.equal(reap(q, 1)[0].ret, 0);
  assert.deepEqual(r.bytes, pattern(4096, 11));
  // Freed by the next region call of any instance once nothing uses it.
  const other = user.allocMemRegion(4096);
  assert.equal(r.bytes.byteLength, 0);
  user.freeMemRegion(other);
});

test("mem-regions: use after destroy → EBADF", () => {
  const b = connectTo(FILE);
  const r = b.allocMemRegion(4096);
  b.destroy();
  assertErrno(() => b.allocMemRegion(4096), "EBADF");
  assertErrno(() => b.freeMemRegion(r), "EBADF");
  assertErrno(() => b.mapMemRegion(r), "EBADF");
  assertErrno(() => b.unmapMemRegion(r), "EBADF");
});

/** A logical block larger than any page size Linux runs with on x86-64 (4 KiB). */
const BIG_SECTOR = 65536;

/** Why a loop device with `BIG_SECTOR`-byte sectors cannot be made here, or null. */
function bigSectorUnavailable(): string | null {
  const why = loopUnavailableReason();
  if (why !== null) return why;
  const back = `/dev/shm/blkio-sector-probe-${process.pid}.img`;
  writeFileSync(back, "");
  truncateSync(back, BIG_SECTOR * 4);
  try {
    const dev = execFileSync("losetup", ["--find", "--show", "--sector-size", String(BIG_SECTOR), back], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    }).trim();
    execFileSync("losetup", ["-d", dev]);
    return null;
  } catch (e) {
    return `this kernel's loop driver refuses ${BIG_SECTOR}-byte sectors (${(e as Error).message.trim()})`;
  } finally {
    rmSync(back, { force: true });
  }
}

test(
  ...skipIf(
    `alloc-mem-region: a device whose logical block (${BIG_SECTOR} bytes) is larger than a page gets regions aligned to it, ` +
      "and BlockDevice buffers too (mmap alone aligns to a page: allocations failed EOVERFLOW at random)",
    bigSectorUnavailable(),
  ),
  async () => {
    const loop = tmpfsLoop(BIG_SECTOR * 16, "bigsector", BIG_SECTOR);
    try {
      {
        using b = startOn({ path: loop.path, direct: true });
        assert.equal(alignment(b), BIG_SECTOR);
        assert.equal(b.getInt("buf-alignment"), BIG_SECTOR);
        assert.equal(
          b.getInt("optimal-buf-alignment"),
          BIG_SECTOR,
          "the preferred alignment is at least the required one",
        );
        // With only page alignment from mmap, each of these had a 1 in 16 chance to be aligned.
        const regions: MemoryRegion[] = [];
        for (let i = 0; i < 16; i++) {
          const r = b.allocMemRegion(BIG_SECTOR * (1 + (i % 3)));
          regions.push(r);
          assert.equal(native!.addressOf(r.bytes.buffer) % BIG_SECTOR, 0, `region ${i} is aligned`);
        }
        const [src, dst] = [regions[1], regions[4]];
        b.mapMemRegion(src);
        b.mapMemRegion(dst);
        src.bytes.set(pattern(src.len, 7));
        const q = b.getQueue(0)!;
        q.write(BIG_SECTOR * 3, src.bytes, "w");
        assert.equal(reap(q, 1)[0].ret, 0);
        q.read(BIG_SECTOR * 3, dst.bytes, "r");
        assert.equal(reap(q, 1)[0].ret, 0);
        assert.deepEqual(dst.bytes, src.bytes, "read back through the instance");
        assert.deepEqual(pread(loop.path, BIG_SECTOR * 3, src.len), src.bytes, "on the device");
        for (const r of [src, dst]) b.unmapMemRegion(r);
        for (const r of regions) b.freeMemRegion(r);
      }
      const dev = await BlockDevice.open(loop.path, { direct: true });
      try {
        const bufs = Array.from({ length: 8 }, () => dev.allocBuffer(BIG_SECTOR));
        for (const [i, buf] of bufs.entries()) {
          assert.equal(
            (native!.addressOf(buf.buffer) + buf.byteOffset) % BIG_SECTOR,
            0,
            `buffer ${i} is aligned`,
          );
          buf.fill(i + 1);
        }
        await Promise.all(bufs.map((buf, i) => dev.write(i * BIG_SECTOR, buf)));
        for (const i of bufs.keys()) {
          assert.ok(
            pread(loop.path, i * BIG_SECTOR, BIG_SECTOR).every((x) => x === i + 1),
            `block ${i} written`,
          );
        }
      } finally {
        await dev.close();
      }
    } finally {
      loop.detach();
    }
  },
);

// A request that completed lets go of its buffer: its slot must not keep it. A free slot that
// still held a region's buffer made freeMemRegion throw EBUSY ("in use by requests in flight")
// while any other request was pending, and kept up to a ring's worth of buffers from the GC.
test("mem-regions: a region whose requests completed is freed while another request is pending", () => {
  const t = TARGETS[0];
  using b = startOn(t);
  const q = b.getQueue(0)!;
  const r = b.allocMemRegion(2 * 4096);
  b.mapMemRegion(r);
  q.read(0, r.bytes.subarray(0, 4096), "first");
  q.read(4096, r.bytes.subarray(4096), "second");
  for (const c of reap(q, 2)) assert.equal(c.ret, 0, `${c.userData}: ${c.ret} ${c.errorMsg}`);
  q.read(0, new Uint8Array(4096), "other"); // queued, not yet submitted
  b.unmapMemRegion(r);
  b.freeMemRegion(r);
  const [c] = reap(q, 1);
  assert.equal(c.userData, "other");
  assert.equal(c.ret, 0, `${c.ret} ${c.errorMsg}`);
});

// free of a region that is still mapped by this very instance: EBUSY with the message that says
// what to do (unmap it first), not the one about another region object or another instance.
test("mem-regions: freeing a region this instance maps says to unmap it first", () => {
  using b = Blkio.create("io_uring");
  b.setStr("path", scratchFile(1 << 20));
  b.connect();
  b.start();
  const r = b.allocMemRegion(65536);
  b.mapMemRegion(r);
  assertErrno(() => b.freeMemRegion(r), "EBUSY", /still mapped: unmap it before freeing it/);
  b.unmapMemRegion(r);
  b.freeMemRegion(r);
});

// A region's `bytes` is a plain Uint8Array the caller holds: an own `buffer` property on it (the
// caller's code) made free and unmap ask the queues about other memory. The region was freed with
// a read queued into it, and the next region, mapped at the same address, got the read's data
// (review, helper-76). The registry now keeps the ArrayBuffer it made.
test("mem-regions: a region whose bytes.buffer the caller redefined is still busy while a read is queued into it", () => {
  const file = TARGETS[0];
  pwrite(file.path, 0, new Uint8Array(4096).fill(0xab));
  using b = startOn(file);
  const q = b.getQueue(0)!;
  const out: Completion[] = [];
  const r = b.allocMemRegion(4096);
  q.read(0, r.bytes.subarray(0, 4096), "r");
  Object.defineProperty(r.bytes, "buffer", { value: new ArrayBuffer(8) });
  let freed = false;
  try {
    b.freeMemRegion(r);
    freed = true;
  } catch (e) {
    assert.equal((e as { code?: string }).code, "EBUSY");
  }
  // What the kernel writes once doIo hands the read over goes to whatever is mapped there now.
  const other = b.allocMemRegion(4096);
  q.doIo(out, 1, 1);
  assert.ok(
    !freed,
    `freed with a read queued (a new region got its data: ${other.bytes.every((v) => v === 0xab)})`,
  );

  // Unmapped (allowed while in use, on io_uring), then freed: still busy.
  const m = b.allocMemRegion(4096);
  b.mapMemRegion(m);
  q.read(0, m.bytes.subarray(0, 512), "m");
  Object.defineProperty(m.bytes, "buffer", { value: new ArrayBuffer(8) });
  b.unmapMemRegion(m);
  assertErrno(() => b.freeMemRegion(m), "EBUSY");
  q.doIo(out, 1, 1);
});

test("mem-regions: cleanup scratch targets", () => cleanupAll());
