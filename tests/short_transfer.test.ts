// A short transfer that ends inside an iovec must be resumed from that byte of that iovec. The
// kernel returns one only at the end of a file (where the rest reads as zeroes, so a resume
// from the wrong address goes unseen) or at a limit (where the rest fails): here the test cuts
// the length of a full vectored read before the kernel sees it (withShortTransfers), so the
// kernel really reads only that much and the library's resume really reads the rest. A resume
// that ignored the offset inside the iovec (it wrote the rest to the iovec's start) passed every
// other test. The same way, random cuts and io_uring_enter failing; and, by rewriting CQE results
// as the kernel posts them, what the kernel cannot be made to give: a result larger than asked,
// EAGAIN / EINTR / ECANCELED in a CQE, an O_DIRECT transfer cut off a block boundary. A cut made by
// rewriting a result left the rest transferred already: a resume that never went kept its data.
import { test } from "node:test";
import assert from "./_assert.ts";
import { Blkio, type Completion } from "../mod.ts";
import { withHookedEnters, withRewrittenResults, withShortTransfers } from "./_rewrite_results.ts";
import { native } from "../ffi/load.ts";
import { cleanupAll, pread, pwrite, scratchFile, startOn } from "./_helpers.ts";

const PAGE = 4096;

/** A cut for withShortTransfers: transfers of `from` bytes become `to`, `times` times. */
function cutting(from: number, to: number, times: number): (len: number) => number | undefined {
  return (len) => (len === from && times > 0 && times-- > 0 ? to : undefined);
}

/** Bytes that differ at every offset (so data from the wrong place shows). */
function ramp(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + (i >> 8) * 13 + seed) & 0xff;
  return b;
}

// Vectored requests (iovec array rebuilt from the cut), single buffers, and buffers in a mapped
// memory region (READ_FIXED / WRITE_FIXED with an address inside the registered buffer).
const CASES = [
  { op: "readv", buffer: "plain" },
  { op: "writev", buffer: "plain" },
  { op: "read", buffer: "plain" },
  { op: "write", buffer: "plain" },
  { op: "read", buffer: "mapped region" },
  { op: "write", buffer: "mapped region" },
] as const;

for (const { op, buffer } of CASES) {
  test(`short transfer: a ${op} (${buffer} buffer) cut 1000 bytes into its second page resumes from there`, () => {
    const path = scratchFile(64 * 1024);
    const file = ramp(3 * PAGE, 1);
    pwrite(path, 0, file);
    const cut = PAGE + 1000;
    const src = ramp(3 * PAGE, 99);
    const writes = op === "write" || op === "writev";
    let got: Uint8Array = new Uint8Array(0);
    const out: Completion[] = [];
    // The instance starts inside: its ring is set up while the symbols are patched.
    const cuts = withShortTransfers(cutting(3 * PAGE, cut, 1), () => {
      using b = startOn({ path, direct: false });
      const q = b.getQueue(0)!;
      let mem: Uint8Array = new Uint8Array(3 * PAGE);
      if (buffer === "mapped region") {
        const r = b.allocMemRegion(3 * PAGE);
        b.mapMemRegion(r);
        mem = r.bytes;
      }
      if (writes) mem.set(src);
      const iov = [0, 1, 2].map((i) => mem.subarray(i * PAGE, (i + 1) * PAGE));
      if (op === "readv") q.readv(0, iov, "v");
      else if (op === "writev") q.writev(0, iov, "v");
      else if (op === "read") q.read(0, mem, "v");
      else q.write(0, mem, "v");
      assert.equal(q.doIo(out, 1, 1), 1);
      got = mem.slice();
    });
    assert.equal(cuts, 1, "the request was not cut short");
    assert.equal(out[0].ret, 0, `${out[0].ret} ${out[0].errorMsg}`);
    // A read resumed by reading the rest of the file again into the rest of the buffer; a write
    // reached the file whole at once and the resume wrote the rest again, from the right bytes.
    if (writes) assert.deepEqual(pread(path, 0, 3 * PAGE), src);
    else assert.deepEqual(got, file);
  });
}

