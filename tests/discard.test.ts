// Discard of a block device. libblkio discards through fallocate(PUNCH_HOLE | NO_HIDE_STALE |
// KEEP_SIZE), which reaches a block device's discard only on kernels before 6.x: on Linux 6.18
// every discard of a loop device that advertises discard failed with EOPNOTSUPP. The driver now
// sends BLOCK_URING_CMD_DISCARD (Linux 6.12), and falls back to fallocate where the kernel has
// no such command.
import { test } from "node:test";
import assert from "./_assert.ts";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { type Blkio, BlockDevice, type Completion } from "../mod.ts";
import {
  alignedBuffer,
  attachLoop,
  cleanupAll,
  kernelAtLeast,
  loopUnavailableReason,
  loseWriteZeroes,
  loseWriteZeroesUnavailableReason,
  pread,
  pwrite,
  scratchDir,
  scratchFile,
  scratchLoop,
  skipIf,
  startOn,
  withoutFreeFds,
} from "./_helpers.ts";
import {
  countSubmitted,
  withCancelled,
  withCancelledOnce,
  withoutOpcode,
  withRefusedOnce,
  withRewrittenResults,
} from "./_rewrite_results.ts";
import { bareLoop, bareLoopUnavailableReason } from "./_loop_device.ts";
import { IORING_OP } from "../src/uring/constants.ts";

const MiB = 1 << 20;
const EBUSY = 16;
const ENOTSUP = 95;
const LOOP_SKIP = loopUnavailableReason();
const BARE_SKIP = bareLoopUnavailableReason();
/**
 * Whether the kernel has BLOCK_URING_CMD_DISCARD (Linux 6.12). Before, every discard command of a
 * block device comes back EOPNOTSUPP by itself: the tests that play that answer on a newer kernel
 * get it from the kernel there, and the command's own answers (EBUSY) cannot happen.
 */
const DISCARD_COMMAND = kernelAtLeast(6, 12);

/** A loop device over a tmpfs file, filled with data; its name and backing file. */
function filledLoop(): { dev: string; backing: string } {
  const dev = scratchLoop(8 * MiB);
  const name = dev.slice(dev.lastIndexOf("/") + 1);
  const backing = readFileSync(`/sys/block/${name}/loop/backing_file`, "utf8").trim();
  pwrite(dev, 0, new Uint8Array(8 * MiB).fill(0x5a));
  const max = Number(readFileSync(`/sys/block/${name}/queue/discard_max_bytes`, "utf8"));
  assert.ok(max > 0, `${dev} does not advertise discard (discard_max_bytes 0)`);
  return { dev, backing };
}

function discard(b: Blkio, start: number, len: number): Completion {
  const q = b.getQueue(0)!;
  q.discard(start, len, "d");
  const out: Completion[] = [];
  assert.equal(q.doIo(out, 1, 1, 10_000_000_000n), 1);
  assert.equal(q.doIo([], 0), 0, "one completion only");
  return out[0];
}

for (const direct of [false, true]) {
  const mode = direct ? "direct" : "buffered";
  test(
    ...skipIf(
      `discard: a loop device that advertises discard discards: its tmpfs backing file frees the blocks [${mode}]`,
      LOOP_SKIP,
    ),
    () => {
      const { dev, backing } = filledLoop();
      using b = startOn({ path: dev, direct });
      const before = statSync(backing).blocks;
      const c = discard(b, 2 * MiB, 2 * MiB);
      assert.equal(c.ret, 0, `${c.ret} ${c.errorMsg}`);
      assert.equal(before - statSync(backing).blocks, (2 * MiB) / 512, "2 MiB freed in the backing file");
      // Outside the range nothing changed.
      assert.ok(pread(dev, MiB, MiB).every((x) => x === 0x5a));
    },
  );
}

test(
  ...skipIf(
    "discard: where the kernel has no block device commands, the driver falls back to fallocate",
    LOOP_SKIP,
  ),
  () => {
    const { dev, backing } = filledLoop();
    const before = statSync(backing).blocks;
    const rets: Completion[] = [];
    // The first discard command comes back EOPNOTSUPP having done nothing, as from a kernel
    // before 6.12 (where the kernel itself says so). Its SQE is made a NOP: a rewritten result
    // left the command's discard done, and a first discard that then went nowhere passed.
    const refused = withRefusedOnce(IORING_OP.URING_CMD, -ENOTSUP, () => {
      using b = startOn({ path: dev, direct: false });
      rets.push({ ...discard(b, 2 * MiB, MiB) }, { ...discard(b, 4 * MiB, MiB) });
    });
    // Before 5.19 io_uring has no IORING_OP_URING_CMD: the queue knows from its probe, and sends none.
    assert.equal(refused, kernelAtLeast(5, 19), "the discard command refused");
    // Both then went through fallocate, as a hole (a write zeroes that may unmap), and each
    // completed once (checked in discard()). libblkio's mode (NO_HIDE_STALE) failed EOPNOTSUPP
    // on every kernel, so this fallback never discarded anything (review).
    for (const c of rets) assert.equal(c.ret, 0, `${c.ret} ${c.errorMsg}`);
    const freed = before - statSync(backing).blocks;
    assert.equal(freed, (2 * MiB) / 512, `${freed} sectors freed`);
    assert.ok(pread(dev, 2 * MiB, MiB).every((x) => x === 0), "the first range reads zeroes");
    assert.ok(pread(dev, 4 * MiB, MiB).every((x) => x === 0), "the second range reads zeroes");
    assert.ok(pread(dev, 3 * MiB, MiB).every((x) => x === 0x5a), "between them nothing changed");
  },
);

