// libblkio tests/write-zeroes.c, discard.c, flush.c.
import { test } from "node:test";
import assert from "./_assert.ts";
import {
  closeSync,
  existsSync,
  fsyncSync,
  openSync,
  readFileSync,
  readSync,
  statfsSync,
  statSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { Blkio, type Completion, type Queue, ReqFlags } from "../mod.ts";
import {
  alignedBuffer,
  cleanupAll,
  connectTo,
  loopFlushes,
  loopUnavailableReason,
  loseWriteZeroes,
  loseWriteZeroesUnavailableReason,
  pread,
  scratchDir,
  scratchFile,
  scratchLoop,
  skipIf,
  startOn,
  targets,
  withoutFreeFds,
  writeZeroesMaxBytes,
} from "./_helpers.ts";
import { getData, PAGE, reapAll, runOk } from "./_io.ts";
import {
  countSubmitted,
  withCancelled,
  withCancelledOnce,
  withRefused,
  withRewrittenResults,
} from "./_rewrite_results.ts";
import { IORING_OP } from "../src/uring/constants.ts";

const TARGETS = targets();
const OFF = 0x10000;
const ENOTSUP = 95; // == EOPNOTSUPP on Linux
const EBUSY = 16;

for (const t of TARGETS) {
  test(`write-zeroes: NO_FALLBACK succeeds and zeroes, or fails with ENOTSUP [${t.name}]`, () => {
    using b = startOn(t);
    // What the device said when the instance connected. A loop device stops offering write
    // zeroes after its backing file system refused one (tmpfs has no ZERO_RANGE), so this test
    // comes first for each target.
    const zeroesNatively = t.isBlockDevice && writeZeroesMaxBytes(t.path) > 0;
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, PAGE).fill(0x42);
    runOk(q, (ud) => q.write(OFF, buf, ud), "write 'B'");
    for (const extra of [0, ReqFlags.NO_UNMAP]) {
      const tag = { extra };
      q.writeZeroes(OFF, PAGE, tag, ReqFlags.NO_FALLBACK | extra);
      const [c] = reapAll(q, 1, 1);
      assert.equal(c.userData, tag);
      const back = getData(t, b, q, OFF, PAGE);
      if (c.ret === 0) {
        assert.equal(c.errorMsg, null);
        assert.deepEqual(back, new Uint8Array(PAGE), "NO_FALLBACK success must have zeroed the range");
      } else {
        assert.equal(c.ret, -ENOTSUP, `NO_FALLBACK: ret ${c.ret} ${c.errorMsg}`);
        // Failure leaves the data alone: never garbage.
        assert.deepEqual(back, new Uint8Array(PAGE).fill(0x42), "failed NO_FALLBACK must not touch data");
      }
      if (!t.isBlockDevice) assert.equal(c.ret, 0, "regular files zero through fallocate, no fallback");
      else if (zeroesNatively && extra === 0) {
        assert.equal(
          c.ret,
          0,
          "the device zeroes by itself (sysfs write_zeroes_max_bytes > 0): no fallback needed",
        );
      }
    }
  });

  test(`write-zeroes: each third of 3 pages of 'A' with flags 0, FUA, NO_UNMAP [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, 3 * PAGE).fill(0x41);
    runOk(q, (ud) => q.write(OFF, buf, ud), "write 'A'");
    const flags = [0, ReqFlags.FUA, ReqFlags.NO_UNMAP];
    for (let k = 0; k < 3; k++) {
      runOk(q, (ud) => q.writeZeroes(OFF + k * PAGE, PAGE, ud, flags[k]), `writeZeroes flags ${flags[k]}`);
      const back = getData(t, b, q, OFF, 3 * PAGE);
      for (let j = 0; j < 3; j++) {
        const want = new Uint8Array(PAGE).fill(j <= k ? 0 : 0x41);
        assert.deepEqual(back.subarray(j * PAGE, (j + 1) * PAGE), want, `page ${j} after zeroing page ${k}`);
      }
    }
  });

  test(`write-zeroes: FUA|NO_UNMAP together and a bigint range [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, 2 * PAGE).fill(0x5a);
    runOk(q, (ud) => q.write(OFF, buf, ud), "write");
    runOk(
      q,
      (ud) => q.writeZeroes(BigInt(OFF), BigInt(2 * PAGE), ud, ReqFlags.FUA | ReqFlags.NO_UNMAP),
      "zero",
    );
    assert.deepEqual(getData(t, b, q, OFF, 2 * PAGE), new Uint8Array(2 * PAGE));
  });

  // A block device's fallocate needs whole logical blocks even without O_DIRECT (request-alignment
  // is then 1, as in libblkio): the kernel's EINVAL came with no message.
  test(
    ...skipIf(
      `write zeroes and discard not in whole logical blocks say so [${t.name}]`,
      !t.isBlockDevice && "a file has no such requirement",
    ),
    () => {
      using b = startOn(t);
      const q = b.getQueue(0)!;
      q.writeZeroes(OFF + 1, PAGE, "start");
      q.writeZeroes(OFF, PAGE + 100, "length");
      for (const c of reapAll(q, 2)) {
        assert.equal(c.ret, -22, `${c.userData}: ${c.errorMsg}`);
        assert.match(
          c.errorMsg ?? "",
          new RegExp(`logical block size \\(512\\); not a multiple of it: ${c.userData}`),
        );
      }
    },
  );

  test(`discard: one page completes with 0 or -EOPNOTSUPP [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const tag = {};
    q.discard(OFF, PAGE, tag);
    const [c] = reapAll(q, 1, 1);
    assert.equal(c.userData, tag);
    assert.ok(c.ret === 0 || c.ret === -ENOTSUP, `discard: ret ${c.ret} ${c.errorMsg}`);
    if (c.ret === 0) assert.equal(c.errorMsg, null);
    // Whatever discard did, the range stays readable.
    getData(t, b, q, OFF, PAGE);
  });

  test(`flush: completes with 0 [${t.name}]`, () => {
    using b = startOn(t);
    const q = b.getQueue(0)!;
    const buf = alignedBuffer(b, PAGE).fill(0x43);
    q.write(OFF, buf, "w");
    q.flush("f1");
    const got = reapAll(q, 2);
    for (const c of got) assert.equal(c.ret, 0, `${c.userData}: ret ${c.ret} ${c.errorMsg}`);
    assert.deepEqual(got.map((c) => c.userData).sort(), ["f1", "w"]);
    runOk(q, (ud) => q.flush(ud), "flush after completed write");
    runOk(q, (ud) => q.flush(ud, 0), "flush with explicit flags 0");
  });
}

test(
  ...skipIf(
    "write zeroes: NO_UNMAP that the file system refuses says so (tmpfs has no ZERO_RANGE)",
    !existsSync("/dev/shm") && "no /dev/shm here: no tmpfs file",
  ),
  () => {
    const path = scratchFile(65536, 0x11, scratchDir("/dev/shm"));
    using b = Blkio.create("io_uring");
    b.setStr("path", path);
    b.connect();
    b.start();
    const q = b.getQueue(0)!;
    const out: Completion[] = [];
    q.writeZeroes(0, 4096, "plain");
    q.doIo(out, 1, 1);
    assert.equal(out[0].ret, 0, `${out[0].ret} ${out[0].errorMsg}`);
    q.writeZeroes(4096, 4096, "no-unmap", ReqFlags.NO_UNMAP);
    q.doIo(out, 1, 1);
    // Linux 6.18's tmpfs refuses FALLOC_FL_ZERO_RANGE; a kernel that takes it completes with 0.
    if (out[0].ret !== 0) {
      assert.equal(out[0].ret, -95);
      assert.match(
        out[0].errorMsg ?? "",
        /^Write zeroes with NO_UNMAP \(FALLOC_FL_ZERO_RANGE\) is not supported/,
      );
    }
  },
);
// A loop device over a tmpfs file advertises write zeroes, passes NO_UNMAP (ZERO_RANGE) to the
// file, which cannot, and turns write zeroes off. The library still used PUNCH_HOLE: a zeroing
// without fallback, so a write zeroes without flags failed with EOPNOTSUPP; and because the
// kernel drops the range's page cache (dirty pages too) before it zeroes, a completed buffered
// write there was gone, reads finding the older data.
test(
  ...skipIf(
    "write zeroes: a block device that lost write zeroes falls back, and NO_FALLBACK loses no completed write",
    loseWriteZeroesUnavailableReason(),
  ),
  () => {
    const dev = scratchLoop(1 << 20);
    // All connected while the device still advertises write zeroes.
    using a = startOn({ path: dev, direct: false });
    using b = startOn({ path: dev, direct: false });
    using c3 = startOn({ path: dev, direct: false });
    const block = (fill: number) => new Uint8Array(4096).fill(fill);
    const readBack = (q: Queue, offset: number) => {
      const buf = block(0xee);
      runOk(q, (ud) => q.read(offset, buf, ud), `read back at ${offset}`);
      return buf;
    };
    const qa = a.getQueue(0)!, qb = b.getQueue(0)!;
    loseWriteZeroes(dev);
    runOk(qa, (ud) => qa.write(8192, block(0x42), ud), "write before NO_FALLBACK");
    qa.writeZeroes(8192, 4096, "no fallback", ReqFlags.NO_FALLBACK);
    const [c] = reapAll(qa, 1, 1);
    assert.equal(c.ret, -ENOTSUP, `NO_FALLBACK: ret ${c.ret} ${c.errorMsg}`);
    assert.deepEqual(
      readBack(qa, 8192),
      block(0x42),
      "the failed NO_FALLBACK request lost a completed write",
    );
    // Every request sent as a zeroing without fallback falls back, not only the first to
    // complete (the others found the device already known to lack write zeroes, and failed).
    for (let k = 0; k < 3; k++) runOk(qb, (ud) => qb.write(k * 4096, block(0x42), ud), `write ${k}`);
    for (let k = 0; k < 3; k++) qb.writeZeroes(k * 4096, 4096, `zeroes ${k}`);
    for (const r of reapAll(qb, 3)) assert.equal(r.ret, 0, `${r.userData}: ret ${r.ret} ${r.errorMsg}`);
    for (let k = 0; k < 3; k++) assert.deepEqual(readBack(qb, k * 4096), block(0), `the fallback of ${k}`);
    // A NO_FALLBACK request still writing its range back when a request without flags finds
    // the device lacks write zeroes must not then zero with fallback: it fails.
    const qc = c3.getQueue(0)!;
    runOk(qc, (ud) => qc.write(16384, new Uint8Array(512 * 1024).fill(7), ud), "dirty half the device");
    qc.writeZeroes(16384, 512 * 1024, "no fallback, late", ReqFlags.NO_FALLBACK);
    qc.writeZeroes(12288, 4096, "without flags");
    const got = new Map(reapAll(qc, 2).map((r) => [r.userData, r.ret]));
    assert.equal(got.get("without flags"), 0);
    assert.equal(got.get("no fallback, late"), -ENOTSUP, "NO_FALLBACK fell back");
  },
);

// Before it tries, fallocate on a block device drops the range's page cache and zeroes, in the
// cache, the parts of the pages the range only partly covers. When the device then refuses (it
// lost write zeroes since connect), readers saw zeroes the device does not hold: the library's
// reads, and any buffered reader's of the device (the API-sequence fuzzer).
test(
  ...skipIf(
    "write zeroes: a refused NO_FALLBACK request over partial pages leaves the page cache right (buffered and O_DIRECT instances)",
    loseWriteZeroesUnavailableReason(),
  ),
  () => {
    // Away from block 0, which loseWriteZeroes zeroes.
    const at = 65536;
    for (const direct of [false, true]) {
      const dev = scratchLoop(1 << 20);
      using b = startOn({ path: dev, direct });
      const q = b.getQueue(0)!;
      const data = alignedBuffer(b, 8192).fill(0x42);
      runOk(q, (ud) => q.write(at, data, ud), "write");
      pread(dev, at, 8192); // in the device's page cache, for an O_DIRECT instance too
      loseWriteZeroes(dev);
      q.writeZeroes(at + 3072, 3584, "no fallback", ReqFlags.NO_FALLBACK);
      const [c] = reapAll(q, 1, 1);
      assert.equal(c.ret, -ENOTSUP, `ret ${c.ret} ${c.errorMsg}`);
      assert.match(c.errorMsg ?? "", /not supported by this device/);
      const back = alignedBuffer(b, 8192);
      runOk(q, (ud) => q.read(at, back, ud), "read back");
      assert.deepEqual(back, data, `direct=${direct}: the instance reads zeroes the device does not hold`);
      assert.deepEqual(pread(dev, at, 8192), data, `direct=${direct}: a buffered reader of the device does`);
    }
  },
);

// The same with sysfs unreadable (no fd free): the zeroing goes, the device refuses it, and the
// queue drops the device's clean page cache after. That drop runs in io-wq: when io-wq cancels it
// for want of a worker thread (a thread limit, played by withCancelledOnce), it never ran, and the
// instance read zeroes where the zeroing partly covered the write's pages. It now goes again, and
// where every try was cancelled the queue drops the cache itself (posix_fadvise). So does the
// write-back before the zeroing, on a second open file of the device, when io-wq cancels it
// (89d253f; discard.test.ts has a discard's hole): without, the refused zeroing dropped, or zeroed
// in the cache, the completed write's dirty pages.
const DROP_TRIES = 11; // the first and NO_WORKER_RETRIES more
for (const cancel of [null, "the cache drop", "every try of the cache drop", "the write-back"] as const) {
  test(
    ...skipIf(
      "write zeroes: a NO_FALLBACK request the device refuses (sysfs unreadable) leaves the page cache right" +
        (cancel === null
          ? ""
          : cancel.startsWith("every")
          ? ` [${cancel} cancelled]`
          : ` [${cancel} cancelled once]`),
      loseWriteZeroesUnavailableReason(),
    ),
    () => {
      const at = 65536; // away from block 0, which loseWriteZeroes zeroes
      const dev = scratchLoop(1 << 20);
      // The instance is set up inside: withCancelledOnce sees only the rings made in it.
      const run = () => {
        using b = startOn({ path: dev, direct: false });
        const q = b.getQueue(0)!;
        // The second write-back is the one cancelled: this one opens the second file (no fd is free
        // at the second, whose write-back would go on the device's own fd).
        if (cancel === "the write-back") {
          runOk(q, (ud) => q.writeZeroes(2 * at, 4096, ud, ReqFlags.NO_FALLBACK), "1st");
        }
        const data = alignedBuffer(b, 8192).fill(0x42);
        runOk(q, (ud) => q.write(at, data, ud), "write");
        loseWriteZeroes(dev);
        const c = withoutFreeFds(() => {
          q.writeZeroes(at + 3072, 3584, "no fallback", ReqFlags.NO_FALLBACK);
          return { ...reapAll(q, 1, 1)[0] };
        });
        assert.equal(c.ret, -ENOTSUP, `ret ${c.ret} ${c.errorMsg}`);
        const back = alignedBuffer(b, 8192);
        runOk(q, (ud) => q.read(at, back, ud), "read back");
        assert.deepEqual(back, data, "the instance reads zeroes the device does not hold");
        assert.deepEqual(pread(dev, at, 8192), data, "a buffered reader of the device does");
      };
      const cancelled = cancel === "the cache drop"
        ? Number(withCancelledOnce(IORING_OP.FADVISE, run))
        : cancel === "every try of the cache drop"
        ? withCancelled(IORING_OP.FADVISE, DROP_TRIES, run)
        : cancel === "the write-back"
        ? Number(withCancelledOnce(IORING_OP.SYNC_FILE_RANGE, run, 1))
        : (run(), 0);
      const expected = cancel === null ? 0 : cancel.startsWith("every") ? DROP_TRIES : 1;
      assert.equal(
        cancelled,
        expected,
        `${cancelled} of ${cancel} cancelled, not ${expected}: nothing tested`,
      );
    },
  );
}

// The page cache is the device's, whoever opened it how: a zeroing the kernel refuses has dropped
// the range's cache first, dirty pages included. Another writer's completed buffered write, not
// yet written back, was lost that way when the refused request came from an O_DIRECT instance
// (which did not write the range back first); the device kept its old bytes.
test(
  ...skipIf(
    "write zeroes: a refused NO_FALLBACK request keeps another writer's completed buffered write (buffered and O_DIRECT instances)",
    loseWriteZeroesUnavailableReason(),
  ),
  () => {
    const at = 65536;
    for (const direct of [false, true]) {
      const dev = scratchLoop(1 << 20);
      using b = startOn({ path: dev, direct }); // connected while the device has write zeroes
      const q = b.getQueue(0)!;
      loseWriteZeroes(dev);
      const theirs = new Uint8Array(8192).fill(0x42);
      const fd = openSync(dev, "r+");
      try {
        assert.equal(writeSync(fd, theirs, 0, theirs.length, at), theirs.length); // dirty, not synced
        q.writeZeroes(at, 8192, "no fallback", ReqFlags.NO_FALLBACK);
        const [c] = reapAll(q, 1, 1);
        assert.equal(c.ret, -ENOTSUP, `direct=${direct}: ret ${c.ret} ${c.errorMsg}`);
        assert.deepEqual(pread(dev, at, 8192), theirs, `direct=${direct}: the other writer's write is gone`);
      } finally {
        closeSync(fd);
      }
    }
  },
);

