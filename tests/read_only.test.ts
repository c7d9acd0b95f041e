// libblkio tests/read-only.c: with read-only=true, reads and flushes work and every request
// that would modify the device fails in its completion, leaving the device unchanged.
import { test } from "node:test";
import assert from "./_assert.ts";
import { chmodSync, openSync, readFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { Blkio, type BlkioError, BlockDevice, type Completion, ReqFlags } from "../mod.ts";
import {
  alignedBuffer,
  assertErrno,
  cleanupAll,
  connectTo,
  loopUnavailableReason,
  loseWriteZeroes,
  loseWriteZeroesUnavailableReason,
  MOUNT_SKIP,
  pread,
  pwrite,
  reap,
  scratchFile,
  scratchLoop,
  skipIf,
  startOn,
  targets,
  withReadOnlyMount,
} from "./_helpers.ts";

const TARGETS = targets();
const EBADF = 9;
const REGION = 256 * 1024;
const { FUA, NO_UNMAP, NO_FALLBACK } = ReqFlags;
/** Every combination of the write-zeroes flags. */
const WRITE_ZEROES_FLAGS = [
  0,
  FUA,
  NO_UNMAP,
  NO_FALLBACK,
  FUA | NO_UNMAP,
  FUA | NO_FALLBACK,
  NO_UNMAP | NO_FALLBACK,
  FUA | NO_UNMAP | NO_FALLBACK,
];
const IS_ROOT = typeof process.getuid === "function" && process.getuid() === 0;

function accessMode(fd: number): number {
  const line = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").split("\n").find((l) =>
    l.startsWith("flags:")
  )!;
  return parseInt(line.split(/\s+/)[1], 8) & 3;
}

function patterned(len: number, seed: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 31 + seed + (i >> 12)) & 0xff);
}

/** Expects every completion to be there exactly once, keyed by userData. */
function byUserData(done: Completion[], expected: string[]): Map<string, Completion> {
  const m = new Map<string, Completion>();
  for (const c of done) {
    const key = c.userData as string;
    assert.ok(!m.has(key), `completion ${key} seen twice`);
    m.set(key, c);
  }
  assert.deepEqual([...m.keys()].sort(), [...expected].sort());
  return m;
}

for (const t of TARGETS) {
  test(`read-only: reads and flush succeed, every modifying request fails, data unchanged [${t.name}]`, () => {
    const before = patterned(REGION, 5);
    pwrite(t.path, 0, before);
    using b = startOn(t, { readOnly: true });
    assert.equal(b.getBool("read-only"), true);
    const q = b.getQueue(0)!;
    const page = 4096;

    // Requests that only read.
    const rbuf = alignedBuffer(b, page);
    const iov = [alignedBuffer(b, page), alignedBuffer(b, page), alignedBuffer(b, page)];
    q.read(0x10000, rbuf, "read");
    q.readv(0x20000, iov, "readv");
    q.flush("flush");
    const ok = byUserData(reap(q, 3), ["read", "readv", "flush"]);
    for (const [k, c] of ok) assert.equal(c.ret, 0, `${k}: ret ${c.ret} ${c.errorMsg}`);
    assert.deepEqual(rbuf, before.subarray(0x10000, 0x10000 + page));
    iov.forEach((v, i) => assert.deepEqual(v, before.subarray(0x20000 + i * page, 0x20000 + (i + 1) * page)));

    // Requests that would modify the device.
    const wbuf = alignedBuffer(b, page).fill(0xee);
    const wiov = [
      alignedBuffer(b, page).fill(0xa),
      alignedBuffer(b, page).fill(0xb),
      alignedBuffer(b, page).fill(0xc),
    ];
    const names: string[] = [];
    for (const flags of [0, FUA]) {
      q.write(0x10000, wbuf, `write/${flags}`, flags);
      q.writev(0x20000, wiov, `writev/${flags}`, flags);
      names.push(`write/${flags}`, `writev/${flags}`);
    }
    for (const flags of WRITE_ZEROES_FLAGS) {
      q.writeZeroes(0x30000, 2 * page, `write-zeroes/${flags}`, flags);
      names.push(`write-zeroes/${flags}`);
    }
    q.discard(0x8000, 2 * page, "discard");
    names.push("discard");
    const failed = byUserData(reap(q, names.length), names);
    for (const [k, c] of failed) {
      // Everything that writes fails with EBADF (the fd is O_RDONLY), and says why. Discard too,
      // though the kernel checks the fallocate mode first: where the file system cannot discard
      // at all, it said ENOTSUP.
      assert.equal(c.ret, -EBADF, `${k}: ${c.errorMsg}`);
      assert.match(c.errorMsg ?? "", /read-only/, k);
    }

    // Nothing reached the device.
    assert.deepEqual(pread(t.path, 0, REGION), before);
    q.read(0x30000, rbuf, "reread");
    const [again] = reap(q, 1);
    assert.equal(again.ret, 0);
    assert.deepEqual(rbuf, before.subarray(0x30000, 0x30000 + page));
    assert.equal(b.getUint64("capacity"), BigInt(t.size));
  });
}

