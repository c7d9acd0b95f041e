// libblkio tests/driver-not-found.c, error-msg.c, driver-name.c, started.c, capacity.c and
// block-limits.c, plus checks of the limit values against sysfs.
import { test } from "node:test";
import assert from "./_assert.ts";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { Blkio, BlkioError, DRIVER_NAMES } from "../mod.ts";
import {
  assertErrno,
  cleanupAll,
  connectTo,
  runChild,
  scratchDir,
  type Target,
  targets,
} from "./_helpers.ts";

const TARGETS = targets();

const INT_LIMITS = [
  "buf-alignment",
  "discard-alignment",
  "discard-alignment-offset",
  "max-segment-len",
  "max-segments",
  "max-transfer",
  "optimal-buf-alignment",
  "optimal-io-alignment",
  "optimal-io-size",
  "request-alignment",
] as const;
const UINT64_LIMITS = ["max-discard-len", "max-write-zeroes-len"] as const;

/** An instance of `t` with path and direct set, not connected. */
function createFor(t: Target): Blkio {
  const b = Blkio.create("io_uring");
  b.setStr("path", t.path);
  b.setBool("direct", t.direct);
  return b;
}

/** The sysfs queue directory of the disk holding `dev` (a partition's parent disk). */
function sysQueueDir(dev: bigint): string | null {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const dir = `/sys/dev/block/${major}:${minor}`;
  try {
    statSync(`${dir}/partition`);
    return `${dir}/../queue`;
  } catch {
    // not a partition
  }
  try {
    statSync(`${dir}/queue`);
    return `${dir}/queue`;
  } catch {
    return null;
  }
}

function sysNum(path: string): number {
  return Number(readFileSync(path, "utf8").trim());
}

function pageSize(): number {
  return Number(execFileSync("getconf", ["PAGESIZE"], { encoding: "utf8" }).trim());
}

// ---- driver-not-found ----------------------------------------------------------------------

test('driver-not-found: create("foo") fails with ENOENT naming the driver', () => {
  const e = assertErrno(() => Blkio.create("foo"), "ENOENT");
  assert.equal(e.errno, 2);
  assert.match(e.message, /foo/);
  assert.match(e.message, /driver/i);
});

test("driver-not-found: names that only look like a driver are unknown", () => {
  for (const name of ["", "IO_URING", "io-uring", "io_uring ", "toString", "__proto__", "constructor"]) {
    assertErrno(() => Blkio.create(name), "ENOENT");
  }
  assert.ok(DRIVER_NAMES.includes("io_uring"));
  for (const name of DRIVER_NAMES) Blkio.create(name).destroy();
});

test("driver-not-found: a non-string driver name is EINVAL", () => {
  for (const v of [undefined, null, 1, {}, Symbol("io_uring")]) {
    assertErrno(() => Blkio.create(v as unknown as string), "EINVAL");
  }
});

// ---- error-msg -----------------------------------------------------------------------------

test("error-msg: every failure is a BlkioError with code, errno and a message naming the problem", () => {
  using b = Blkio.create("io_uring");
  const cases: [() => unknown, string, RegExp][] = [
    [() => Blkio.create("foo"), "ENOENT", /foo/],
    [() => b.getInt("no-such-property"), "ENOENT", /no-such-property/],
    [() => b.getInt("direct"), "ENOTTY", /direct/],
    [() => b.setStr("driver", "x"), "EACCES", /driver/],
    [() => b.getUint64("capacity"), "ENODEV", /connected/i],
    [() => b.start(), "ENODEV", /connected/i],
    [() => b.setStr("direct", "yes"), "EINVAL", /yes/],
    [() => b.connect(), "EINVAL", /path/],
  ];
  for (const [fn, code, re] of cases) {
    const e = assertErrno(fn, code, re);
    assert.ok(e instanceof Error);
    assert.equal(e.name, "BlkioError");
    assert.ok(e.errno > 0);
    assert.equal(typeof e.stack, "string");
  }
});

