// Memory safety of I/O buffers: what is refused (EINVAL, never a crash), and that buffers stay
// alive and in place while the kernel uses them, whatever the garbage collector does.
import { test } from "node:test";
import assert from "./_assert.ts";
import { Blkio, type Completion, type Queue } from "../mod.ts";
import { assertErrno, cleanupAll, pread, pwrite, reap, RUNTIME, startOn, targets } from "./_helpers.ts";
import { churn, collect, fullGc } from "./_gc.ts";

const TARGETS = targets();
const FILE = TARGETS[0];

function pattern(len: number, seed: number): Uint8Array {
  return new Uint8Array(len).map((_, i) => (i * 13 + seed) & 0xff);
}

// --- refused buffers ---

const NOT_U8: [string, unknown][] = [
  ["string", "abcd"],
  ["number", 4096],
  ["ArrayBuffer", new ArrayBuffer(16)],
  ["DataView", new DataView(new ArrayBuffer(16))],
  ["Uint16Array", new Uint16Array(8)],
  ["Int8Array", new Int8Array(16)],
  ["Uint8ClampedArray", new Uint8ClampedArray(16)],
  ["null", null],
  ["undefined", undefined],
  ["plain object", { buffer: new ArrayBuffer(16), byteOffset: 0, byteLength: 16 }],
  ["array of numbers", [1, 2, 3]],
];

function detached(): Uint8Array {
  const ab = new ArrayBuffer(64);
  const u = new Uint8Array(ab, 16, 16);
  ab.transfer();
  return u;
}

function resizable(): Uint8Array {
  const ab = new ArrayBuffer(64, { maxByteLength: 4096 });
  return new Uint8Array(ab, 0, 64);
}

function shared(): Uint8Array {
  return new Uint8Array(new SharedArrayBuffer(64));
}

const BAD_BACKING: [string, () => Uint8Array][] = [
  ["detached", detached],
  ["resizable", resizable],
  ["length-tracking over resizable", () => new Uint8Array(new ArrayBuffer(64, { maxByteLength: 4096 }))],
  ["SharedArrayBuffer", shared],
];

/** Asserts that nothing was queued: no completion ever comes, min 1 is EINVAL. */
function assertNothingQueued(q: Queue): void {
  const out: Completion[] = [];
  assert.equal(q.doIo(out, 0), 0);
  assertErrno(() => q.doIo(out, 1, 1), "EINVAL");
}

test("buffers: non-Uint8Array buffers → EINVAL from every request kind", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  for (const [what, v] of NOT_U8) {
    const buf = v as Uint8Array;
    assertErrno(() => q.read(0, buf), "EINVAL", /Uint8Array/);
    assertErrno(() => q.write(0, buf), "EINVAL", /Uint8Array/);
    assertErrno(() => q.readv(0, [buf]), "EINVAL", /Uint8Array/);
    assertErrno(() => q.writev(0, [new Uint8Array(8), buf]), "EINVAL", /Uint8Array/);
    assert.ok(what);
  }
  assertNothingQueued(q);
});

test("buffers: detached, resizable and shared backing stores → EINVAL", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  for (const [what, make] of BAD_BACKING) {
    assertErrno(() => q.read(0, make()), "EINVAL", undefined);
    assertErrno(() => q.write(0, make()), "EINVAL", undefined);
    assertErrno(() => q.readv(0, [new Uint8Array(8), make()]), "EINVAL", undefined);
    assertErrno(() => q.writev(0, [make()]), "EINVAL", undefined);
    assert.ok(what);
  }
  // The detached view reports length 0: refusing it must not depend on its length.
  const d = detached();
  assert.equal(d.byteLength, 0);
  assertErrno(() => q.read(0, d), "EINVAL", /detached/);
  assertErrno(() => q.read(0, resizable()), "EINVAL", /resizable/);
  assertErrno(() => q.read(0, shared()), "EINVAL", /Shared/);
  assertNothingQueued(q);
});