// Once the discard command has said EOPNOTSUPP on a kernel that lacks it, the queue uses fallocate
// for good: of the three discards only the first sends the command (IORING_OP_URING_CMD).
test(
  ...skipIf(
    "discard: after one EOPNOTSUPP from the discard command, no discard command goes again",
    LOOP_SKIP,
  ),
  () => {
    const { dev } = filledLoop();
    let sent = 0;
    // Counted before it is made a NOP (the inner helper's hook runs first).
    const refused = withRefusedOnce(IORING_OP.URING_CMD, -ENOTSUP, () => {
      sent = countSubmitted(IORING_OP.URING_CMD, () => {
        using b = startOn({ path: dev, direct: false });
        for (const at of [2, 4, 6]) assert.equal(discard(b, at * MiB, MiB).ret, 0);
      });
    });
    assert.equal(refused, kernelAtLeast(5, 19), "the discard command refused");
    // Before 5.19 io_uring has no IORING_OP_URING_CMD: the queue knows from its probe, and sends none.
    assert.equal(sent, kernelAtLeast(5, 19) ? 1 : 0, `${sent} discard commands sent`);
  },
);

// The discard command writes the range's dirty pages back and drops its page cache first, and
// fails with EBUSY when pages busy with buffered I/O of the range cannot be dropped (a reviewer's loop of
// discard + write + read of one range saw it in 195-440 of 500 rounds; in the full suite, none);
// that completion had no errorMsg, libblkio's fallocate never saying EBUSY. The kernel's answer
// is played here: the discard command made a NOP whose CQE says EBUSY, as the kernel's, which
// discards nothing then.
test(
  ...skipIf(
    "discard: an EBUSY from the discard command (buffered I/O of the range in flight) says why",
    LOOP_SKIP ?? (DISCARD_COMMAND ? null : `Linux ${release()} has no discard command (6.12+)`),
  ),
  () => {
    const { dev } = filledLoop();
    let c: Completion | null = null;
    const refused = withRefusedOnce(IORING_OP.URING_CMD, -EBUSY, () => {
      using b = startOn({ path: dev, direct: false });
      c = { ...discard(b, 2 * MiB, MiB) };
    });
    assert.ok(refused, "the discard command refused");
    assert.equal(c!.ret, -EBUSY);
    assert.match(c!.errorMsg ?? "", /page cache: buffered reads or writes of it are in flight/);
    assert.ok(pread(dev, 2 * MiB, MiB).every((x) => x === 0x5a), "a refused discard changed the range");
  },
);

// After the discard command's EOPNOTSUPP the queue asks sysfs whether the device discards. That
// read threw when no fd was free (EMFILE), in the middle of a reap: the CQ head was never stored,
// released slots were released again, and the next doIo returned the read's completion a second
// time with userData null. sysfs is made unreadable here by failing the library's open(2) with
// EMFILE while the queue reaps.
test(
  ...skipIf(
    "discard: sysfs unreadable (EMFILE) when the discard command is refused loses no completion",
    LOOP_SKIP ?? (kernelAtLeast(5, 19) ? null : `Linux ${release()} has no IORING_OP_URING_CMD (5.19+)`),
  ),
  () => {
    const { dev } = filledLoop();
    const got: [unknown, number][] = [];
    // The discard command refused (EOPNOTSUPP, having done nothing), as by a device that lost
    // discard or a kernel before 6.12.
    const refused = withRefusedOnce(IORING_OP.URING_CMD, -ENOTSUP, () => {
      using b = startOn({ path: dev, direct: false });
      const q = b.getQueue(0)!;
      q.discard(2 * MiB, MiB, "discard");
      q.read(0, new Uint8Array(4096), "read");
      const out: Completion[] = [];
      withoutFreeFds(() => {
        for (let k = 0; k < 2 && got.length < 2;) {
          // Both at once: the refusal's CQE is seen only if there when io_uring_enter returns,
          // and the NOP standing for the discard command runs in io-wq, so a wait for one could
          // return before it completed; a CQE reaped later without an enter keeps the NOP's 0
          // (with a rewritten result, the test failed run alone).
          const m = q.doIo(out, 2, 2, 10_000_000_000n);
          for (let i = 0; i < m; i++) got.push([out[i].userData, out[i].ret]);
          k += m;
        }
      });
      assert.equal(q.doIo(out, 0, 8), 0, "a completion returned twice");
    });
    assert.ok(refused, "the discard command refused");
    assert.deepEqual(got.sort(), [["discard", -ENOTSUP], ["read", 0]]);
  },
);

