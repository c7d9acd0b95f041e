// libblkio tests/fd.c: connecting through a file descriptor the application opened, plus the
// rules around the fd property (ownership, flags taken from the fd, conflicts with path).
import { test } from "node:test";
import assert from "./_assert.ts";
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { execFileSync, spawnSync } from "node:child_process";
import process from "node:process";
import { Blkio } from "../mod.ts";
import { native } from "../ffi/load.ts";
import { oDirectFor } from "../src/sys.ts";
import {
  alignedBuffer,
  assertErrno,
  cleanupAll,
  pread,
  pwrite,
  reap,
  runChild,
  RUNTIME,
  scratchDir,
  skipIf,
  type Target,
  targets,
} from "./_helpers.ts";

const TARGETS = targets();
const O_CLOEXEC = 0o2000000;

/** The open(2) flags of `fd` in this process, from /proc/self/fdinfo. */
function fdFlags(fd: number): number {
  const line = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").split("\n").find((l) =>
    l.startsWith("flags:")
  );
  assert.ok(line, `no flags line for fd ${fd}`);
  return parseInt(line.split(/\s+/)[1], 8);
}

/** Whether `fd` is open in this process and refers to `path`. */
function fdRefersTo(fd: number, path: string): boolean {
  const link = `/proc/self/fd/${fd}`;
  if (!existsSync(link)) return false;
  try {
    return readlinkSync(link) === path;
  } catch {
    return false;
  }
}

/**
 * Tells node:fs that the instance closed `fd` (ownership passed to it at connect). Deno's
 * node:fs keeps a table of the fds it opened; a stale entry left there closes the next file
 * node:fs opens under the same number, so drop it while the number is still free. Bun keeps
 * no such table.
 */
function forgetFd(fd: number): void {
  if (RUNTIME !== "deno" || existsSync(`/proc/self/fd/${fd}`)) return;
  try {
    closeSync(fd);
  } catch {
    // EBADF: the entry is gone all the same
  }
}

/** Opens `t` with node:fs, read-write or read-only, O_DIRECT when the target is direct. */
function openTarget(t: Target, readOnly = false): number {
  return openSync(
    t.path,
    (readOnly ? constants.O_RDONLY : constants.O_RDWR) | (t.direct ? constants.O_DIRECT : 0),
  );
}

for (const t of TARGETS) {
  test(`fd: connect through an fd with path "" and do I/O [${t.name}]`, () => {
    const fd = openTarget(t);
    const b = Blkio.create("io_uring");
    try {
      assert.equal(b.getInt("fd"), -1, "fd reads -1 until set");
      b.setInt("fd", fd);
      b.setStr("path", "");
      assert.equal(b.getInt("fd"), fd);
      b.connect();
      assert.equal(b.getInt("fd"), fd);
      assert.equal(b.getStr("path"), "");
      assert.equal(b.getBool("direct"), t.direct);
      assert.equal(b.getBool("read-only"), false);
      assert.equal(b.getUint64("capacity"), BigInt(t.size));
      // After connect neither fd nor path can change.
      assertErrno(() => b.setInt("fd", fd), "EBUSY", /fd/);
      assertErrno(() => b.setInt("fd", -1), "EBUSY");
      assertErrno(() => b.setStr("path", t.path), "EBUSY", /path/);
      assertErrno(() => b.setStr("fd", "3"), "EBUSY");
      b.start();
      assertErrno(() => b.setInt("fd", fd), "EBUSY");
      const q = b.getQueue(0)!;
      const pattern = new Uint8Array(4096).map((_, i) => (i * 13 + 1) & 0xff);
      pwrite(t.path, 0x10000, pattern);
      const buf = alignedBuffer(b, 4096);
      q.read(0x10000, buf, "r");
      const [r] = reap(q, 1);
      assert.equal(r.ret, 0, `read: ${r.ret} ${r.errorMsg}`);
      assert.deepEqual(buf, pattern);
      buf.fill(0xe7);
      q.write(0x20000, buf, "w");
      q.flush("f");
      for (const c of reap(q, 2)) assert.equal(c.ret, 0, `${String(c.userData)}: ${c.ret} ${c.errorMsg}`);
      assert.ok(pread(t.path, 0x20000, 4096).every((v) => v === 0xe7));
    } finally {
      b.destroy();
    }
    // The instance owned the fd: destroy closed it.
    assert.equal(fdRefersTo(fd, t.path), false, "destroy closes an fd handed over at connect");
    forgetFd(fd);
  });
}