for (const t of TARGETS) {
  test(`read-only: the library opens the target O_RDONLY; read-only cannot change after connect [${t.name}]`, () => {
    using b = connectTo(t, { readOnly: true });
    assert.equal(accessMode(b.getInt("fd")), 0, "O_RDONLY");
    assert.equal(b.getBool("read-only"), true);
    assertErrno(() => b.setBool("read-only", false), "EBUSY", /read-only/);
    b.start();
    assertErrno(() => b.setBool("read-only", false), "EBUSY");
    assert.equal(b.getBool("read-only"), true);
    using rw = connectTo(t);
    assert.equal(accessMode(rw.getInt("fd")), 2, "O_RDWR");
    assert.equal(rw.getBool("read-only"), false);
  });
}

test("read-only: a 0444 file opens with read-only=true and reads", () => {
  const path = scratchFile(1024 * 1024, 0x42);
  chmodSync(path, 0o444);
  using b = Blkio.create("io_uring");
  b.setStr("path", path);
  b.setBool("read-only", true);
  b.connect();
  assert.equal(accessMode(b.getInt("fd")), 0);
  b.start();
  const q = b.getQueue(0)!;
  const buf = new Uint8Array(512);
  q.read(4096, buf, "r");
  const [c] = reap(q, 1);
  assert.equal(c.ret, 0);
  assert.ok(buf.every((v) => v === 0x42));
});

test(
  ...skipIf(
    "read-only: a 0444 file without read-only fails connect with EACCES",
    IS_ROOT && "root is not stopped by permission bits",
  ),
  () => {
    const path = scratchFile(1024 * 1024);
    chmodSync(path, 0o444);
    using b = Blkio.create("io_uring");
    b.setStr("path", path);
    assertErrno(() => b.connect(), "EACCES", /disk\.img/);
    assert.equal(b.state, "created");
  },
);

// Root is not stopped by permission bits, but a read-only mount stops everyone: the error for a
// target that cannot be opened for writing says how to open it for reading.
test(
  ...skipIf(
    "read-only: a file on a read-only mount fails connect with EROFS saying to set read-only, and reads with it",
    MOUNT_SKIP,
  ),
  () =>
    withReadOnlyMount({ "disk.img": new Uint8Array(65536).fill(0x42) }, async (dir) => {
      const path = join(dir, "disk.img");
      {
        using b = Blkio.create("io_uring");
        b.setStr("path", path);
        assertErrno(
          () => b.connect(),
          "EROFS",
          /Failed to open ".*disk\.img".*; to open it for reading only, set read-only/,
        );
        b.setBool("read-only", true);
        b.connect();
        b.start();
        const buf = new Uint8Array(512);
        b.getQueue(0)!.read(0, buf, "r");
        assert.equal(reap(b.getQueue(0)!, 1)[0].ret, 0);
        assert.ok(buf.every((v) => v === 0x42));
      }
      await assert.rejects(BlockDevice.open(path), /EROFS.*readOnly in BlockDevice\.open/);
      await (await BlockDevice.open(path, { readOnly: true })).close();
    }),
);