test("buffers: a buffer detached after submission is refused no later than the next request", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const ab = new ArrayBuffer(4096);
  const u = new Uint8Array(ab);
  q.read(0, u, "first");
  const [c] = reap(q, 1);
  assert.equal(c.ret, 0);
  ab.transfer();
  assertErrno(() => q.read(0, u), "EINVAL", /detached/);
  assertNothingQueued(q);
});

const BAD_OFFSETS: unknown[] = [
  -1,
  -0.5,
  NaN,
  1.5,
  Infinity,
  -Infinity,
  2 ** 64,
  -1n,
  2n ** 64n,
  "0",
  "4096",
  null,
  undefined,
  {},
  [0],
  true,
];

test("buffers: bad offsets (number and bigint) → EINVAL", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const buf = new Uint8Array(512);
  for (const off of BAD_OFFSETS) {
    const o = off as number;
    assertErrno(() => q.read(o, buf), "EINVAL");
    assertErrno(() => q.write(o, buf), "EINVAL");
    assertErrno(() => q.readv(o, [buf]), "EINVAL");
    assertErrno(() => q.writev(o, [buf]), "EINVAL");
    assertErrno(() => q.writeZeroes(o, 512), "EINVAL");
    assertErrno(() => q.discard(o, 512), "EINVAL");
    assertErrno(() => q.writeZeroes(0, o), "EINVAL");
    assertErrno(() => q.discard(0, o), "EINVAL");
  }
  assertNothingQueued(q);
  // The largest accepted values still work as values (the kernel says what it thinks of them).
  q.read(2 ** 53 - 1, new Uint8Array(1), "max number");
  q.read(2n ** 53n - 1n, new Uint8Array(1), "max bigint");
  q.read(-0, new Uint8Array(1), "minus zero");
  const got = reap(q, 3);
  assert.deepEqual(got.map((c) => c.userData).sort(), ["max bigint", "max number", "minus zero"]);
  // 2n ** 53n - 1n is that number exactly, not one of the values beyond 2^53 that complete with
  // EINVAL: the same request as the number, with the same result.
  const [num, big] = ["max number", "max bigint"].map((ud) => got.find((c) => c.userData === ud)!);
  assert.deepEqual([big.ret, big.errorMsg], [num.ret, num.errorMsg]);
});

// libblkio takes any uint64: one of 2^53 or more is a usable call that a JS number cannot carry
// exactly, so the request fails in its completion (api.md: only unusable calls throw).
test("buffers: offsets and lengths from 2^53 to 2^64 - 1 complete with EINVAL", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const buf = new Uint8Array(512);
  const names: string[] = [];
  for (const big of [2 ** 53, 2 ** 60, 2n ** 53n, 2n ** 64n - 1n]) {
    const o = big as number;
    const submit: [string, () => void][] = [
      ["read", () => q.read(o, buf, `read ${big}`)],
      ["write", () => q.write(o, buf, `write ${big}`)],
      ["readv", () => q.readv(o, [buf], `readv ${big}`)],
      ["writev", () => q.writev(o, [buf], `writev ${big}`)],
      ["writeZeroes start", () => q.writeZeroes(o, 512, `writeZeroes start ${big}`)],
      ["writeZeroes len", () => q.writeZeroes(0, o, `writeZeroes len ${big}`)],
      ["discard start", () => q.discard(o, 512, `discard start ${big}`)],
      ["discard len", () => q.discard(0, o, `discard len ${big}`)],
    ];
    for (const [what, fn] of submit) {
      fn();
      names.push(`${what} ${big}`);
    }
  }
  const got = reap(q, names.length);
  assert.deepEqual(got.map((c) => c.userData).sort(), [...names].sort());
  for (const c of got) {
    assert.equal(c.ret, -22, `${c.userData}`);
    assert.match(c.errorMsg ?? "", /below 2\^53/);
  }
});

test("buffers: bad flags → EINVAL thrown, not queued", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  for (const f of ["1", 1.5, NaN, 2 ** 32, -(2 ** 31) - 1, 1n, null, {}]) {
    assertErrno(() => q.read(0, new Uint8Array(8), undefined, f as number), "EINVAL");
    assertErrno(() => q.flush(undefined, f as number), "EINVAL");
  }
  assertNothingQueued(q);
});