test("error-msg: errors are per-throw, with no sticky global state", () => {
  using b = Blkio.create("io_uring");
  const first = assertErrno(() => b.getInt("first-unknown"), "ENOENT");
  const second = assertErrno(() => b.getInt("second-unknown"), "ENOENT");
  assert.notEqual(first, second);
  assert.match(first.message, /first-unknown/);
  assert.doesNotMatch(first.message, /second-unknown/);
  // A success after a failure neither throws nor changes the earlier error.
  assert.equal(b.getStr("driver"), "io_uring");
  assert.match(first.message, /first-unknown/);
  // A failure on one instance leaves another untouched.
  using other = Blkio.create("io_uring");
  assert.equal(other.getInt("num-queues"), 1);
  assert.equal(other.state, "created");
});

// ---- driver-name ---------------------------------------------------------------------------

test("driver-name: the driver property equals the create() argument and cannot be set", () => {
  using b = Blkio.create("io_uring");
  assert.equal(b.driver, "io_uring");
  assert.equal(b.getStr("driver"), "io_uring");
  assertErrno(() => b.setStr("driver", "foo"), "EACCES");
  assertErrno(() => b.setStr("driver", "io_uring"), "EACCES");
  assert.equal(b.getStr("driver"), "io_uring");
  assert.equal(b.driver, "io_uring");
});

for (const t of TARGETS) {
  test(`driver-name: unchanged and read-only after connect and start [${t.name}]`, () => {
    using b = connectTo(t);
    assertErrno(() => b.setStr("driver", "foo"), "EACCES");
    b.start();
    assertErrno(() => b.setStr("driver", "foo"), "EACCES");
    assert.equal(b.getStr("driver"), "io_uring");
  });
}

// ---- started -------------------------------------------------------------------------------

for (const t of TARGETS) {
  test(`started: connect and start are idempotent; connect after start is EBUSY [${t.name}]`, () => {
    const b = createFor(t);
    assert.equal(b.state, "created");
    b.connect();
    assert.equal(b.state, "connected");
    b.connect();
    assert.equal(b.state, "connected");
    b.start();
    assert.equal(b.state, "started");
    b.start();
    assert.equal(b.state, "started");
    assertErrno(() => b.connect(), "EBUSY");
    assert.equal(b.state, "started");
    assert.ok(b.getQueue(0) !== null);
    assert.equal(b.destroyed, false);
    b.destroy();
    assert.equal(b.destroyed, true);
    b.destroy();
    assert.equal(b.destroyed, true);
  });
}

test("started: start before connect is ENODEV and leaves the instance usable", () => {
  const t = TARGETS[0];
  const b = createFor(t);
  assertErrno(() => b.start(), "ENODEV", /connected/i);
  assert.equal(b.state, "created");
  b.connect();
  b.start();
  assert.equal(b.state, "started");
  b.destroy();
});

test("started: a failed connect leaves the instance in created state", () => {
  using b = Blkio.create("io_uring");
  b.setStr("path", "/nonexistent/blkio-no-such-file");
  assertErrno(() => b.connect(), "ENOENT", /blkio-no-such-file/);
  assert.equal(b.state, "created");
  b.setStr("path", TARGETS[0].path);
  b.connect();
  assert.equal(b.state, "connected");
});

test("started: destroy is idempotent in every state", () => {
  const t = TARGETS[0];
  const created = createFor(t);
  created.destroy();
  created.destroy();
  const connected = connectTo(t);
  connected.destroy();
  connected.destroy();
  const started = connectTo(t);
  started.start();
  started.destroy();
  started.destroy();
  started[Symbol.dispose]();
});