// A device can lose discard after connect, and get it back: a loop device over a block device
// takes discard from the lower device's write zeroes, turns it off when a discard comes back
// EOPNOTSUPP, and works both out again when its sector size is set. A lost discard makes the
// discard command say EOPNOTSUPP, as a kernel before 6.12 says for every device; only sysfs tells
// the two apart. Taken for an old kernel, the queue would discard through fallocate from then on,
// which then never discarded on Linux 6.x (a315c9a); since the fallback is a hole (63603f8), which
// works here, that shows only in what goes: the regained discard as a hole, a write zeroes, which a
// device with discard but without write zeroes refuses. So the discard commands sent are counted.
// Without the command (before Linux 5.19; played by hiding it from the probe) the first discard's
// hole finds the device has lost discard, and the queue sends no other until it has it again: a
// hole the device refuses drops the range's page cache first, the completed write with it.
for (const probe of ["as probed", "without IORING_OP_URING_CMD"] as const) {
  test(
    ...skipIf(
      `discard: a device that lost discard since connect says EOPNOTSUPP with its reason, keeps a completed write, and discards again once it can [${probe}]`,
      loseWriteZeroesUnavailableReason(),
    ),
    () => {
      const commands = countSubmitted(IORING_OP.URING_CMD, () => {
        if (probe === "as probed") lostDiscard();
        else withoutOpcode(IORING_OP.URING_CMD, lostDiscard);
      });
      // One for each of the four discards (the regained one's too: a kernel before 6.12 refuses it,
      // and only then does the queue turn to holes).
      const expected = probe === "as probed" && kernelAtLeast(5, 19) ? 4 : 0;
      assert.equal(commands, expected, `${commands} discard commands: the queue turned to holes for good`);
    },
  );
}

function lostDiscard(): void {
  const lower = scratchLoop(8 * MiB);
  pwrite(lower, 0, new Uint8Array(8 * MiB).fill(0x5a));
  const backing = readFileSync(`/sys/block/${lower.slice(5)}/loop/backing_file`, "utf8").trim();
  const upper = attachLoop(lower);
  const upperMax = () => Number(readFileSync(`/sys/block/${upper.slice(5)}/queue/discard_max_bytes`, "utf8"));
  assert.ok(upperMax() > 0, `${upper} over ${lower} does not advertise discard`);
  using b = startOn({ path: upper, direct: false });
  loseWriteZeroes(lower);

  // Another instance finds it out first, so this one's queue still takes the device for one with
  // discard; its empty discard then says what the other's said, not the EINVAL of a device with
  // discard.
  {
    using other = startOn({ path: upper, direct: false });
    const c = discard(other, 2 * MiB, MiB);
    assert.equal(c.ret, -ENOTSUP, `${c.ret} ${c.errorMsg}`);
    assert.equal(c.errorMsg, "Discard is not supported by this device");
  }
  assert.equal(upperMax(), 0, `${upper} kept discard: the premise of this test is gone`);
  const first = discard(b, 2 * MiB, 0);
  assert.equal(first.ret, -ENOTSUP, `${first.ret} ${first.errorMsg}`);
  assert.equal(first.errorMsg, "Discard is not supported by this device");

  // A buffered write completed just before a refused discard of its range is kept.
  const q = b.getQueue(0)!, out: Completion[] = [];
  const data = new Uint8Array(64 * 1024).fill(0xc3);
  q.write(4 * MiB, data, "write");
  assert.equal(q.doIo(out, 1, 1, 10_000_000_000n), 1);
  assert.equal(out[0].ret, 0);
  const second = discard(b, 4 * MiB, MiB);
  assert.equal(second.ret, -ENOTSUP, `${second.ret} ${second.errorMsg}`);
  const back = new Uint8Array(data.length);
  q.read(4 * MiB, back, "read");
  q.flush("flush");
  assert.equal(q.doIo(out, 2, 2, 10_000_000_000n), 2);
  assert.deepEqual(out.slice(0, 2).map((c) => c.ret), [0, 0]);
  assert.deepEqual(back, data, "the completed write read back through the instance");
  assert.deepEqual(pread(lower, 4 * MiB, data.length), data, "the completed write on the lower device");
  assert.ok(pread(lower, 2 * MiB, MiB).every((x) => x === 0x5a), "the first discard's range kept");

  // Setting the sector size works the limits out again: the lower device's write zeroes, then
  // the upper one's discard.
  for (const dev of [lower, upper]) {
    for (const size of ["4096", "512"]) execFileSync("losetup", ["--sector-size", size, dev]);
  }
  assert.ok(upperMax() > 0, `${upper} did not get discard back: the premise of this test is gone`);
  const before = statSync(backing).blocks;
  const third = discard(b, 6 * MiB, MiB);
  assert.equal(third.ret, 0, `${third.ret} ${third.errorMsg}`);
  assert.equal(before - statSync(backing).blocks, MiB / 512, "1 MiB freed in the backing file");
}