for (const t of TARGETS) {
  test(`fd: direct and read-only are taken from the fd's flags [${t.name}]`, () => {
    // Read-only fd, with the properties set the other way round.
    const ro = openTarget(t, true);
    {
      using b = Blkio.create("io_uring");
      b.setBool("read-only", false);
      b.setBool("direct", !t.direct);
      b.setInt("fd", ro);
      b.connect();
      assert.equal(b.getBool("read-only"), true);
      assert.equal(b.getBool("direct"), t.direct);
      assert.equal(b.getInt("request-alignment") > 1, t.direct);
      b.start();
      const q = b.getQueue(0)!;
      const buf = alignedBuffer(b, 4096);
      q.read(0, buf, "r");
      q.write(0, buf, "w");
      const done = reap(q, 2);
      assert.equal(done.find((c) => c.userData === "r")!.ret, 0);
      assert.equal(done.find((c) => c.userData === "w")!.ret, -9, "write through an O_RDONLY fd is EBADF");
    }
    assert.equal(fdRefersTo(ro, t.path), false);
    forgetFd(ro);
    // Read-write fd while read-only=true was asked for.
    const rw = openTarget(t, false);
    {
      using b = Blkio.create("io_uring");
      b.setBool("read-only", true);
      b.setBool("direct", !t.direct);
      b.setInt("fd", rw);
      b.connect();
      assert.equal(b.getBool("read-only"), false);
      assert.equal(b.getBool("direct"), t.direct);
    }
    assert.equal(fdRefersTo(rw, t.path), false);
    forgetFd(rw);
  });
}

test("fd: path and fd both set is EINVAL at connect, and the fd stays the caller's", () => {
  const t = TARGETS[0];
  const fd = openTarget(t);
  try {
    using b = Blkio.create("io_uring");
    b.setInt("fd", fd);
    b.setStr("path", t.path);
    assertErrno(() => b.connect(), "EINVAL", /path and fd/);
    assert.equal(b.state, "created");
    assert.ok(fdRefersTo(fd, t.path), "a failed connect does not close the fd");
    // Clearing one of them makes connect work; clearing fd leaves it with the caller.
    b.setInt("fd", -1);
    b.connect();
    assert.notEqual(b.getInt("fd"), fd);
  } finally {
    closeSync(fd);
  }
});

test("fd: neither path nor fd is EINVAL at connect", () => {
  using b = Blkio.create("io_uring");
  assertErrno(() => b.connect(), "EINVAL", /path and fd/);
  b.setStr("path", "");
  b.setInt("fd", -1);
  assertErrno(() => b.connect(), "EINVAL", /One of path and fd must be set/);
  assert.equal(b.state, "created");
});

test("fd: a closed fd fails connect with a BlkioError", () => {
  const t = TARGETS[0];
  const fd = openTarget(t);
  closeSync(fd);
  // Another thread of the runtime may have reused the number; only test while it is free.
  assert.ok(!existsSync(`/proc/self/fd/${fd}`) || !fdRefersTo(fd, t.path));
  using b = Blkio.create("io_uring");
  if (existsSync(`/proc/self/fd/${fd}`)) {
    b.setInt("fd", 1 << 20); // above any RLIMIT_NOFILE default, so never open
  } else {
    b.setInt("fd", fd);
  }
  const e = assertErrno(() => b.connect(), "EBADF", /fd/);
  assert.ok(e.errno === 9);
  assert.equal(b.state, "created");
});

test("fd: an fd that is neither a regular file nor a block device is EINVAL and stays open", () => {
  const dir = join(scratchDir(), "a-directory");
  mkdirSync(dir);
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    using b = Blkio.create("io_uring");
    b.setInt("fd", fd);
    assertErrno(() => b.connect(), "EINVAL", /regular file|block device/);
    assert.equal(b.state, "created");
    assert.ok(fdRefersTo(fd, dir));
  } finally {
    closeSync(fd);
  }
});

test("fd: negative fds other than -1 and non-integers", () => {
  using b = Blkio.create("io_uring");
  assertErrno(() => b.setInt("fd", 1.5), "EINVAL");
  assertErrno(() => b.setInt("fd", "3" as unknown as number), "EINVAL");
  b.setInt("fd", -5);
  assertErrno(() => b.connect(), "EBADF");
});