test("buffers: invalid iovecs arrays → EINVAL", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const ok = new Uint8Array(512);
  // deno-lint-ignore no-sparse-arrays
  const sparse = [ok, , ok] as Uint8Array[];
  const bad: unknown[] = [
    null,
    undefined,
    "abc",
    42,
    ok, // a single buffer, not an array of them
    { length: 1, 0: ok }, // array-like is not an array
    new Set([ok]),
    [ok, "x"],
    [ok, null],
    [ok, new Uint16Array(8)],
    [ok, new ArrayBuffer(8)],
    sparse,
    [detached()],
    [ok, shared()],
    [[ok]],
  ];
  for (const iov of bad) {
    assertErrno(() => q.readv(0, iov as Uint8Array[]), "EINVAL");
    assertErrno(() => q.writev(0, iov as Uint8Array[]), "EINVAL");
  }
  assertNothingQueued(q);
});

test("buffers: an iovecs array changed after submission does not change the request", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  pwrite(FILE.path, 0, pattern(1024, 1));
  const a = new Uint8Array(512), c = new Uint8Array(512);
  const iov: Uint8Array[] = [a, c];
  q.readv(0, iov, "rv");
  iov[0] = "garbage" as unknown as Uint8Array;
  iov.length = 0;
  const [done] = reap(q, 1);
  assert.equal(done.ret, 0);
  assert.deepEqual(a, pattern(1024, 1).subarray(0, 512));
  assert.deepEqual(c, pattern(1024, 1).subarray(512));
});

test("buffers: a Uint8Array subclass with lying getters cannot make the kernel overrun memory", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const size = 4096;
  pwrite(FILE.path, 0, new Uint8Array(size).fill(0x77));
  class Liar extends Uint8Array {
    override get byteLength(): number {
      return 1 << 20;
    }
    override get byteOffset(): number {
      return 1 << 20;
    }
    override get buffer(): ArrayBuffer {
      return new ArrayBuffer(size);
    }
  }
  const backing = new ArrayBuffer(size * 3);
  const guardBefore = new Uint8Array(backing, 0, size);
  const guardAfter = new Uint8Array(backing, size * 2, size);
  const liar = new Liar(backing, size, 16);
  q.read(0, liar, "liar");
  const [c] = reap(q, 1);
  // Either refused up front or done on the real 16 bytes, never outside them.
  assert.equal(c.ret, 0, `${c.ret} ${c.errorMsg}`);
  assert.ok(new Uint8Array(backing, size, 16).every((x) => x === 0x77));
  assert.ok(new Uint8Array(backing, size + 16, size - 16).every((x) => x === 0));
  assert.ok(guardBefore.every((x) => x === 0) && guardAfter.every((x) => x === 0));

  // The same with an own property shadowing the prototype getter on a plain Uint8Array.
  const plain = new Uint8Array(backing, size, 16);
  Object.defineProperty(plain, "byteLength", { get: () => 1 << 20 });
  plain.fill(0);
  q.readv(0, [plain], "shadowed");
  const [d] = reap(q, 1);
  assert.equal(d.ret, 0, `${d.ret} ${d.errorMsg}`);
  assert.ok(new Uint8Array(backing, size, 16).every((x) => x === 0x77));
  assert.ok(new Uint8Array(backing, size + 16, size - 16).every((x) => x === 0));
  assert.ok(guardAfter.every((x) => x === 0));

  // A writev of it writes its real 16 bytes and completes 0: the length the request asks for is
  // the views' own, not the getter's (taken from the getter, the write fell short of it: EIO).
  plain.fill(0x55);
  q.writev(8192, [plain], "shadowed writev");
  const [w] = reap(q, 1);
  assert.equal(w.ret, 0, `${w.ret} ${w.errorMsg}`);
  assert.deepEqual(pread(FILE.path, 8192, 32), new Uint8Array(32).fill(0x55, 0, 16));
});

// --- GC safety ---

test("buffers: the garbage collector ran (sanity check of the GC helper)", async () => {
  assert.ok(await collect(), `no garbage collection observed on ${RUNTIME}`);
});