// A NO_FALLBACK zeroing on a device that has lost write zeroes since connect is refused before it
// reaches the kernel: sysfs is asked after the range's write-back. Sent, the kernel would drop the
// range's page cache before refusing (what a race of other requests can turn into zeroes the
// device does not hold), and the driver then drops the whole device's clean cache to be safe.
// Whether the kernel was asked shows in that cache: a cached page outside the range is read again
// from the device only if it was dropped (the device's read count, /sys/block/<dev>/stat).
test(
  ...skipIf(
    "write zeroes: a NO_FALLBACK request on a device that lost write zeroes since connect is refused without the kernel (the device's page cache stays)",
    loseWriteZeroesUnavailableReason(),
  ),
  () => {
    const sectorsRead = (dev: string) =>
      Number(
        readFileSync(`/sys/block/${dev.slice(dev.lastIndexOf("/") + 1)}/stat`, "utf8").trim().split(/\s+/)[2],
      );
    for (const direct of [false, true]) {
      const dev = scratchLoop(1 << 20);
      using b = startOn({ path: dev, direct }); // connected while the device has write zeroes
      const q = b.getQueue(0)!;
      loseWriteZeroes(dev);
      pread(dev, 512 * 1024, 256 * 1024); // cached
      const before = sectorsRead(dev);
      q.writeZeroes(65536, 8192, "no fallback", ReqFlags.NO_FALLBACK);
      const [c] = reapAll(q, 1, 1);
      assert.equal(c.ret, -ENOTSUP, `direct=${direct}: ret ${c.ret} ${c.errorMsg}`);
      pread(dev, 512 * 1024, 256 * 1024);
      assert.equal(sectorsRead(dev) - before, 0, `direct=${direct}: the device's page cache was dropped`);
    }
  },
);