// A device that never had discard (a loop device over ramfs, which has no fallocate): the discard
// command asks the device before it looks at the range, so an empty, misaligned or out-of-range
// discard says EOPNOTSUPP too, not the EINVAL a device with discard gives (the fuzzer's model
// assumed the latter for every device until this was probed). Nothing changes on the device.
// Without the command (io_uring has no IORING_OP_URING_CMD before Linux 5.19; played here by
// hiding it from the probe) a discard is a hole, whose range the kernel checks before the device:
// on Linux 5.10 the bad ranges failed EINVAL and the good one EOPNOTSUPP "on this kernel", and
// the kernel dropped the range's page cache before it refused, so a buffered write completed just
// before was lost. The queue now asks sysfs first, and answers as the command does, sending nothing:
// a hole's range written back first and sysfs asked after (da56ef7) also keep the write, so with the
// question before taken out only the requests sent tell.
for (const probe of ["as probed", "without IORING_OP_URING_CMD"] as const) {
  test(
    ...skipIf(
      `discard: on a device without discard every discard, whatever its range, says EOPNOTSUPP and changes nothing [${probe}]`,
      BARE_SKIP,
    ),
    () => {
      const loop = bareLoop(new Uint8Array(4 * MiB).fill(0x5a));
      const data = new Uint8Array(4096).fill(0xc3);
      const run = () => {
        for (const direct of [false, true]) {
          using b = startOn({ path: loop.path, direct });
          const q = b.getQueue(0)!, out: Completion[] = [];
          // Buffered: completed, and not yet written back (in the page cache only).
          if (!direct) {
            q.write(MiB, data, "write");
            assert.equal(q.doIo(out, 1, 1, 10_000_000_000n), 1);
            assert.equal(out[0].ret, 0);
          }
          for (const [start, len] of [[MiB, MiB], [0, 0], [100, 512], [4 * MiB, 4096], [3 * MiB, 2 * MiB]]) {
            const c = discard(b, start, len);
            assert.equal(c.ret, -ENOTSUP, `${start}+${len}: ${c.ret} ${c.errorMsg}`);
            assert.equal(c.errorMsg, "Discard is not supported by this device");
          }
          if (!direct) {
            const back = new Uint8Array(data.length);
            q.read(MiB, back, "read");
            q.flush("flush");
            assert.equal(q.doIo(out, 2, 2, 10_000_000_000n), 2);
            assert.deepEqual(out.slice(0, 2).map((c) => c.ret), [0, 0]);
            assert.deepEqual(back, data, "the completed write read back through the instance");
          }
        }
      };
      try {
        let sent = 0;
        const holes = countSubmitted(IORING_OP.FALLOCATE, () => {
          sent = countSubmitted(IORING_OP.SYNC_FILE_RANGE, () => {
            if (probe === "as probed") run();
            else withoutOpcode(IORING_OP.URING_CMD, run);
          });
        });
        assert.equal(holes + sent, 0, `${holes} holes and ${sent} write-backs sent`);
        assert.deepEqual(pread(loop.path, MiB, data.length), data, "the completed write on the device");
        const rest = [pread(loop.path, 0, MiB), pread(loop.path, MiB + data.length, 3 * MiB - data.length)];
        assert.ok(rest.every((r) => r.every((x) => x === 0x5a)), "the device changed");
      } finally {
        loop.detach();
      }
    },
  );
}

// Without the discard command (before Linux 6.12; played by hiding IORING_OP_URING_CMD from the
// probe) a discard is a hole, which blkdev_fallocate makes a write zeroes without fallback after it
// has dropped the range's page cache, dirty pages included: on a device with discard but without
// write zeroes (a SATA SSD without WRITE SAME; here a loop device over a tmpfs file made to lose
// write zeroes, which keeps discard) the hole failed EOPNOTSUPP and a buffered write completed
// before it in that range was lost, reads finding the older data. The queue now refuses such a
// discard before sending anything when it knows the device lacks write zeroes (sysfs, at connect
// or since), and otherwise writes the range back first and asks sysfs before the hole.
const NO_HOLE_MSG = /^Discard is not supported by this device on this kernel: before Linux 6\.12 /;
const DATA_AT = 2 * MiB;

/**
 * A loop device over a tmpfs file filled with 0x5a that has lost write zeroes and kept discard,
 * with `before` run (instances to start) while it still had write zeroes.
 */
function withoutWriteZeroes<T>(before: (dev: string) => T): [string, T] {
  const dev = scratchLoop(8 * MiB);
  pwrite(dev, 0, new Uint8Array(8 * MiB).fill(0x5a));
  const got = before(dev);
  loseWriteZeroes(dev);
  const name = dev.slice(5);
  const max = Number(readFileSync(`/sys/block/${name}/queue/discard_max_bytes`, "utf8"));
  assert.ok(max > 0, `${dev} lost discard with write zeroes: the premise of this test is gone`);
  return [dev, got];
}

/**
 * A completed write of 0xc3 at DATA_AT that no writeback has reached yet: through `b` (buffered),
 * or, for an O_DIRECT instance, another writer's buffered one (the page cache is the device's).
 */