/** `n` instances made and dropped without destroy() (in a frame of their own, gone on return). */
function droppedInstances(n: number): WeakRef<Blkio>[] {
  const refs: WeakRef<Blkio>[] = [];
  for (let i = 0; i < n; i++) {
    const b = Blkio.create("io_uring");
    b.setStr("path", FILE.path);
    refs.push(new WeakRef(b));
  }
  return refs;
}

test("buffers: an instance dropped without destroy() can still be collected", async () => {
  // Instances know of each other (a region of one may be mapped by another), but only weakly:
  // a program that forgets destroy() on an instance that never opened anything must not leak it.
  const refs = droppedInstances(4);
  for (let i = 0; i < 10 && refs.some((r) => r.deref() !== undefined); i++) await collect();
  assert.equal(refs.filter((r) => r.deref() !== undefined).length, 0);
});

test("buffers: unreferenced read buffers stay alive and correct until reaped", async () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const count = 48;
  const size = 4096;
  for (let i = 0; i < count; i++) pwrite(FILE.path, i * size, pattern(size, i));
  const refs: WeakRef<Uint8Array>[] = [];
  // The only strong references to the buffers are the queue's; userData is a WeakRef.
  (() => {
    for (let i = 0; i < count; i++) {
      // Mix small (GC-heap in Bun) and large buffers, own and sliced views.
      const buf = i % 3 === 0
        ? new Uint8Array(size)
        : i % 3 === 1
        ? new Uint8Array(new ArrayBuffer(size * 2), size, size)
        : new Uint8Array(size + 64).subarray(32, 32 + size);
      const ref = new WeakRef(buf);
      refs.push(ref);
      q.read(i * size, buf, { i, ref });
    }
  })();
  // Submit without reaping, then let the collector loose while the kernel owns the buffers.
  assert.equal(q.doIo([], 0, 0), 0);
  assert.ok(await collect(), "no garbage collection observed");
  churn(32);
  fullGc();
  const got: Completion[] = [];
  const out: Completion[] = [];
  while (got.length < count) {
    const n = q.doIo(out, 1);
    for (let k = 0; k < n; k++) got.push({ ...out[k] });
  }
  for (const c of got) {
    const { i, ref } = c.userData as { i: number; ref: WeakRef<Uint8Array> };
    assert.equal(c.ret, 0);
    const buf = ref.deref();
    assert.ok(buf, `buffer ${i} was collected while in flight`);
    assert.deepEqual(buf, pattern(size, i), `buffer ${i} content`);
  }
});

test("buffers: views held only by userData read correct data after GC", async () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const count = 64;
  const size = 16;
  pwrite(FILE.path, 0, pattern(count * size, 5));
  (() => {
    for (let i = 0; i < count; i++) {
      const buf = new Uint8Array(size); // small: a GC-heap typed array in Bun
      q.read(i * size, buf, { i, view: buf.subarray(0) });
    }
  })();
  churn(16);
  fullGc();
  q.doIo([], 0, 0); // submit
  await collect();
  churn(16);
  fullGc();
  const got = reap(q, count);
  const want = pattern(count * size, 5);
  for (const c of got) {
    const { i, view } = c.userData as { i: number; view: Uint8Array };
    assert.equal(c.ret, 0);
    assert.deepEqual(view, want.subarray(i * size, (i + 1) * size), `view ${i}`);
  }
});

test("buffers: unreferenced write buffers stay alive until reaped", async () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const count = 32;
  const size = 512;
  (() => {
    for (let i = 0; i < count; i++) q.write(0x100000 + i * size, pattern(size, i + 100), i);
    q.writev(0x100000 + count * size, [pattern(size / 2, 1), pattern(size / 2, 2)], "wv");
  })();
  churn(16);
  fullGc();
  await collect();
  const got = reap(q, count + 1);
  for (const c of got) assert.equal(c.ret, 0);
  for (let i = 0; i < count; i++) {
    assert.deepEqual(pread(FILE.path, 0x100000 + i * size, size), pattern(size, i + 100), `write ${i}`);
  }
  const tail = pread(FILE.path, 0x100000 + count * size, size);
  assert.deepEqual(tail.subarray(0, size / 2), pattern(size / 2, 1));
  assert.deepEqual(tail.subarray(size / 2), pattern(size / 2, 2));
});