// The same over whole pages, after one large buffered write: the device's page cache then holds
// large folios, which a page-aligned range may cover only in part. Here the kernel splits them
// and the cache comes out right; the fuzzer (loop-4k, requests in flight beside the zeroing)
// found zeroes left cached from a folio boundary inside the range on, the device holding the
// data, in 6 of 40 replays of one seed under CPU load. That race does not reproduce on its own
// here; the driver now asks sysfs before it sends such a zeroing and drops the whole device's
// clean cache after a refusal (0 of 60 replays). This test keeps the plain case honest.
for (const sectorSize of [512, 4096]) {
  test(
    ...skipIf(
      `write zeroes: a refused NO_FALLBACK request over whole pages leaves large folios in the page cache right (${sectorSize}-byte sectors)`,
      loseWriteZeroesUnavailableReason(),
    ),
    () => {
      const size = 1 << 20, at = 129 * 4096;
      const dev = scratchLoop(size, false, sectorSize);
      // Connected while the device still advertises write zeroes: it sends the zeroing.
      using b = startOn({ path: dev, direct: false });
      const q = b.getQueue(0)!;
      const data = new Uint8Array(size);
      for (let i = 0; i < size; i++) data[i] = ((i * 7) ^ (i >> 12)) | 1;
      runOk(q, (ud) => q.write(0, data, ud), "one large write");
      loseWriteZeroes(dev);
      data.fill(0, 0, 4096); // what loseWriteZeroes zeroed
      q.writeZeroes(at, size - at, "no fallback", ReqFlags.NO_FALLBACK);
      const [c] = reapAll(q, 1, 1);
      assert.equal(c.ret, -ENOTSUP, `ret ${c.ret} ${c.errorMsg}`);
      const back = new Uint8Array(size);
      runOk(q, (ud) => q.read(0, back, ud), "read back");
      const differ = (got: Uint8Array) => {
        const i = got.findIndex((v, k) => v !== data[k]);
        return i < 0 ? null : `byte ${i} is 0x${got[i].toString(16)}, not 0x${data[i].toString(16)}`;
      };
      assert.equal(differ(back), null, "the instance reads what the device does not hold");
      assert.equal(differ(pread(dev, 0, size)), null, "a buffered reader of the device does");
    },
  );
}