function dirtyWrite(b: Blkio, dev: string, direct: boolean, len = 64 * 1024): Uint8Array {
  const data = new Uint8Array(len).fill(0xc3);
  if (direct) pwrite(dev, DATA_AT, data);
  else {
    const q = b.getQueue(0)!, out: Completion[] = [];
    q.write(DATA_AT, data, "write");
    assert.equal(q.doIo(out, 1, 1, 10_000_000_000n), 1);
    assert.equal(out[0].ret, 0, `write: ${out[0].ret} ${out[0].errorMsg}`);
  }
  return data;
}

/** That `data` reads back at DATA_AT through `b` and through a buffered reader of `dev`. */
function assertKept(b: Blkio, dev: string, data: Uint8Array, what: string): void {
  const q = b.getQueue(0)!, out: Completion[] = [];
  const back = alignedBuffer(b, data.length);
  q.read(DATA_AT, back, "read");
  assert.equal(q.doIo(out, 1, 1, 10_000_000_000n), 1);
  assert.equal(out[0].ret, 0, `read: ${out[0].ret} ${out[0].errorMsg}`);
  assert.deepEqual(back, data, `${what}: the completed write read back through the instance`);
  assert.deepEqual(
    pread(dev, DATA_AT, data.length),
    data,
    `${what}: the completed write read from the device`,
  );
}

for (const direct of [false, true]) {
  const mode = direct ? "direct" : "buffered";
  test(
    ...skipIf(
      `discard: without the discard command, a device known to lack write zeroes refuses every discard with EOPNOTSUPP before the kernel, and keeps a completed write [${mode}]`,
      loseWriteZeroesUnavailableReason(),
    ),
    () => {
      const [dev] = withoutWriteZeroes(() => null);
      let sent = 0;
      // Only the rings set up inside are counted: the instance's.
      const fallocates = countSubmitted(IORING_OP.FALLOCATE, () => {
        sent = countSubmitted(IORING_OP.SYNC_FILE_RANGE, () => {
          withoutOpcode(IORING_OP.URING_CMD, () => {
            using b = startOn({ path: dev, direct }); // connected after: it knows
            const data = dirtyWrite(b, dev, direct);
            const c = discard(b, DATA_AT, MiB);
            assert.equal(c.ret, -ENOTSUP, `${c.ret} ${c.errorMsg}`);
            assert.match(c.errorMsg ?? "", NO_HOLE_MSG);
            assertKept(b, dev, data, mode);
            // The ranges the hole would refuse EINVAL: each says what a device without discard says
            // on any kernel (ENOTSUP first, then EINVAL).
            for (const [start, len] of [[0, 0], [100, 512], [8 * MiB, 4096]]) {
              const c = discard(b, start, len);
              assert.equal(c.ret, -ENOTSUP, `${start}+${len}: ${c.ret} ${c.errorMsg}`);
              assert.match(c.errorMsg ?? "", NO_HOLE_MSG);
            }
          });
        });
      });
      assert.equal(fallocates + sent, 0, `${fallocates} holes and ${sent} write-backs sent`);
    },
  );
}

// The same when the device lost write zeroes after the instance looked: here another instance found
// out (loseWriteZeroes), as a disk finds out at a failed WRITE SAME. The discard writes its range
// back, then finds in sysfs that the device now lacks write zeroes, and sends no hole; later
// discards are refused before anything is sent. Sent all the same, the hole the device refuses
// would have the kernel drop the range's page cache, and leave zeroes there where it cannot (a large
// folio, pages busy): with the sysfs question taken out, the refusal taken care of after kept this
// test's write, and only the count of holes sent tells.
for (const direct of [false, true]) {
  const mode = direct ? "direct" : "buffered";
  test(
    ...skipIf(
      `discard: without the discard command, a device that lost write zeroes since connect refuses a discard with EOPNOTSUPP and keeps a completed write [${mode}]`,
      loseWriteZeroesUnavailableReason(),
    ),
    () => {
      // The first discard's write-back, and no other (loseWriteZeroes sends none).
      let sent = 0;
      // loseWriteZeroes' own refused zeroing, and no hole.
      const fallocates = countSubmitted(IORING_OP.FALLOCATE, () => {
        sent = countSubmitted(IORING_OP.SYNC_FILE_RANGE, () => {
          withoutOpcode(IORING_OP.URING_CMD, () => {
            const [dev, b] = withoutWriteZeroes((dev) => startOn({ path: dev, direct }));
            using _ = b;
            const data = dirtyWrite(b, dev, direct);
            const first = discard(b, DATA_AT, MiB);
            assert.equal(first.ret, -ENOTSUP, `${first.ret} ${first.errorMsg}`);
            assert.match(first.errorMsg ?? "", NO_HOLE_MSG);
            assertKept(b, dev, data, `${mode}, lost since connect`);
            for (const [start, len] of [[DATA_AT, MiB], [0, 0]]) {
              const c = discard(b, start, len);
              assert.equal(c.ret, -ENOTSUP, `then ${start}+${len}: ${c.ret} ${c.errorMsg}`);
              assert.match(c.errorMsg ?? "", NO_HOLE_MSG);
            }
          });
        });
      });
      assert.equal(sent, 1, `${sent} write-backs: a later discard was not refused at once`);
      assert.equal(fallocates - 1, 0, `${fallocates - 1} holes sent to a device without write zeroes`);
    },
  );
}