test("buffers: requests waiting in the backlog keep their buffers alive", async () => {
  const { connectTo } = await import("./_helpers.ts");
  const b = connectTo(FILE);
  b.setInt("num-entries", 4);
  b.start();
  const q = b.getQueue(0)!;
  const count = 100; // far more than the ring and its slot table hold
  const size = 16;
  pwrite(FILE.path, 0, pattern(count * size, 9));
  (() => {
    for (let i = 0; i < count; i++) {
      const buf = new Uint8Array(size);
      q.read(i * size, buf, { i, ref: new WeakRef(buf) });
    }
  })();
  await collect();
  churn(16);
  fullGc();
  const got = reap(q, count);
  const want = pattern(count * size, 9);
  assert.deepEqual(got.map((c) => (c.userData as { i: number }).i), [...Array(count).keys()]);
  for (const c of got) {
    const { i, ref } = c.userData as { i: number; ref: WeakRef<Uint8Array> };
    assert.equal(c.ret, 0);
    const buf = ref.deref();
    assert.ok(buf, `buffer ${i} collected while waiting`);
    assert.deepEqual(buf, want.subarray(i * size, (i + 1) * size));
  }
  b.destroy();
});

// --- small typed arrays (Bun moves GC-heap typed arrays when .buffer is first touched) ---

test("buffers: fresh 16-byte typed arrays read and write correct data", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const want = pattern(4096, 42);
  pwrite(FILE.path, 0x8000, want);
  for (let round = 0; round < 200; round++) {
    const off = (round * 16) % 4096;
    const buf = new Uint8Array(16); // never touched through .buffer before the read
    q.read(0x8000 + off, buf, round);
    const [c] = reap(q, 1);
    assert.equal(c.ret, 0);
    assert.equal(c.userData, round);
    assert.deepEqual(buf, want.subarray(off, off + 16), `round ${round}`);
    assert.equal(buf.buffer.byteLength, 16);
  }
  for (let round = 0; round < 50; round++) {
    const data = new Uint8Array(16).fill(round + 1);
    q.write(0x9000 + round * 16, data, round);
    assert.equal(reap(q, 1)[0].ret, 0);
  }
  const back = pread(FILE.path, 0x9000, 50 * 16);
  for (let round = 0; round < 50; round++) {
    assert.ok(back.subarray(round * 16, round * 16 + 16).every((x) => x === round + 1), `write ${round}`);
  }
});

test("buffers: small typed arrays in iovecs and after their .buffer was read", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  const want = pattern(64, 11);
  pwrite(FILE.path, 0xa000, want);
  for (let round = 0; round < 50; round++) {
    const parts = [new Uint8Array(16), new Uint8Array(8), new Uint8Array(40)];
    if (round % 2) void parts[1].buffer; // some already moved out of the GC heap
    q.readv(0xa000, parts, round);
    assert.equal(reap(q, 1)[0].ret, 0);
    assert.deepEqual(parts[0], want.subarray(0, 16));
    assert.deepEqual(parts[1], want.subarray(16, 24));
    assert.deepEqual(parts[2], want.subarray(24, 64));
  }
});

test("buffers: empty buffers complete without touching memory", () => {
  using b = startOn(FILE);
  const q = b.getQueue(0)!;
  q.read(0, new Uint8Array(0), "r0");
  q.write(0, new Uint8Array(new ArrayBuffer(0)), "w0");
  q.readv(0, [], "rv0");
  q.writev(0, [new Uint8Array(0)], "wv0");
  const got = reap(q, 4);
  assert.deepEqual(got.map((c) => c.userData).sort(), ["r0", "rv0", "w0", "wv0"]);
  for (const c of got) assert.equal(c.ret, 0, `${String(c.userData)}: ${c.ret} ${c.errorMsg}`);
});

test("buffers: cleanup scratch targets", () => cleanupAll());