// After its write-back, a NO_FALLBACK zeroing asks sysfs whether the device still has write zeroes.
// When sysfs could not be read then (no fd free: EMFILE), the answer was taken for "no" and kept
// for the instance: that request failed ENOTSUP, and so did every later NO_FALLBACK request, once
// fds were free again, on a device that has write zeroes. What was known now stays, as for a
// discard's hole, and a zeroing the device refuses all the same is taken care of after (the
// refused-zeroing tests above).
test(
  ...skipIf(
    "write zeroes: a NO_FALLBACK request while sysfs is unreadable (no fd free) leaves the device its write zeroes",
    loopUnavailableReason(),
  ),
  () => {
    const dev = scratchLoop(1 << 20);
    assert.ok(writeZeroesMaxBytes(dev) > 0, `${dev} has no write zeroes: nothing to test`);
    using b = startOn({ path: dev, direct: false });
    const q = b.getQueue(0)!;
    const block = new Uint8Array(8192).fill(0x42);
    runOk(q, (ud) => q.write(65536, block, ud), "write");
    runOk(q, (ud) => q.write(131072, block, ud), "write");
    const [first] = withoutFreeFds(() => {
      q.writeZeroes(65536, 8192, "no fd free", ReqFlags.NO_FALLBACK);
      return reapAll(q, 1, 1);
    });
    q.writeZeroes(131072, 8192, "fds free again", ReqFlags.NO_FALLBACK);
    const [later] = reapAll(q, 1, 1);
    assert.equal(later.ret, 0, `the request after the shortage: ${later.ret} ${later.errorMsg}`);
    assert.equal(first.ret, 0, `the request at the shortage: ${first.ret} ${first.errorMsg}`);
    assert.ok(writeZeroesMaxBytes(dev) > 0, "the device lost write zeroes: the test's premise is gone");
    assert.deepEqual(pread(dev, 65536, 8192), new Uint8Array(8192), "the first range reads zeroes");
    assert.deepEqual(pread(dev, 131072, 8192), new Uint8Array(8192), "the second range reads zeroes");
  },
);