for (const t of TARGETS) {
  test(`fd: with path, fd reads the library's own fd after connect, close-on-exec [${t.name}]`, () => {
    const b = Blkio.create("io_uring");
    b.setStr("path", t.path);
    b.setBool("direct", t.direct);
    assert.equal(b.getInt("fd"), -1);
    b.connect();
    const fd = b.getInt("fd");
    assert.ok(fd >= 0);
    assert.equal(b.getStr("fd"), String(fd));
    assert.ok(fdRefersTo(fd, t.path), `fd ${fd} is ${t.path}`);
    const flags = fdFlags(fd);
    assert.ok((flags & O_CLOEXEC) !== 0, `FD_CLOEXEC in flags 0${flags.toString(8)}`);
    assert.equal(flags & 3, 2, "O_RDWR");
    assert.equal((flags & constants.O_DIRECT) !== 0, t.direct);
    b.start();
    assert.equal(b.getInt("fd"), fd);
    b.destroy();
    assert.equal(fdRefersTo(fd, t.path), false, "destroy closes the library's fd");
  });
}

test("fd: the adapter reports the machine's architecture as uname -m does, so O_DIRECT gets its value", () => {
  assert.ok(native !== null, "native libraries load in the test environment");
  const uname = execFileSync("uname", ["-m"], { encoding: "utf8" }).trim();
  assert.equal(native.arch, uname);
  assert.notEqual(oDirectFor(native.arch), null, `O_DIRECT known on ${uname}`);
});

// A FIFO opened for reading blocks open() until a writer comes, so the library refuses FIFOs
// before it opens. Not by opening with O_NONBLOCK: io_uring honours the flag (a request that cannot
// go on at once fails with EAGAIN) and open itself changes (EAGAIN on a leased file).
for (const t of TARGETS) {
  test(`connect by path: the fd the library opened has no O_NONBLOCK [${t.name}]`, () => {
    using b = Blkio.create("io_uring");
    b.setStr("path", t.path);
    b.setBool("direct", t.direct);
    b.connect();
    assert.equal(fdFlags(b.getInt("fd")) & 0o4000, 0);
  });
}

// Opening the target takes the last free fd: what the library opens next (sysfs files, the
// IOPOLL probe's ring) fails with EMFILE, and connect must say so. It said EINVAL "Cannot read the
// block device's queue limits" for a block device, and guessed a file's O_DIRECT alignment.
const PRLIMIT = spawnSync("prlimit", ["--version"]).status === 0 ? null : "no prlimit (util-linux)";
for (const t of TARGETS) {
  test(
    ...skipIf(`connect with one fd to spare: EMFILE, not a wrong guess or EINVAL [${t.name}]`, PRLIMIT),
    () => {
      const seen = runChild("_connect_emfile.ts", [t.path, String(t.direct)], ["prlimit", "--nofile=256"]);
      assert.ok(seen.held > 100, `the child filled only ${seen.held} fds`);
      assert.equal(seen.code, "EMFILE", JSON.stringify(seen));
      // It names the target, not only the sysfs file or probe that ran short.
      assert.match(
        seen.message,
        new RegExp(`^Cannot inspect ${JSON.stringify(t.path).replaceAll("/", "\\/")}: `),
      );
    },
  );
}

// A start() whose ring for a later queue fails (the fd table full) must close the rings it made
// for the queues before: they are no one's, and nothing would close them later.
test(...skipIf("start with room for a few rings of 16: EMFILE, the rings made are closed", PRLIMIT), () => {
  const seen = runChild("_start_emfile.ts", [TARGETS[0].path], ["prlimit", "--nofile=256"]);
  assert.ok(seen.held > 100, `the child filled only ${seen.held} fds`);
  assert.equal(seen.code, "EMFILE", JSON.stringify(seen));
  assert.deepEqual(seen.left, [], `fds the failed start() left open: ${JSON.stringify(seen.left)}`);
  assert.equal(seen.retried, "started with 16 queues");
});

test("connect: a FIFO opened read-only fails at once with EINVAL instead of waiting for a writer", () => {
  const fifo = join(scratchDir(), "fifo");
  execFileSync("mkfifo", [fifo]);
  // In a child: before the fix connect() blocked for good, which would hang this runner.
  const code = `import { Blkio } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
    const b = Blkio.create("io_uring");
    b.setStr("path", ${JSON.stringify(fifo)});
    b.setBool("read-only", true);
    try { b.connect(); console.log("connected"); } catch (e) { console.log(e.code, e.message); }`;
  const script = join(scratchDir(), "fifo.mjs");
  writeFileSync(script, code);
  const args = RUNTIME === "deno" ? ["run", "-A", script] : [script];
  const r = spawnSync(process.execPath, args, { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.signal, null, `the child hung (killed by ${r.signal})`);
  assert.match(r.stdout, /^EINVAL .*must be a block device or a regular file/, r.stderr);
});

test("fd: cleanup scratch targets", () => cleanupAll());