// Each part of a request cut short more than once must start where the last one ended. A
// resume that counted only the latest part (done = res instead of done += res) still read the
// right bytes here (the overlap was read again), but a source that caps every transfer would
// make such a request go round for ever; the number of cuts the remainder took tells.
test("short transfer: a read cut short twice resumes each time from where the last part ended", () => {
  const path = scratchFile(64 * 1024);
  const file = ramp(4 * PAGE, 3);
  pwrite(path, 0, file);
  const out: Completion[] = [];
  const buf = new Uint8Array(4 * PAGE);
  let second = 0;
  // The whole read is cut to one page; the 3-page remainder to one page as often as it comes
  // back whole (up to 5 times), so only a resume from the wrong place meets it again.
  const first = withShortTransfers(cutting(4 * PAGE, PAGE, 1), () => {
    second = withShortTransfers(cutting(3 * PAGE, PAGE, 5), () => {
      using b = startOn({ path, direct: false });
      const q = b.getQueue(0)!;
      q.read(0, buf, "r");
      assert.equal(q.doIo(out, 1, 1), 1);
    });
  });
  assert.equal(first, 1, "the read was not cut short");
  assert.equal(out[0].ret, 0, `${out[0].ret} ${out[0].errorMsg}`);
  assert.deepEqual(buf, file);
  assert.equal(
    second,
    1,
    `the remainder was cut ${second} times: a resume did not start after the last part`,
  );
});