// Whether NO_UNMAP was honoured on a file shows only in its allocation: both ways read zeroes.
const EXT4_SKIP = statfsSync(tmpdir()).type === 0xef53 ? null : `${tmpdir()} is not ext4`;
test(
  ...skipIf(
    "write zeroes on ext4: NO_UNMAP keeps the blocks allocated, without it they are freed",
    EXT4_SKIP,
  ),
  () => {
    const path = scratchFile(256 * 1024, 0x11);
    const fd = openSync(path, "r+");
    fsyncSync(fd); // allocated for real, not only reserved (delayed allocation)
    closeSync(fd);
    using b = Blkio.create("io_uring");
    b.setStr("path", path);
    b.connect();
    b.start();
    const q = b.getQueue(0)!;
    // In 512-byte sectors; splitting an extent may cost ext4 one 4 KiB extent block (8 sectors)
    // once the inode's four extent slots are used up.
    const before = statSync(path).blocks;
    runOk(q, (ud) => q.writeZeroes(64 * 1024, 16 * 1024, ud, ReqFlags.NO_UNMAP), "NO_UNMAP");
    const kept = statSync(path).blocks;
    assert.ok(kept >= before, `NO_UNMAP (FALLOC_FL_ZERO_RANGE) freed ${before - kept} sectors`);
    runOk(q, (ud) => q.writeZeroes(128 * 1024, 16 * 1024, ud), "plain");
    const freed = kept - statSync(path).blocks;
    assert.ok(
      freed >= 24 && freed <= 32,
      `plain write zeroes (a punched hole) freed ${freed} sectors, not 32`,
    );
    const back = new Uint8Array(256 * 1024);
    const rfd = openSync(path, "r");
    readSync(rfd, back, 0, back.length, 0);
    closeSync(rfd);
    for (
      const [off, want] of [[0, 0x11], [64 * 1024, 0], [96 * 1024, 0x11], [128 * 1024, 0], [160 * 1024, 0x11]]
    ) {
      assert.equal(back[off], want, `byte ${off}`);
    }
  },
);

