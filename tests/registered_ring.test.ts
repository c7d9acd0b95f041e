// Registered ring fds (IORING_REGISTER_RING_FDS, Linux 5.18): every ring registers itself in its
// thread's table, which has 16 slots, so io_uring_enter skips the file lookup. Rings past the
// 16th fall back to the plain fd, and closing a ring must free its slot (a registration keeps
// the ring, and through its fixed file the device, alive until the thread exits).
import { test } from "node:test";
import assert from "./_assert.ts";
import { release } from "node:os";
import { Blkio, type Completion } from "../mod.ts";
import { loadError, native } from "../ffi/load.ts";
import type { Native } from "../ffi/types.ts";
import { Ring } from "../src/uring/ring.ts";
import { LIBURING_SYMBOLS, type SymbolDef } from "../ffi/symbols.ts";
import { cleanupAll, pwrite, skipIf, stamped, targets } from "./_helpers.ts";

const N = ((): Native => {
  assert.ok(native, String(loadError));
  return native;
})();

/** The kernel's IO_RINGFD_REG_MAX: registered ring fds per thread. */
const SLOTS_PER_THREAD = 16;

/** Why registration cannot be expected here, or null (Linux 5.18 and later). */
function unsupportedReason(): string | null {
  const [major, minor] = release().split(".").map((s) => parseInt(s, 10));
  return major > 5 || (major === 5 && minor >= 18)
    ? null
    : `Linux ${release()} has no registered ring fds (5.18+)`;
}

test(
  ...skipIf(
    "registered ring: closed rings free their slot, so the 40th ring of a thread registers too",
    unsupportedReason(),
  ),
  () => {
    for (let i = 0; i < 40; i++) {
      const ring = new Ring(N, 8, 0);
      try {
        assert.equal(ring.registeredRing, true, `ring ${i} was not registered: an earlier one kept its slot`);
      } finally {
        ring.close();
      }
    }
  },
);

test(
  ...skipIf(
    "registered ring: past the thread's 16 slots rings use the plain fd, and I/O works on all",
    unsupportedReason(),
  ),
  () => {
    const rings: Ring[] = [];
    try {
      for (let i = 0; i < SLOTS_PER_THREAD + 4; i++) rings.push(new Ring(N, 8, 0));
      const registered = rings.filter((r) => r.registeredRing).length;
      assert.ok(registered >= 1 && registered <= SLOTS_PER_THREAD, `${registered} rings registered`);
      assert.ok(rings.some((r) => !r.registeredRing), "every ring registered: no fallback was exercised");

      // The same through the public API: 20 queues of one instance (the rings above still hold
      // their slots), each reading its own stamped block.
      const [file] = targets(64 * 4096, false);
      const data = stamped(64, 4096);
      pwrite(file.path, 0, data);
      const nq = SLOTS_PER_THREAD + 4;
      using b = Blkio.create("io_uring");
      b.setStr("path", file.path);
      b.connect();
      b.setInt("num-queues", nq);
      b.start();
      const out: Completion[] = [];
      for (let i = 0; i < nq; i++) {
        const q = b.getQueue(i)!;
        const buf = new Uint8Array(4096);
        q.read(i * 4096, buf, i);
        assert.equal(q.doIo(out, 1, 1), 1);
        assert.equal(out[0].ret, 0, `queue ${i}: ${out[0].errorMsg}`);
        assert.deepEqual(buf, data.subarray(i * 4096, (i + 1) * 4096), `queue ${i} read the wrong data`);
      }
    } finally {
      for (const r of rings) r.close();
    }
  },
);

test(
  ...skipIf(
    "registered ring: a ring made while the 16 slots were taken registers once one is free",
    unsupportedReason(),
  ),
  () => {
    // A DEFER_TASKRUN queue's ring is remade (COOP_TASKRUN) when its completion fd is taken; the
    // new ring is made while the old one still holds its slot, and registers after closing it.
    const rings: Ring[] = [];
    try {
      while (rings.length < SLOTS_PER_THREAD * 2 && (rings.length === 0 || rings.at(-1)!.registeredRing)) {
        rings.push(new Ring(N, 8, 0));
      }
      const late = rings.at(-1)!;
      assert.equal(late.registeredRing, false, "the thread's slots never ran out");
      assert.equal(late.registerRingFd(), false, "registered with every slot taken");
      rings.find((r) => r.registeredRing)!.close();
      assert.equal(late.registerRingFd(), true);
      assert.equal(late.registeredRing, true);
      // Entered through the registered index now: a no-op enter succeeds.
      assert.equal(late.enter(0, 0x1, -1), 0);
    } finally {
      for (const r of rings) r.close();
    }
  },
);

test("registered ring: io_uring_enter is never run off the JS thread, where the index means another ring", () => {
  for (const name of ["io_uring_enter", "io_uring_enter2"] as const) {
    const def: SymbolDef = LIBURING_SYMBOLS[name];
    assert.notEqual(def.nonblocking, true, `${name} must not be nonblocking`);
  }
});

test("registered ring: cleanup scratch targets", () => cleanupAll());