// When sysfs cannot be read (no fd free) the hole goes, and the device refuses it: the kernel has
// dropped the range's page cache by then, and zeroed, in the cache, the parts of the pages the range
// only partly covers. The range was written back first, and the queue drops the device's clean
// page cache after the refusal: readers find what the device holds, the completed write. That the
// hole went shows in a cached page outside its range, read again from the device only once the
// device's clean cache was dropped (its read count, /sys/block/<dev>/stat). The drop runs in io-wq:
// when io-wq cancels it for want of a worker thread (a thread limit: ECANCELED, played here by
// withCancelled) it never ran, and the cache was left as the refused hole made it: the completed
// write read back as zeroes where the hole partly covered its pages. It now goes again; and where
// it cannot (every try cancelled, or destroy()'s drain, which makes no retries) the queue drops the
// cache itself (posix_fadvise), as the old code did not.
const NO_WORKER_TRIES = 11; // the first and NO_WORKER_RETRIES more
for (const cancels of [0, 1, NO_WORKER_TRIES]) {
  test(
    ...skipIf(
      "discard: without the discard command, a hole the device refuses (sysfs unreadable) leaves a completed write and the page cache right" +
        (cancels === 1
          ? " [the cache drop cancelled once]"
          : cancels > 1
          ? " [the cache drop cancelled at every try]"
          : ""),
      loseWriteZeroesUnavailableReason(),
    ),
    () => {
      const run = () => {
        withoutOpcode(IORING_OP.URING_CMD, () => {
          const [dev, b] = withoutWriteZeroes((dev) => startOn({ path: dev, direct: false }));
          using _ = b;
          const data = dirtyWrite(b, dev, false, 8192);
          const dropped = cacheDropCheck(dev);
          // Over part of each of the write's two pages.
          const c = withoutFreeFds(() => ({ ...discard(b, DATA_AT + 3072, 3584) }));
          assert.equal(c.ret, -ENOTSUP, `${c.ret} ${c.errorMsg}`);
          assert.match(c.errorMsg ?? "", NO_HOLE_MSG);
          assertKept(b, dev, data, "a refused hole");
          assert.ok(
            dropped(),
            cancels > 0
              ? "the device's page cache stayed: the cancelled cache drop was not done"
              : "the device's page cache stayed: the hole was not sent, nothing tested",
          );
        });
      };
      const cancelled = cancels > 0 ? withCancelled(IORING_OP.FADVISE, cancels, run) : (run(), 0);
      assert.equal(cancelled, cancels, `${cancelled} cache drops cancelled, not ${cancels}`);
    },
  );
}

// The same drop cancelled while destroy() waits for the requests in the kernel: the discard was
// submitted (doIo without waiting) and its write-back was still in io-wq. The drain carries the
// request to its end (the hole, refused, and the drop) without retries, and the old code left the
// cache with zeroes for every later reader of the device. Needs the write-back still in the kernel
// when destroy() starts; a run where doIo had already seen it complete is tried again.
test(
  ...skipIf(
    "discard: without the discard command, a cache drop cancelled during destroy() after a refused hole is still done",
    loseWriteZeroesUnavailableReason(),
  ),
  () => {
    let cancelled = false;
    for (let attempt = 0; attempt < 3 && !cancelled; attempt++) {
      let dev = "", data: Uint8Array = new Uint8Array(), dropped = () => false;
      withoutOpcode(IORING_OP.URING_CMD, () => {
        cancelled = withCancelledOnce(IORING_OP.FADVISE, () => {
          let b: Blkio;
          [dev, b] = withoutWriteZeroes((dev) => startOn({ path: dev, direct: false }));
          using _ = b;
          data = dirtyWrite(b, dev, false, 8192);
          dropped = cacheDropCheck(dev);
          withoutFreeFds(() => {
            const q = b.getQueue(0)!;
            q.discard(DATA_AT + 3072, 3584, "d");
            const out: Completion[] = [];
            assert.equal(q.doIo(out, 0), 0, `the discard completed at once: ${out[0]?.ret}`);
            b.destroy();
          });
        });
      });
      if (!cancelled) continue;
      assert.deepEqual(pread(dev, DATA_AT, data.length), data, "the completed write read from the device");
      assert.ok(dropped(), "the device's page cache stayed: the cancelled cache drop was not done");
    }
    assert.ok(
      cancelled,
      "no cache drop cancelled in 3 tries (the write-back done before destroy()): nothing tested",
    );
  },
);

/**
 * Caches a page of `dev` outside DATA_AT's range, and returns whether it has been read from the
 * device again since (its read count, /sys/block/<dev>/stat): whether the device's clean page
 * cache was dropped.
 */