// A FUA write zeroes on a device that lost write zeroes goes again as ZERO_RANGE (with fallback):
// that zeroing must be made durable too, by the flush FUA stands for. Completed without it, the
// zeroes of a request the caller asked to be durable were not (mutation audit).
test(
  ...skipIf(
    "write zeroes: a FUA request that falls back after the device lost write zeroes still flushes",
    loseWriteZeroesUnavailableReason(),
  ),
  () => {
    const dev = scratchLoop(1 << 20);
    using b = startOn({ path: dev, direct: false }); // connected while the device has write zeroes
    const q = b.getQueue(0)!;
    loseWriteZeroes(dev);
    const before = loopFlushes(dev);
    runOk(q, (ud) => q.writeZeroes(65536, PAGE, ud, ReqFlags.FUA), "FUA write zeroes");
    assert.ok(loopFlushes(dev) - before >= 1, "the zeroing that fell back was not flushed");
    assert.deepEqual(pread(dev, 65536, PAGE), new Uint8Array(PAGE));
  },
);

// A write zeroes that covers part of a page a buffered write left dirty: Linux before 5.15 ends
// blkdev_fallocate by dropping the range's page cache once more, which fails EBUSY for a dirty
// page (the kernel keeps one the range covers in part, having zeroed that part in the cache),
// after the device was zeroed. The request failed EBUSY on Linux 5.10 (guest) for a zeroing
// that had been done: the write back before a second try makes it complete. Both ends of the
// range inside pages, one page each way; the cache and, after a flush, the device read the
// written bytes around zeroes.
test(
  ...skipIf(
    "write zeroes: part of a page a buffered write left dirty completes 0 on a block device",
    loopUnavailableReason(),
  ),
  () => {
    const dev = scratchLoop(1 << 20);
    using b = startOn({ path: dev, direct: false });
    const q = b.getQueue(0)!;
    const data = new Uint8Array(2 * PAGE).map((_, i) => (i * 7 + 1) & 0xff);
    // Not flushed: the pages stay dirty in the device's page cache.
    runOk(q, (ud) => q.write(OFF, data, ud), "write");
    const want = data.slice();
    for (const [off, len, flags] of [[2048, 2048, 0], [PAGE + 512, 1024, ReqFlags.FUA]]) {
      q.writeZeroes(OFF + off, len, "zero", flags);
      const [c] = reapAll(q, 1, 1);
      assert.equal(c.ret, 0, `write zeroes of ${len} at page offset ${off % PAGE}: ${c.ret} ${c.errorMsg}`);
      want.fill(0, off, off + len);
      assert.deepEqual(pread(dev, OFF, 2 * PAGE), want, `the cache after the zeroing at ${off}`);
    }
    runOk(q, (ud) => q.flush(ud), "flush");
    using d = startOn({ path: dev, direct: true });
    const dq = d.getQueue(0)!;
    const back = alignedBuffer(d, 2 * PAGE);
    runOk(dq, (ud) => dq.read(OFF, back, ud), "O_DIRECT read");
    assert.deepEqual(back, want, "the device after the flush");
  },
);