// A short read past the end of a file zero-fills the rest of its buffer in the middle of a reap,
// before the CQ head is stored. With the buffer detached in flight (a misuse: transfer()), the
// fill threw there, every later doIo threw again on the same CQE, and the completions reaped
// before it in that batch were lost and their slots released twice (review, helper-73).
test("short transfer: a read past the end whose buffer was detached in flight loses and repeats nothing", () => {
  const path = scratchFile(64 * 1024);
  using b = startOn({ path, direct: false });
  const q = b.getQueue(0)!;
  const out: Completion[] = [];
  const buf = new Uint8Array(PAGE);
  q.read(0, new Uint8Array(PAGE), "before");
  q.read(1 << 20, buf, "past the end");
  q.read(PAGE, new Uint8Array(PAGE), "after");
  (buf.buffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer();
  const seen: unknown[] = [];
  const errors: string[] = [];
  for (let i = 0; i < 5 && seen.length < 3; i++) {
    try {
      const n = q.doIo(out, 0, 8);
      for (let k = 0; k < n; k++) seen.push(out[k].userData);
    } catch (e) {
      errors.push(String(e));
    }
  }
  assert.deepEqual(errors, []);
  assert.deepEqual(seen, ["before", "past the end", "after"]);
  assert.equal(q.doIo(out, 0, 8), 0, "a completion came back twice");
});

/** xorshift32: the same cuts on every run. */
function cutter(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

// Most results cut short at random points, many requests at once on a small ring (so remainders
// wait for room in the SQ), uneven iovecs with empty ones among them (so cuts land inside and at
// the edges of iovecs, again and again): every request completes once, and the data is exact.
for (const op of ["readv", "writev", "read", "write"] as const) {
  test(`short transfer: ${op}s cut short at random points, many times and many at once, keep their data`, () => {
    const SIZE = 1024 * 1024, REQ = 16, LEN = 48 * 1024;
    const path = scratchFile(SIZE);
    const file = ramp(SIZE, 5);
    pwrite(path, 0, file);
    const rand = cutter(op.length * 7919);
    const writes = op === "write" || op === "writev";
    let cuts = 0;
    const srcs = Array.from({ length: REQ }, (_, i) => ramp(LEN, 100 + i));
    const bufs = Array.from({ length: REQ }, () => new Uint8Array(LEN));
    const out: Completion[] = [];
    cuts = withShortTransfers((len) => {
      if (len <= 1 || rand() >= 0.7) return undefined;
      return 1 + Math.floor(rand() * (len - 1));
    }, () => {
      using b = startOn({ path, direct: false }, { numEntries: 4 });
      const q = b.getQueue(0)!;
      for (let i = 0; i < REQ; i++) {
        const buf = bufs[i];
        if (writes) buf.set(srcs[i]);
        const iov: Uint8Array[] = [];
        for (let off = 0, k = 0; off < LEN; k++) {
          const l = k % 5 === 3 ? 0 : Math.min(LEN - off, 1 + ((k * 977) % 3001));
          iov.push(buf.subarray(off, off + l));
          off += l;
        }
        const start = i * 64 * 1024;
        if (op === "readv") q.readv(start, iov, i);
        else if (op === "writev") q.writev(start, iov, i);
        else if (op === "read") q.read(start, buf, i);
        else q.write(start, buf, i);
      }
      const seen = new Set<unknown>();
      while (seen.size < REQ) {
        const n = q.doIo(out, 1, 3);
        for (let k = 0; k < n; k++) {
          assert.equal(out[k].ret, 0, `${out[k].ret} ${out[k].errorMsg}`);
          assert.ok(!seen.has(out[k].userData), `request ${out[k].userData} completed twice`);
          seen.add(out[k].userData);
        }
      }
      assert.equal(q.doIo(out, 0, 8), 0);
    });
    assert.ok(cuts > REQ, `only ${cuts} cuts`);
    for (let i = 0; i < REQ; i++) {
      const start = i * 64 * 1024;
      if (writes) assert.deepEqual(pread(path, start, LEN), srcs[i], `request ${i}`);
      else assert.deepEqual(bufs[i], file.subarray(start, start + LEN), `request ${i}`);
    }
  });
}

// io_uring_enter itself failing once (memory pressure: EAGAIN, EBUSY, ENOMEM) while requests go
// round twice: doIo throws that errno once, nothing was lost, and the next calls finish every
// request once with its data. EINTR is waited through.
for (const [errno, name] of [[11, "EAGAIN"], [16, "EBUSY"], [12, "ENOMEM"], [4, "EINTR"]] as const) {
  test(`short transfer: io_uring_enter failing ${name} once loses and repeats nothing`, () => {
    const path = scratchFile(256 * 1024);
    const file = ramp(256 * 1024, 9);
    pwrite(path, 0, file);
    const out: Completion[] = [];
    const bufs = Array.from({ length: 12 }, () => new Uint8Array(2 * PAGE));
    const done: unknown[] = [];
    const thrown: string[] = [];
    let fails = 0;
    let cuts = 0;
    withHookedEnters({ fail: (toSubmit) => (toSubmit > 0 && fails++ === 0 ? -errno : undefined) }, () => {
      // Every request is cut in two.
      cuts = withShortTransfers((len) => (len === 2 * PAGE ? PAGE : undefined), () => {
        using b = startOn({ path, direct: false }, { numEntries: 4 });
        const q = b.getQueue(0)!;
        for (let i = 0; i < 12; i++) q.read(i * 2 * PAGE, bufs[i], i);
        for (let round = 0; done.length < 12 && round < 100; round++) {
          try {
            const n = q.doIo(out, 1, 4);
            for (let k = 0; k < n; k++) {
              assert.equal(out[k].ret, 0, `${out[k].ret} ${out[k].errorMsg}`);
              done.push(out[k].userData);
            }
          } catch (e) {
            thrown.push((e as { code?: string }).code ?? String(e));
          }
        }
      });
    });
    assert.equal(cuts, 12, "requests cut in two");
    assert.deepEqual(thrown, errno === 4 ? [] : [name]);
    assert.deepEqual([...done].sort((a, b) => (a as number) - (b as number)), [...Array(12).keys()]);
    for (let i = 0; i < 12; i++) assert.deepEqual(bufs[i], file.subarray(i * 2 * PAGE, (i + 1) * 2 * PAGE));
  });
}

// A result larger than the request fails it with EIO, once, and frees its slot; a CQE with
// EAGAIN, EINTR or ECANCELED completes its request with that, once.
test("short transfer: a result larger than asked fails EIO once and frees its slot", () => {
  const path = scratchFile(64 * 1024);
  const out: Completion[] = [];
  withHookedEnters({ res: (res) => (res === PAGE ? 2 * PAGE : res) }, () => {
    using b = startOn({ path, direct: false }, { numEntries: 1 });
    const q = b.getQueue(0)!;
    for (let round = 0; round < 5; round++) {
      q.read(0, new Uint8Array(PAGE), "a");
      q.read(0, new Uint8Array(PAGE), "b");
      assert.equal(q.doIo(out, 2, 2), 2);
      assert.deepEqual(out.map((c) => c.ret), [-5, -5]);
      assert.equal(q.doIo(out, 0, 2), 0);
    }
  });
});

for (const errno of [11, 4, 125] as const) {
  test(`short transfer: a read whose CQE says -${errno} completes once with it`, () => {
    const path = scratchFile(64 * 1024);
    const out: Completion[] = [];
    withHookedEnters({ res: (res) => (res === 3 * PAGE ? -errno : res) }, () => {
      using b = startOn({ path, direct: false });
      const q = b.getQueue(0)!;
      q.read(0, new Uint8Array(3 * PAGE), "x");
      q.read(0, new Uint8Array(PAGE), "y");
      assert.equal(q.doIo(out, 2, 4), 2);
      assert.deepEqual(out.slice(0, 2).map((c) => [c.userData, c.ret]).sort(), [["x", -errno], ["y", 0]]);
      assert.equal(q.doIo(out, 0, 4), 0);
    });
  });
}

// An O_DIRECT write cut short off a block boundary (a FUSE or NFS server may answer so) goes again
// for the rest, which the kernel then refuses EINVAL: the rest is misaligned, though the request
// was not. Its errorMsg was null, as the request's own start, length and address are aligned.
for (const op of ["write", "writev"] as const) {
  test(`short transfer: an O_DIRECT ${op} cut short off a block boundary says why its rest failed`, () => {
    const path = scratchFile(64 * 1024);
    const out: Completion[] = [];
    const cuts = withRewrittenResults(3 * PAGE, PAGE + 1000, 1, () => {
      using b = startOn({ path, direct: true });
      const q = b.getQueue(0)!;
      const r = b.allocMemRegion(3 * PAGE);
      r.bytes.set(ramp(3 * PAGE, 5));
      if (op === "write") q.write(0, r.bytes, "w");
      else q.writev(0, [0, 1, 2].map((i) => r.bytes.subarray(i * PAGE, (i + 1) * PAGE)), "w");
      assert.equal(q.doIo(out, 1, 1), 1);
    });
    assert.equal(cuts, 1, "the request was not cut short");
    assert.equal(out[0].ret, -22, `${out[0].ret} ${out[0].errorMsg}`);
    assert.match(
      String(out[0].errorMsg),
      /^The device transferred 5096 of 12288 bytes; the rest, 7192 bytes at 5096, is not a multiple of request-alignment \(\d+\), as O_DIRECT needs/,
    );
  });
}

test("short_transfer: cleanup scratch files", () => cleanupAll());

// The rewriting helper itself: it reads the CQ of every ring set up while it is active, and
// Blkio.create sets up a probe ring and tears it down at once. Reading that unmapped ring after
// each io_uring_enter crashed a whole Deno test run once in five CI runs (a segfault in a
// runtime thread, found by a helper): whether it crashes depends on whether something was mapped
// over the freed pages since. Here a page mapped while the probe ring exists (as another thread
// might) and a ring too large for the freed hole keep it unmapped, so a helper that still read
// it would crash here, every time.
test("short transfer: the rewriting helper never reads a ring that was torn down", () => {
  const path = scratchFile(64 * 1024);
  // deno-lint-ignore no-explicit-any
  const uring = native!.uring as unknown as Record<string, (...a: any[]) => number>;
  const init = uring.io_uring_queue_init_params;
  let probe = true;
  uring.io_uring_queue_init_params = (...a) => {
    const r = init(...a);
    if (probe) {
      probe = false;
      native!.libc.mmap(0, BigInt(PAGE), 3, /* PROT_READ|WRITE */ 0x22, /* MAP_PRIVATE|ANONYMOUS */ -1, 0n);
    }
    return r;
  };
  const out: Completion[] = [];
  try {
    withRewrittenResults(PAGE, 3000, 1, () => {
      using b = Blkio.create("io_uring");
      b.setStr("path", path);
      b.connect();
      b.setInt("num-entries", 4096);
      b.start();
      const q = b.getQueue(0)!;
      q.read(0, new Uint8Array(PAGE), "r");
      assert.equal(q.doIo(out, 1, 1), 1);
    });
  } finally {
    uring.io_uring_queue_init_params = init;
  }
  assert.equal(out[0].ret, 0, String(out[0].errorMsg));
});