function cacheDropCheck(dev: string): () => boolean {
  const sectorsRead = () =>
    Number(readFileSync(`/sys/block/${dev.slice(5)}/stat`, "utf8").trim().split(/\s+/)[2]);
  pread(dev, 4 * MiB, 256 * 1024); // cached
  const before = sectorsRead();
  return () => {
    // Its first page only: a read reaching the readahead mark further on reads ahead from the
    // device whether or not the cache was dropped.
    pread(dev, 4 * MiB, 4096);
    return sectorsRead() > before;
  };
}

// The write-back before a hole runs in io-wq, on a second open file of the device. When io-wq cancels
// it for want of a worker thread (a thread limit: ECANCELED), it never ran, and the hole went ahead
// without it: a device that refused the hole had lost the range's dirty pages all the same. The
// write-back now goes again first (so does a NO_FALLBACK write zeroes', the same code). Played by
// withCancelledOnce, so that the write-back really does not happen, on a device that refuses the
// hole (lost write zeroes; sysfs unreadable, so the hole goes): the completed write must be kept.
// Rewriting the CQE of a write-back that had run showed only how many were sent, the dirty pages
// being on the device already. The same when no second file could be opened (no fd free from the
// first discard on): the write-back then runs on the device's own fd (phase 3), whose failure the
// request must report, and whose ECANCELED must send it again, not on to the hole (a mutation audit,
// helper-102, found that no test told a failed phase-3 write-back from a done one).
for (const ownFd of [false, true]) {
  test(
    ...skipIf(
      ownFd
        ? "discard: without the discard command, a write-back on the device's own fd that io-wq cancelled goes again before the hole"
        : "discard: without the discard command, a write-back io-wq cancelled goes again before the hole",
      loseWriteZeroesUnavailableReason(),
    ),
    () => {
      let cancelled = false;
      withoutOpcode(IORING_OP.URING_CMD, () => {
        // The instance is set up inside: withCancelledOnce sees only the rings made in it. On the
        // second file, the second write-back is the one cancelled: the first discard opens that file
        // (no fd is free at the second, which keeps using it).
        cancelled = withCancelledOnce(IORING_OP.SYNC_FILE_RANGE, () => {
          const [dev, b] = withoutWriteZeroes((dev) => {
            const b = startOn({ path: dev, direct: false });
            if (!ownFd) {
              const c = discard(b, 6 * MiB, MiB);
              assert.equal(c.ret, 0, `first discard: ${c.ret} ${c.errorMsg}`);
            }
            return b;
          });
          using _ = b;
          const data = dirtyWrite(b, dev, false);
          const c = withoutFreeFds(() => ({ ...discard(b, DATA_AT, MiB) }));
          assert.equal(c.ret, -ENOTSUP, `${c.ret} ${c.errorMsg}`);
          assert.match(c.errorMsg ?? "", NO_HOLE_MSG);
          assertKept(
            b,
            dev,
            data,
            `a write-back${ownFd ? " on the device's fd" : ""} cancelled before a refused hole`,
          );
        }, ownFd ? 0 : 1);
      });
      assert.ok(cancelled, "no write-back cancelled: nothing tested");
    },
  );
}