/** Arguments that would be valid for each Blkio method on a live instance. */
function argsFor(name: string, region: unknown): unknown[] {
  switch (name) {
    case "getBool":
    case "getInt":
    case "getUint64":
    case "getStr":
      return [
        name === "getBool"
          ? "direct"
          : name === "getUint64"
          ? "capacity"
          : name === "getInt"
          ? "num-queues"
          : "path",
      ];
    case "setBool":
      return ["direct", false];
    case "setInt":
      return ["num-queues", 1];
    case "setUint64":
      return ["max-mem-regions", 1n];
    case "setStr":
      return ["path", ""];
    case "allocMemRegion":
      return [4096];
    case "freeMemRegion":
    case "mapMemRegion":
    case "unmapMemRegion":
      return [region];
    case "getQueue":
    case "getPollQueue":
    case "removeQueue":
    case "removePollQueue":
      return [0];
    default:
      return [];
  }
}

for (const t of TARGETS) {
  test(`started: every call on a destroyed instance throws EBADF [${t.name}]`, () => {
    const b = connectTo(t);
    b.start();
    const q = b.getQueue(0)!;
    const region = b.allocMemRegion(4096);
    b.mapMemRegion(region);
    b.destroy();
    const methods = Object.getOwnPropertyNames(Blkio.prototype).filter((n) =>
      n !== "constructor" && n !== "destroy" &&
      typeof Object.getOwnPropertyDescriptor(Blkio.prototype, n)?.value === "function"
    );
    assert.ok(methods.length >= 20, `only ${methods.length} methods found`);
    for (const name of methods) {
      const fn = (b as unknown as Record<string, (...a: unknown[]) => unknown>)[name];
      const e = assertErrno(() => fn.apply(b, argsFor(name, region)), "EBADF");
      assert.match(e.message, /destroyed/, name);
    }
    // Its queues are gone too.
    assertErrno(() => q.read(0, new Uint8Array(512)), "EBADF");
    assertErrno(() => q.flush(), "EBADF");
    assertErrno(() => q.doIo([], 0), "EBADF");
    assertErrno(() => q.completionFd, "EBADF");
    // The plain getters still describe it.
    assert.equal(b.driver, "io_uring");
    assert.equal(b.destroyed, true);
    b.destroy();
  });
}

test("started: `using` destroys the instance at the end of the block", () => {
  const t = TARGETS[0];
  let outer: Blkio;
  {
    using b = connectTo(t);
    b.start();
    outer = b;
    assert.equal(b.destroyed, false);
  }
  assert.equal(outer.destroyed, true);
  assertErrno(() => outer.getQueue(0), "EBADF");
});

test("started: `using` destroys the instance when the block throws", () => {
  let outer: Blkio | undefined;
  assert.throws(() => {
    using b = Blkio.create("io_uring");
    outer = b;
    throw new Error("boom");
  }, /boom/);
  assert.equal(outer!.destroyed, true);
});

// ---- capacity ------------------------------------------------------------------------------

for (const t of TARGETS) {
  test(`capacity: ENODEV before connect, EACCES on set, the size after connect [${t.name}]`, () => {
    const b = createFor(t);
    assertErrno(() => b.getUint64("capacity"), "ENODEV");
    assertErrno(() => b.getStr("capacity"), "ENODEV");
    assertErrno(() => b.setUint64("capacity", 4096n), "EACCES");
    assertErrno(() => b.setStr("capacity", "4096"), "EACCES");
    b.connect();
    assertErrno(() => b.setUint64("capacity", 4096n), "EACCES");
    assertErrno(() => b.setStr("capacity", "4096"), "EACCES");
    assert.equal(b.getUint64("capacity"), BigInt(t.size));
    if (t.isBlockDevice) {
      const size = execFileSync("blockdev", ["--getsize64", t.path], { encoding: "utf8" }).trim();
      assert.equal(b.getUint64("capacity"), BigInt(size));
    } else {
      assert.equal(b.getUint64("capacity"), BigInt(statSync(t.path).size));
    }
    assert.equal(b.getStr("capacity"), String(t.size));
    b.start();
    assertErrno(() => b.setUint64("capacity", 4096n), "EACCES");
    assert.equal(b.getUint64("capacity"), BigInt(t.size));
    b.destroy();
  });
}

