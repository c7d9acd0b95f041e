// Security: a read-only instance opens its target O_RDONLY, so it can never write (every write
// kind fails with -EBADF from the kernel and the data is unchanged); and no file descriptor of
// the library (target, io_uring rings, completion eventfds, memory-region memfds) is inherited
// by a child process: each is close-on-exec, and a child spawned while they are open does not
// have them.
import { test } from "node:test";
import assert from "./_assert.ts";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { Blkio, type Completion, ERRNO } from "../mod.ts";
import { alignedBuffer, cleanupAll, pread, startOn, targets } from "./_helpers.ts";

const O_ACCMODE = 3;
const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const TARGETS = targets(2 * 1024 * 1024);

/** The `flags:` of /proc/self/fdinfo/<fd> (octal in the file). */
function fdFlags(fd: number): number {
  const m = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
  assert.ok(m, `no flags in fdinfo of fd ${fd}`);
  return parseInt(m[1], 8);
}

/** Open fds of this process and what each points to. */
function openFds(): Map<number, string> {
  const fds = new Map<number, string>();
  for (const name of readdirSync("/proc/self/fd")) {
    try {
      fds.set(Number(name), readlinkSync(`/proc/self/fd/${name}`));
    } catch {
      // closed while listing (the directory's own fd, a runtime thread's)
    }
  }
  return fds;
}

function reap(
  q: { doIo(out: Completion[], min: number, max?: number, t?: bigint): number },
  n: number,
): Completion[] {
  const all: Completion[] = [];
  const out: Completion[] = [];
  while (all.length < n) {
    const k = q.doIo(out, 1, n - all.length, 20_000_000_000n);
    for (let i = 0; i < k; i++) all.push({ ...out[i] });
  }
  return all;
}

for (const t of TARGETS) {
  test(`security: a read-only instance opens its target O_RDONLY and every write fails (EBADF) [${t.name}]`, () => {
    const before = pread(t.path, 0, 64 * 1024);
    using b = startOn(t, { readOnly: true });
    assert.equal(b.getBool("read-only"), true);
    const fd = b.getInt("fd");
    assert.ok(fd >= 0, `fd property ${fd}`);
    assert.equal(
      fdFlags(fd) & O_ACCMODE,
      O_RDONLY,
      `fdinfo flags of the target fd ${fd}: 0o${fdFlags(fd).toString(8)}`,
    );
    assert.equal(readlinkSync(`/proc/self/fd/${fd}`), t.path);

    const q = b.getQueue(0)!;
    const data = alignedBuffer(b, 8192).fill(0x5a);
    q.write(0, data, "write");
    q.writev(8192, [data.subarray(0, 4096), data.subarray(4096)], "writev");
    q.write(16384, data, "fua write", 1);
    q.writeZeroes(0, 8192, "write zeroes");
    q.discard(0, 8192, "discard");
    // Misaligned for O_DIRECT as well: still EBADF, as the kernel says for any write on an
    // O_RDONLY fd (the library's O_DIRECT alignment check answered EINVAL; fuzzer).
    q.write(512, data.subarray(3, 4099), "misaligned write");
    q.writev(4096, [data.subarray(0, 100), data.subarray(100, 612)], "misaligned writev");
    const done = reap(q, 7);
    for (const c of done) {
      // Discard too: the driver answers it (the kernel looked at fallocate's mode before the fd's).
      assert.equal(c.ret, -ERRNO.EBADF, `${c.userData}: ${c.errorMsg}`);
    }

    // Reads still work, and nothing changed on the target.
    const r = alignedBuffer(b, 64 * 1024);
    q.read(0, r, "read");
    assert.equal(reap(q, 1)[0].ret, 0);
    assert.deepEqual(r, before);
    assert.deepEqual(pread(t.path, 0, 64 * 1024), before);
  });
}

test("security: every fd of the library is close-on-exec and not inherited by a child process", () => {
  const t = TARGETS.find((x) => x.name === "file")!;
  const before = openFds();
  const b = Blkio.create("io_uring");
  try {
    b.setStr("path", t.path);
    b.connect();
    b.setInt("num-queues", 2);
    b.start();
    b.addQueue();
    const r1 = b.allocMemRegion(4096);
    const r2 = b.allocMemRegion(8192);
    b.mapMemRegion(r2);
    // Use the queues once, so everything a request touches exists.
    for (let i = 0; i < 3; i++) {
      const q = b.getQueue(i)!;
      q.read(0, r1.bytes, i);
      assert.equal(reap(q, 1)[0].ret, 0);
    }
    // Taking a completion fd may remake an idle queue's ring (a new ring fd): take them first.
    const completionFds = [0, 1, 2].map((i) => b.getQueue(i)!.completionFd);

    const mine = new Map<number, string>();
    for (const [fd, target] of openFds()) if (before.get(fd) !== target) mine.set(fd, target);
    const kinds = (what: string) => [...mine.values()].filter((v) => v.includes(what)).length;
    assert.equal(kinds(t.path), 1, `target fd among ${JSON.stringify([...mine])}`);
    assert.equal(kinds("[io_uring]"), 3, "one ring per queue");
    assert.equal(kinds("[eventfd]"), 3, "one completion eventfd per queue");
    assert.equal(kinds("memfd:libblkio-buf"), 2, "one memfd per memory region");
    assert.ok(mine.has(b.getInt("fd")));
    assert.ok(mine.has(r1.fd) && mine.has(r2.fd));
    for (const fd of completionFds) assert.ok(mine.has(fd));

    for (const [fd, target] of mine) {
      assert.ok((fdFlags(fd) & O_CLOEXEC) !== 0, `fd ${fd} (${target}) lacks close-on-exec`);
    }

    // A child started now lists its own fds: none of ours may be there.
    const listing = execFileSync("ls", ["-l", "/proc/self/fd"], { encoding: "utf8" });
    const inherited = new Map<number, string>();
    for (const line of listing.split("\n")) {
      const m = /\s(\d+) -> (.*)$/.exec(line);
      if (m) inherited.set(Number(m[1]), m[2]);
    }
    assert.ok(inherited.size >= 3, `could not parse the child's fd listing:\n${listing}`);
    for (const [fd, target] of mine) {
      assert.notEqual(inherited.get(fd), target, `fd ${fd} (${target}) leaked into the child`);
    }
    for (const target of inherited.values()) {
      assert.ok(
        !target.includes("[io_uring]") && !target.includes("libblkio-buf") && target !== t.path,
        `the child has a library fd: ${target}`,
      );
    }
  } finally {
    b.destroy();
  }
  // And destroy closed every one of them.
  const after = openFds();
  for (const [fd, target] of after) {
    if (before.get(fd) === target) continue;
    assert.ok(
      !target.includes("[io_uring]") && !target.includes("libblkio-buf") && target !== t.path,
      `fd ${fd} (${target}) still open after destroy()`,
    );
  }
});

test("security: cleanup scratch targets", () => cleanupAll());