// The kernel first tries a discard command without waiting; with every request slot of the device
// taken (a loop device has 128) it retries it from io-wq reading the SQE from the ring, where the
// slot had been reused by then: the discard failed EINVAL (Linux 6.18; the BlockDevice fuzzer, then
// the discard hunt: 3.6% of discards beside 200 large writes in flight). It now goes to io-wq at
// once, with its SQE copied at submission.
test(
  ...skipIf("discard: beside writes that fill the device's request slots, every discard succeeds", LOOP_SKIP),
  async () => {
    const SIZE = 64 * MiB;
    const dev = scratchLoop(SIZE, true);
    const big = await BlockDevice.open(dev, { direct: true, numEntries: 256 });
    const small = await BlockDevice.open(dev, { direct: true, numEntries: 8 });
    const end = performance.now() + 3000;
    const failures: string[] = [];
    let discards = 0;
    const random = (n: number) => Math.floor(Math.random() * n);
    const writer = async (buf: Uint8Array) => {
      while (performance.now() < end) await big.write(random(SIZE / MiB) * MiB, buf);
    };
    const discarder = async () => {
      while (performance.now() < end) {
        const at = random(SIZE / 4096) * 4096;
        try {
          await small.discard(at, Math.min(512 * (1 + random(80)), SIZE - at));
          discards++;
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    };
    const mixer = async (buf: Uint8Array) => {
      while (performance.now() < end) {
        const at = random(SIZE / 4096) * 4096;
        if (random(2)) await small.write(at, buf.subarray(0, Math.min(512 * (1 + random(128)), SIZE - at)));
        else await small.read(at, buf.subarray(0, 4096));
      }
    };
    try {
      const wbuf = big.allocBuffer(MiB);
      const lanes: Promise<void>[] = [];
      for (let i = 0; i < 200; i++) lanes.push(writer(wbuf));
      for (let i = 0; i < 16; i++) lanes.push(discarder(), mixer(small.allocBuffer(65536)));
      await Promise.all(lanes);
    } finally {
      await big.close();
      await small.close();
    }
    assert.deepEqual(
      failures.slice(0, 3),
      [],
      `${failures.length} of ${discards + failures.length} discards failed`,
    );
    // Enough discards to have raced the writes, where the race was the discard command's
    // (6.12+); before, each is a fallocate that io-wq does at the pace of the writes around it.
    assert.ok(discards > (DISCARD_COMMAND ? 100 : 0), `only ${discards} discards ran`);
  },
);

// Past the end of a device the kernel says only EINVAL, as for a misaligned range; the completion
// says which (a new user found errorMsg null there, where reads and writes explained it).
test(
  ...skipIf("discard and write zeroes past the end of a loop device say so in errorMsg", LOOP_SKIP),
  () => {
    const { dev } = filledLoop();
    using b = startOn({ path: dev, direct: false });
    const q = b.getQueue(0)!;
    q.discard(8 * MiB - 4096, 8192, "across");
    q.writeZeroes(8 * MiB, 4096, "past");
    const out: Completion[] = [];
    assert.equal(q.doIo(out, 2, 2), 2);
    for (const c of out) {
      assert.equal(c.ret, -22, `${String(c.userData)}: ${c.ret} ${c.errorMsg}`);
      const len = c.userData === "across" ? 8192 : 4096;
      const start = c.userData === "across" ? 8 * MiB - 4096 : 8 * MiB;
      assert.equal(
        c.errorMsg,
        `The request, ${len} bytes at ${start}, reaches past the end of the device (capacity ${8 * MiB})`,
      );
    }
    assert.ok(pread(dev, 7 * MiB, MiB).every((x) => x === 0x5a), "the last MiB is unchanged");
  },
);

// Before Linux 6.12 a block device's discard is a hole (fallocate), and blkdev_fallocate cuts a
// range that reaches past the end of the device at its end: the part inside was deallocated and
// the discard completed 0 (Linux 6.1 guest, scripts/kernel_test.sh), where the discard command
// refuses the range whole. On a newer kernel the command's EINVAL is played as its EOPNOTSUPP.
test(
  ...skipIf(
    "discard: without the discard command, a range across the end of the device is refused whole, nothing discarded",
    LOOP_SKIP,
  ),
  () => {
    const { dev, backing } = filledLoop();
    const before = statSync(backing).blocks;
    let c: Completion | null = null;
    const rewrites = DISCARD_COMMAND ? 1 : 0;
    const rewritten = withRewrittenResults(-22, -ENOTSUP, rewrites, () => {
      using b = startOn({ path: dev, direct: false });
      c = { ...discard(b, 8 * MiB - 4096, 8192) };
    });
    assert.equal(rewritten, rewrites);
    assert.equal(c!.ret, -22, `${c!.ret} ${c!.errorMsg}`);
    assert.equal(
      c!.errorMsg,
      `The request, 8192 bytes at ${8 * MiB - 4096}, reaches past the end of the device (capacity ${
        8 * MiB
      })`,
    );
    assert.equal(statSync(backing).blocks, before, "blocks were deallocated");
    assert.ok(pread(dev, 7 * MiB, MiB).every((x) => x === 0x5a), "the last MiB changed");
  },
);

// libblkio discards a regular file with fallocate(PUNCH_HOLE | NO_HIDE_STALE | KEEP_SIZE), a mode
// Linux does not accept for files, so on a file discard fails. The message says so and names what does
// deallocate a file's range; that alternative is checked to do what the message promises.
for (const [fs, parent] of [["ext4", tmpdir()], ["tmpfs", "/dev/shm"]] as const) {
  test(
    ...skipIf(
      `discard: on a regular file (${fs}) fails EOPNOTSUPP and points to writeZeroes, which frees the range`,
      existsSync(parent) ? null : `${parent} does not exist`,
    ),
    () => {
      const path = scratchFile(4 * MiB, 0x5a, scratchDir(parent));
      using b = startOn({ path, direct: false });
      const c = discard(b, MiB, MiB);
      assert.equal(c.ret, -ENOTSUP, `${c.ret} ${c.errorMsg}`);
      assert.match(
        c.errorMsg ?? "",
        /Discard is not supported on regular files: .*writeZeroes without NO_UNMAP/,
      );
      assert.ok(readFileSync(path).every((x) => x === 0x5a), "the failed discard changed nothing");
      const before = statSync(path).blocks;
      const q = b.getQueue(0)!;
      q.writeZeroes(MiB, MiB, "z");
      const out: Completion[] = [];
      assert.equal(q.doIo(out, 1, 1), 1);
      assert.equal(out[0].ret, 0, `${out[0].ret} ${out[0].errorMsg}`);
      assert.equal(before - statSync(path).blocks, MiB / 512, "1 MiB deallocated");
      const data = readFileSync(path);
      assert.ok(data.subarray(MiB, 2 * MiB).every((x) => x === 0), "the range reads as zeroes");
      assert.ok(
        data.subarray(0, MiB).every((x) => x === 0x5a) && data.subarray(2 * MiB).every((x) => x === 0x5a),
      );
      assert.equal(data.length, 4 * MiB, "the size is kept");
    },
  );
}

test("discard: cleanup scratch targets", () => cleanupAll());