// ---- block-limits --------------------------------------------------------------------------

for (const t of TARGETS) {
  test(`block-limits: ENODEV before connect, EACCES on set, readable after connect [${t.name}]`, () => {
    const b = createFor(t);
    for (const name of INT_LIMITS) {
      assertErrno(() => b.getInt(name), "ENODEV", undefined);
      assertErrno(() => b.setInt(name, 512), "EACCES");
      assertErrno(() => b.setStr(name, "512"), "EACCES");
    }
    for (const name of UINT64_LIMITS) {
      assertErrno(() => b.getUint64(name), "ENODEV");
      assertErrno(() => b.setUint64(name, 512n), "EACCES");
      assertErrno(() => b.setStr(name, "512"), "EACCES");
    }
    b.connect();
    for (const state of ["connected", "started"]) {
      for (const name of INT_LIMITS) {
        const v = b.getInt(name);
        assert.ok(Number.isInteger(v) && v >= 0, `${name} = ${v} (${state})`);
        assertErrno(() => b.setInt(name, v), "EACCES");
        assert.equal(b.getStr(name), String(v));
      }
      for (const name of UINT64_LIMITS) {
        const v = b.getUint64(name);
        assert.equal(typeof v, "bigint");
        assertErrno(() => b.setUint64(name, v), "EACCES");
      }
      if (state === "connected") b.start();
    }
    b.destroy();
  });
}

for (const t of TARGETS) {
  test(`block-limits: values are consistent with each other [${t.name}]`, () => {
    using b = connectTo(t);
    const ra = b.getInt("request-alignment");
    const ba = b.getInt("buf-alignment");
    assert.ok(ra >= 1 && (ra & (ra - 1)) === 0, `request-alignment ${ra} is a power of two`);
    assert.equal(ba, ra, "io_uring: buf-alignment = request-alignment");
    assert.equal(b.getUint64("mem-region-alignment"), BigInt(ba));
    assert.equal(
      b.getInt("optimal-buf-alignment"),
      Math.max(pageSize(), ba),
      "the page size, or buf-alignment if larger",
    );
    const oia = b.getInt("optimal-io-alignment");
    assert.equal(oia % ra, 0, `optimal-io-alignment ${oia} is a multiple of request-alignment ${ra}`);
    const da = b.getInt("discard-alignment");
    assert.equal(da % ra, 0, `discard-alignment ${da} is a multiple of request-alignment ${ra}`);
    assert.equal(
      b.getInt("max-segments"),
      Number(execFileSync("getconf", ["IOV_MAX"], { encoding: "utf8" })),
    );
    assert.equal(b.getInt("max-segment-len"), 0);
    assert.equal(b.getInt("max-transfer"), 0);
    assert.equal(b.getUint64("max-discard-len"), 0n);
    assert.equal(b.getUint64("max-write-zeroes-len"), 0n);
    assert.equal(b.getBool("direct"), t.direct);
  });
}