// The same on any kernel: the zeroing's result played as Linux 5.10's EBUSY after the zeroing
// was done. The request goes again after a write-back and completes 0; a second EBUSY is its
// result (it goes again once). A whole page, which 5.10 zeroes without an EBUSY of its own: the
// first 0 is then the zeroing's there too (with half a page 5.10 answered EBUSY itself, and
// nothing was played).
test(
  ...skipIf(
    "write zeroes: an EBUSY from a block device's zeroing (Linux before 5.15) goes again once, after a write-back",
    loopUnavailableReason(),
  ),
  () => {
    const dev = scratchLoop(1 << 20);
    const data = new Uint8Array(PAGE).fill(0x5a);
    // The ring is made inside: the rewriting sees the rings made while it is on. The write's
    // result is its byte count, the zeroing's the first 0.
    const zero = (play: (fn: () => void) => number, times: number): Completion => {
      let c: Completion | undefined;
      const played = play(() => {
        using b = startOn({ path: dev, direct: false });
        const q = b.getQueue(0)!;
        runOk(q, (ud) => q.write(OFF, data, ud), "write");
        q.writeZeroes(OFF, PAGE, "zero");
        [c] = reapAll(q, 1, 1);
      });
      assert.equal(played, times, `${played} of ${times} EBUSY played`);
      return c!;
    };
    const once = zero((fn) => withRewrittenResults(0, -EBUSY, 1, fn), 1);
    assert.equal(once.ret, 0, `after one EBUSY: ${once.ret} ${once.errorMsg}`);
    assert.deepEqual(pread(dev, OFF, PAGE), new Uint8Array(PAGE), "the device after the zeroing");
    // Every zeroing refused EBUSY (not done): the second refusal is the result.
    const twice = zero((fn) => withRefused(IORING_OP.FALLOCATE, -EBUSY, 2, fn), 2);
    assert.equal(twice.ret, -EBUSY, "a second EBUSY is the request's result");
  },
);

