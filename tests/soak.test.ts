// The short version of scripts/soak.ts (the full run is 2 million requests, reported in
// RELIABILITY.md, "Soak figures"): a few seconds of mixed reads and writes of 4-128 KiB at queue
// depths 1..128 on a file and, as root, an O_DIRECT loop device, every block stamped and
// verified; zero mismatches, zero failed requests, heap and open fds flat. Also checks that the
// verifier itself catches the faults it is there to catch.
import { test } from "node:test";
import assert from "./_assert.ts";
import { check, soak, stamp } from "../scripts/soak.ts";

test("soak: the block verifier catches misplaced, stale and torn blocks", () => {
  const w = new Uint32Array(1024);
  stamp(w, 0, 77, 5);
  assert.equal(check(w, 0, 77, 5), null);
  assert.match(check(w, 0, 78, 5)!, /stamped with offset 315392, expected 319488/);
  assert.match(check(w, 0, 77, 6)!, /generation 5, expected 6 \(stale or lost write\)/);
  const torn = w.slice();
  torn.fill(0xdbdbdbdb, 512); // the second half never arrived
  assert.match(check(torn, 0, 77, 5)!, /checksum .* \(torn or corrupt\)/);
  const flipped = w.slice();
  flipped[700] ^= 1 << 9;
  assert.match(check(flipped, 0, 77, 5)!, /torn or corrupt/);
  // A stamp of another generation is self-consistent but not what the model expects.
  const other = new Uint32Array(1024);
  stamp(other, 0, 77, 4);
  assert.equal(check(other, 0, 77, 4), null);
  assert.notEqual(check(other, 0, 77, 5), null);
});

test("soak: seconds of mixed I/O at depths 1..128, zero mismatches, heap and fds flat", () => {
  const r = soak({ requests: 40_000, seconds: 4, size: 16 * 1024 * 1024, seed: Date.now() & 0xffff });
  const summary = JSON.stringify({ ...r, targets: r.targets.map((t) => ({ ...t })) });
  assert.equal(r.mismatches, 0, summary);
  assert.equal(r.failures, 0, summary);
  assert.ok(r.requests >= 2000, `only ${r.requests} requests in the time allowed: ${summary}`);
  for (const t of r.targets) {
    assert.ok(t.reads > 0 && t.writes > 0, `${t.target}: reads and writes`);
    assert.ok(t.blocksVerified > 0, `${t.target}: blocks verified`);
  }
  assert.equal(r.fdsEnd, r.fdsStart, `open fds ${r.fdsStart} -> ${r.fdsEnd}`);
  // Flat heap: after forced collections the run leaves at most a few MiB behind (JIT code,
  // caches), nothing proportional to the requests done.
  const limit = r.gcForced ? 4 : 32;
  assert.ok(
    r.heapEnd - r.heapStart < limit * 1024 * 1024,
    `heap ${r.heapStart} -> ${r.heapEnd} (gc forced: ${r.gcForced})`,
  );
});