for (const t of TARGETS) {
  test(`block-limits: values match the target (sysfs, statfs) [${t.name}]`, () => {
    using b = connectTo(t);
    if (t.isBlockDevice) {
      const q = `/sys/block/${basename(t.path)}/queue`;
      const logical = sysNum(`${q}/logical_block_size`);
      const granularity = sysNum(`${q}/discard_granularity`);
      const alignment = sysNum(`/sys/block/${basename(t.path)}/discard_alignment`);
      const writeBack = readFileSync(`${q}/write_cache`, "utf8").trim() === "write back";
      assert.equal(b.getInt("request-alignment"), t.direct ? logical : 1);
      assert.equal(b.getInt("optimal-io-alignment"), sysNum(`${q}/physical_block_size`));
      assert.equal(b.getInt("optimal-io-size"), sysNum(`${q}/optimal_io_size`));
      assert.equal(b.getInt("discard-alignment"), granularity);
      assert.equal(b.getInt("discard-alignment-offset"), alignment === granularity ? 0 : alignment);
      assert.equal(b.getBool("supports-fua-natively"), sysNum(`${q}/fua`) !== 0);
      assert.equal(b.getBool("can-grow"), false);
      assert.equal(b.getBool("flush-needed"), writeBack || !t.direct);
    } else {
      const q = sysQueueDir(statSync(t.path, { bigint: true }).dev);
      const logical = q === null ? pageSize() : sysNum(`${q}/logical_block_size`);
      const ra = t.direct ? logical : 1;
      const fsBlock = Number(execFileSync("stat", ["-f", "-c", "%s", t.path], { encoding: "utf8" }).trim());
      assert.equal(b.getInt("request-alignment"), ra);
      assert.equal(b.getInt("optimal-io-alignment"), Math.max(fsBlock, ra));
      assert.equal(b.getInt("optimal-io-size"), 0);
      assert.equal(b.getInt("discard-alignment"), ra);
      assert.equal(b.getInt("discard-alignment-offset"), 0);
      assert.equal(b.getBool("supports-fua-natively"), q === null ? false : sysNum(`${q}/fua`) !== 0);
      assert.equal(b.getBool("can-grow"), true);
      assert.equal(b.getBool("flush-needed"), true);
    }
  });
}

test("block-limits: can-grow and flush-needed read their stored defaults before connect", () => {
  using b = createFor(TARGETS[0]);
  assert.equal(b.getBool("can-grow"), false);
  assert.equal(b.getBool("flush-needed"), true);
  b.connect();
  assert.equal(b.getBool("can-grow"), true);
  assert.equal(b.getBool("flush-needed"), true);
});

test("lifecycle: BlkioError is what the lifecycle throws, never a TypeError", () => {
  using b = Blkio.create("io_uring");
  for (
    const fn of [
      () => b.getInt(undefined as unknown as string),
      () => b.setStr("path", 5 as unknown as string),
    ]
  ) {
    try {
      fn();
      assert.fail("expected a throw");
    } catch (e) {
      assert.ok(e instanceof BlkioError, String(e));
      assert.equal(e.code, "EINVAL");
    }
  }
});

/** This process's fds open on a file under /sys or /proc (what connect reads limits from). */
function sysAndProcFds(): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith("/sys/") || target.startsWith("/proc/")) out.add(`${fd} ${target}`);
    } catch {
      // the fd readdir itself used, closed by now
    }
  }
  return out;
}

// connect reads the device's queue limits from sysfs (and /proc); each file it opens for that is
// closed again: a few fds leaked by every connect run a long-lived process out of them.
for (const t of TARGETS) {
  test(`lifecycle: connect and start leave no sysfs or procfs file open [${t.name}]`, () => {
    const before = sysAndProcFds();
    {
      using b = connectTo(t);
      b.start();
      const left = [...sysAndProcFds()].filter((f) => !before.has(f));
      assert.deepEqual(left, [], "files connect read are still open");
    }
  });
}

// Caller code that runs inside doIo (a setter of an `out` entry) and destroys the instance or
// removes the queue: the driver's reap went on over the unmapped ring (SIGSEGV on both runtimes).
// Another doIo of the same queue from there handed every completion out twice (review,
// helper-76). Both are now EBUSY, and each request completes once.
for (const what of ["destroy", "remove", "nested"]) {
  test(`lifecycle: ${what} from code running inside doIo is refused (EBUSY): no crash, each completion once`, () => {
    const r = runChild("_reentrant_child.ts", [join(scratchDir(), "reentrant.img"), what]);
    assert.equal(r.outer, 8);
    assert.deepEqual([...r.seen].sort(), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.match(String(r.inner), /EBUSY|inside doIo|already running/);
  });
}

test("lifecycle: cleanup scratch targets", () => cleanupAll());