// The same EBUSY after a fallback: the device lost write zeroes since connect, so the zeroing
// without fallback is refused (EOPNOTSUPP, the kernel's own answer) and the request goes again
// with ZERO_RANGE, played as answered EBUSY. After the write-back it goes again with ZERO_RANGE
// straight away, the device being known by then to lack write zeroes: three zeroings in all. A
// retry that started over with the refused hole would make four.
test(
  ...skipIf(
    "write zeroes: an EBUSY from a fallback zeroing goes again with the fallback, not the refused hole",
    loseWriteZeroesUnavailableReason(),
  ),
  () => {
    const dev = scratchLoop(1 << 20);
    // Connected while the device still advertises write zeroes; started (its ring made) where
    // the rewriting sees it.
    using b = connectTo({ path: dev, direct: false });
    loseWriteZeroes(dev);
    let c: Completion | undefined, played = 0;
    const zeroings = countSubmitted(IORING_OP.FALLOCATE, () => {
      played = withRewrittenResults(0, -EBUSY, 1, () => {
        b.start();
        const q = b.getQueue(0)!;
        runOk(q, (ud) => q.write(OFF, new Uint8Array(PAGE).fill(0x5a), ud), "write");
        q.writeZeroes(OFF, PAGE, "zero");
        [c] = reapAll(q, 1, 1);
      });
    });
    assert.equal(played, 1, "the fallback's 0 was not played as EBUSY");
    assert.equal(c!.ret, 0, `after one EBUSY: ${c!.ret} ${c!.errorMsg}`);
    assert.equal(zeroings, 3, "zeroings sent: the hole, the fallback, the fallback again");
    assert.deepEqual(pread(dev, OFF, PAGE), new Uint8Array(PAGE), "the device after the zeroing");
  },
);

test("write_zeroes: cleanup scratch targets", () => cleanupAll());
