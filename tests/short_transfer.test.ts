// A short transfer that ends inside an iovec must be resumed from that byte of that iovec. The
// kernel returns one only at the end of a file (where the rest reads as zeroes, so a resume
// from the wrong address goes unseen) or at a limit (where the rest fails): here the test turns
// a full vectored read into a short one by rewriting its CQE's result as the kernel returns it,
// so the library's resume really reads the rest. A resume that ignored the offset inside the
// iovec (it wrote the rest to the iovec's start) passed every other test.
import { test } from "node:test";
import assert from "./_assert.ts";
import { Blkio, type Completion } from "../mod.ts";
import { withRewrittenResults } from "./_rewrite_results.ts";
import { native } from "../ffi/load.ts";
import { cleanupAll, pread, pwrite, scratchFile } from "./_helpers.ts";

const PAGE = 4096;

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
    const cuts = withRewrittenResults(3 * PAGE, cut, 1, () => {
      using b = Blkio.create("io_uring");
      b.setStr("path", path);
      b.connect();
      b.start();
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
  const first = withRewrittenResults(4 * PAGE, PAGE, 1, () => {
    second = withRewrittenResults(3 * PAGE, PAGE, 5, () => {
      using b = Blkio.create("io_uring");
      b.setStr("path", path);
      b.connect();
      b.start();
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