// A block device without write zeroes: a NO_FALLBACK request is refused before the kernel sees
// it, and that refusal said ENOTSUP on a read-only instance, where every other write is EBADF.
test(
  ...skipIf(
    "read-only: write zeroes with NO_FALLBACK on a device without write zeroes is EBADF too",
    loseWriteZeroesUnavailableReason(),
  ),
  () => {
    const dev = scratchLoop(1 << 20);
    loseWriteZeroes(dev);
    using b = startOn({ path: dev, direct: false }, { readOnly: true });
    const q = b.getQueue(0)!;
    const names = WRITE_ZEROES_FLAGS.map((flags) => `write-zeroes/${flags}`);
    WRITE_ZEROES_FLAGS.forEach((flags, k) => q.writeZeroes(0, 4096, names[k], flags));
    for (const [k, c] of byUserData(reap(q, names.length), names)) {
      assert.equal(c.ret, -EBADF, `${k}: ${c.ret} ${c.errorMsg}`);
    }
  },
);

// Linux opens a read-only block device (losetup -r, blockdev --setro) for writing, and then fails
// every write with a bare EPERM (leak hunt): connect refuses it the way a read-only mount is
// refused, and a device made read-only while connected says why its writes fail.
test(
  ...skipIf(
    "read-only: a read-only block device fails connect with EROFS saying to set read-only; made read-only later, writes say why they fail",
    loopUnavailableReason(),
  ),
  async () => {
    const dev = scratchLoop(1 << 20);
    execFileSync("blockdev", ["--setro", dev]);
    try {
      {
        using b = Blkio.create("io_uring");
        b.setStr("path", dev);
        assertErrno(
          () => b.connect(),
          "EROFS",
          /is a read-only block device; to open it for reading only, set read-only/,
        );
        b.setBool("read-only", true);
        b.connect();
        b.start();
        b.getQueue(0)!.read(0, new Uint8Array(512), "r");
        assert.equal(reap(b.getQueue(0)!, 1)[0].ret, 0);
      }
      await assert.rejects(
        BlockDevice.open(dev),
        (e: BlkioError) => e.code === "EROFS" && /readOnly in BlockDevice\.open/.test(e.message),
      );
      // A caller's own fd opened for writing is taken as it is, as libblkio does (read-only then
      // follows the fd's flags): reads work, and a write's EPERM says why. The instance owns the
      // fd once connected, and destroy closes it.
      {
        using b = Blkio.create("io_uring");
        b.setInt("fd", openSync(dev, "r+"));
        b.connect();
        b.start();
        const q = b.getQueue(0)!;
        q.read(0, new Uint8Array(512), "r");
        assert.equal(reap(q, 1)[0].ret, 0);
        q.write(0, new Uint8Array(512), "w");
        const [c] = reap(q, 1);
        assert.equal(c.ret, -1, `EPERM: ${c.ret} ${c.errorMsg}`);
        assert.match(c.errorMsg ?? "", /read-only/);
      }
      execFileSync("blockdev", ["--setrw", dev]);
      using b = startOn({ path: dev, direct: false });
      const q = b.getQueue(0)!;
      execFileSync("blockdev", ["--setro", dev]);
      const buf = alignedBuffer(b, 4096);
      q.write(0, buf, "w");
      const [c] = reap(q, 1);
      assert.equal(c.ret, -1, `EPERM: ${c.ret} ${c.errorMsg}`);
      assert.match(c.errorMsg ?? "", /The block device is read-only/);
    } finally {
      execFileSync("blockdev", ["--setrw", dev]);
    }
  },
);

test("read-only: cleanup scratch targets", () => cleanupAll());
