// libblkio tests/poll-queues.c: a poll queue (IORING_SETUP_IOPOLL) does read/write(v) and
// rejects the rest; where poll queues are unsupported (buffered I/O) asking for one is EINVAL.
import { test } from "node:test";
import assert from "./_assert.ts";
import type { Completion, Queue } from "../mod.ts";
import { closeSync, openSync, readFileSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { Blkio } from "../mod.ts";
import {
  alignedBuffer,
  assertErrno,
  cleanupAll,
  connectTo,
  scratchDir,
  skipIf,
  type Target,
  targets,
} from "./_helpers.ts";
import { PAGE, pattern } from "./_io.ts";

const TARGETS = targets();
const ENOTSUP = 95;
const POLL_MSG = "request not supported on poll queues for this driver";

function supportsPollQueues(t: Target): boolean {
  const b = connectTo(t);
  try {
    return b.getBool("supports-poll-queues");
  } finally {
    b.destroy();
  }
}

/** Connected instance with num-queues 0 and one poll queue, started. */
function startPolled(t: Target): Blkio {
  const b = connectTo(t);
  b.setInt("num-queues", 0);
  b.setInt("num-poll-queues", 1);
  b.start();
  return b;
}

/** Driver polling: doIo(min 1) spins in the kernel until the request completes. */
function pollOne(q: Queue, what: string): Completion {
  const out: Completion[] = [];
  const n = q.doIo(out, 1, 1, 10_000_000_000n);
  assert.equal(n, 1, `${what}: doIo returned ${n}`);
  return { ...out[0] };
}

function pollOk(q: Queue, submit: (ud: unknown) => void, what: string): void {
  const tag = { what };
  submit(tag);
  const c = pollOne(q, what);
  assert.equal(c.userData, tag);
  assert.equal(c.ret, 0, `${what}: ret ${c.ret} ${c.errorMsg}`);
}

const SUPPORT = new Map(TARGETS.map((t) => [t.name, supportsPollQueues(t)]));
const OFF = 0x10000;

test(`poll-queues: support by target is ${JSON.stringify(Object.fromEntries(SUPPORT))}`, () => {
  // Poll queues need O_DIRECT: buffered targets never support them.
  for (const t of TARGETS) if (!t.direct) assert.equal(SUPPORT.get(t.name), false, t.name);
});

for (const t of TARGETS) {
  const supported = SUPPORT.get(t.name)!;
  const why = !supported &&
    `supports-poll-queues is false on ${t.name}: a polled read fails with EOPNOTSUPP on this kernel`;

  test(
    ...skipIf(`poll-queues: num-queues 0 + 1 poll queue, read/readv/write/writev [${t.name}]`, why),
    () => {
      using b = startPolled(t);
      assert.equal(b.getQueue(0), null);
      assert.equal(b.getPollQueue(1), null);
      const q = b.getPollQueue(0)!;
      assert.ok(q !== null, "getPollQueue(0)");
      assert.equal(q.isPollQueue, true);
      assert.equal(q.completionFd, -1);
      q.setCompletionFdEnabled(true); // a no-op on poll queues
      q.setCompletionFdEnabled(false);

      const w = alignedBuffer(b, 2 * PAGE);
      const r = alignedBuffer(b, 2 * PAGE);
      const data = pattern(2 * PAGE, 9);
      w.set(data);
      pollOk(q, (ud) => q.write(OFF, w.subarray(0, PAGE), ud), "write");
      pollOk(q, (ud) => q.writev(OFF + PAGE, [w.subarray(PAGE)], ud), "writev");
      pollOk(q, (ud) => q.read(OFF, r.subarray(0, PAGE), ud), "read");
      pollOk(q, (ud) => q.readv(OFF + PAGE, [r.subarray(PAGE)], ud), "readv");
      assert.deepEqual(r, data);
      r.fill(0);
      pollOk(q, (ud) => q.readv(OFF, [r.subarray(PAGE), r.subarray(0, PAGE)], ud), "readv of 2");
      assert.deepEqual(r.subarray(PAGE), data.subarray(0, PAGE));
      assert.deepEqual(r.subarray(0, PAGE), data.subarray(PAGE));

      // Several at once, application polling with min 0 on a poll queue.
      const n = 16;
      const many = alignedBuffer(b, n * PAGE);
      for (let i = 0; i < n; i++) q.read(OFF + (i % 2) * PAGE, many.subarray(i * PAGE, (i + 1) * PAGE), i);
      const out: Completion[] = [];
      const seen = new Set<unknown>();
      const deadline = performance.now() + 20_000;
      while (seen.size < n) {
        assert.ok(performance.now() < deadline, "poll queue stalled");
        const got = q.doIo(out, 0, 4);
        for (let i = 0; i < got; i++) {
          assert.equal(out[i].ret, 0);
          seen.add(out[i].userData);
        }
      }
      for (let i = 0; i < n; i++) {
        assert.deepEqual(
          many.subarray(i * PAGE, (i + 1) * PAGE),
          data.subarray((i % 2) * PAGE, (i % 2 + 1) * PAGE),
        );
      }
      assertErrno(() => q.doIo(out, 1, 1), "EINVAL");
    },
  );

  test(...skipIf(`poll-queues: flush, writeZeroes, discard complete with ENOTSUP [${t.name}]`, why), () => {
    using b = startPolled(t);
    const q = b.getPollQueue(0)!;
    const tags = ["flush", "writeZeroes", "discard"];
    q.flush(tags[0]);
    q.writeZeroes(OFF, PAGE, tags[1]);
    q.discard(OFF, PAGE, tags[2]);
    const out: Completion[] = [];
    assert.equal(q.doIo(out, 3, 3, 10_000_000_000n), 3);
    assert.deepEqual(out.map((c) => c.userData), tags);
    for (const c of out) {
      assert.equal(c.ret, -ENOTSUP, `${c.userData}: ret`);
      assert.equal(c.errorMsg, POLL_MSG, `${c.userData}: errorMsg`);
    }
    // Flag checks come first, as in libblkio.
    q.flush("bad flags", 0x10);
    assert.equal(q.doIo(out, 1, 1), 1);
    assert.equal(out[0].ret, -22);
    assert.equal(out[0].errorMsg, "unsupported bits in request flags");
  });

  test(...skipIf(`poll-queues: doIoInterruptible is ENOTSUP, addPollQueue works [${t.name}]`, why), () => {
    using b = startPolled(t);
    const q = b.getPollQueue(0)!;
    assertErrno(() => q.doIoInterruptible([], 0, 0), "ENOTSUP");
    const buf = alignedBuffer(b, PAGE);
    q.read(0, buf, "r");
    assertErrno(() => q.doIoInterruptible([], 1, 1), "ENOTSUP");
    assert.equal(pollOne(q, "read after ENOTSUP").userData, "r", "the request survives the refused call");

    const idx = b.addPollQueue();
    assert.equal(idx, 1);
    const q2 = b.getPollQueue(idx)!;
    assert.equal(q2.isPollQueue, true);
    assert.equal(q2.completionFd, -1);
    pollOk(q2, (ud) => q2.read(0, buf, ud), "read on added poll queue");
    // A regular queue can be added next to the poll queues.
    const ri = b.addQueue();
    assert.equal(ri, 0);
    const rq = b.getQueue(ri)!;
    assert.equal(rq.isPollQueue, false);
    assert.ok(rq.completionFd >= 0);
    b.removePollQueue(idx);
    assert.equal(b.getPollQueue(idx), null);
    assertErrno(() => b.removePollQueue(idx), "ENOENT");
  });

  if (!supported) {
    test(`poll-queues: unsupported target rejects poll queues with EINVAL [${t.name}]`, () => {
      const b = connectTo(t);
      try {
        b.setInt("num-poll-queues", 1);
        assertErrno(() => b.start(), "EINVAL", /[Pp]oll queues not supported/);
        assert.equal(b.state, "connected");
      } finally {
        b.destroy();
      }
      using b2 = connectTo(t);
      b2.start();
      assertErrno(() => b2.addPollQueue(), "EINVAL");
      assert.equal(b2.getPollQueue(0), null);
      assert.ok(b2.getQueue(0) !== null);
    });
  }
}

/** sysfs queue/io_poll of the disk holding `path` (0 or 1), or null when there is none. */
function diskIoPoll(path: string): number | null {
  const dev = Number(statSync(path).dev);
  // glibc's gnu_dev_major / gnu_dev_minor (dev_t is below 2^53 in practice).
  const hi = Math.floor(dev / 2 ** 32);
  const major = ((dev >>> 8) & 0xfff) | ((hi & ~0xfff) >>> 0);
  const minor = (dev & 0xff) | ((dev >>> 12) & ~0xff & 0xfffff);
  const dir = `/sys/dev/block/${major}:${minor}`;
  for (const q of [`${dir}/queue/io_poll`, `${dir}/../queue/io_poll`]) {
    try {
      return Number(readFileSync(q, "utf8").trim());
    } catch { /* a partition: its disk's queue is one level up */ }
  }
  return null;
}

const SPARSE_DIR = scratchDir();
const SPARSE_IO_POLL = diskIoPoll(SPARSE_DIR);

test(
  ...skipIf(
    "poll-queues: an empty or sparse O_DIRECT file on a disk without poll queues does not support them",
    SPARSE_IO_POLL === null
      ? `no block device with a queue/io_poll attribute behind ${SPARSE_DIR}`
      : SPARSE_IO_POLL !== 0 && `the disk behind ${SPARSE_DIR} has poll queues (io_poll ${SPARSE_IO_POLL})`,
  ),
  () => {
    // The probe's read of block 0 never reaches the disk when that block holds no data.
    const dir = SPARSE_DIR;
    const files = {
      empty: join(dir, "empty.img"),
      sparse: join(dir, "sparse.img"),
      written: join(dir, "written.img"),
    };
    closeSync(openSync(files.empty, "w"));
    const sparse = openSync(files.sparse, "w");
    writeSync(sparse, new Uint8Array(1), 0, 1, (1 << 20) - 1);
    closeSync(sparse);
    const written = openSync(files.written, "w");
    writeSync(written, new Uint8Array(1 << 16).fill(1));
    closeSync(written);
    for (const [kind, path] of Object.entries(files)) {
      using b = Blkio.create("io_uring");
      b.setStr("path", path);
      b.setBool("direct", true);
      b.connect();
      assert.equal(b.getBool("supports-poll-queues"), false, kind);
      b.setInt("num-poll-queues", 1);
      assertErrno(() => b.start(), "EINVAL", /[Pp]oll queues not supported/);
    }
  },
);

test("poll_queues: cleanup scratch targets", () => cleanupAll());
